"""A fake Slack Web API, webhook receiver and SMTP server for Tollgate's notification tests.

Usage: fake_slack.py <http port> <smtp port> <bot token> <webhook secret> <webhook failures>

HTTP, as Slack's Web API answers (https://api.slack.com/web): every method checks
`Authorization: Bearer <bot token>` and answers 200 with `{"ok": ...}`.
- POST /api/chat.postMessage, /api/chat.update, /api/chat.postEphemeral, /api/views.open
- POST /hook: a webhook receiver; it checks `X-Tollgate-Signature` (t=<unix>,v1=<hex HMAC-SHA256
  of "<t>.<body>">) with the secret and records whether it held. The first <webhook failures>
  deliveries are answered 503.
- GET /calls: every request recorded (path, headers, JSON body, signature check), and every mail.
SMTP (RFC 5321's plain dialogue, enough for a client like lettre): each message recorded as
{"path": "smtp", "from": ..., "to": [...], "data": "..."}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS: list[dict] = []
LOCK = threading.Lock()
HTTP_PORT, SMTP_PORT = int(sys.argv[1]), int(sys.argv[2])
TOKEN, HOOK_SECRET, HOOK_FAILURES = sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
TS = [1700000000]


def record(entry: dict) -> None:
    with LOCK:
        entry["at"] = time.time()
        CALLS.append(entry)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        sys.stderr.write("%s %s\n" % (self.command, self.path))

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/calls":
            with LOCK:
                return self.reply(200, {"calls": CALLS})
        self.reply(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path == "/hook":
            signature = headers.get("x-tollgate-signature", "")
            parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
            expected = hmac.new(HOOK_SECRET, f"{parts.get('t', '')}.".encode() + raw, hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(expected, parts.get("v1", ""))
            with LOCK:
                failing = sum(1 for c in CALLS if c["path"] == "/hook") < HOOK_FAILURES
            record({"path": "/hook", "headers": headers, "body": body, "signature_valid": valid, "answered": 503 if failing else 200})
            return self.reply(503 if failing else 200, {})
        method = self.path.removeprefix("/api/")
        record({"path": self.path, "headers": headers, "body": body})
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return self.reply(200, {"ok": False, "error": "invalid_auth"})
        if method in ("chat.postMessage", "chat.update"):
            with LOCK:
                TS[0] += 1
                ts = body.get("ts") or f"{TS[0]}.000100"
            channel = "C0TOLLGATE" if str(body.get("channel", "")).startswith("#") else body.get("channel")
            return self.reply(200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body.get("text")}})
        if method == "chat.postEphemeral":
            return self.reply(200, {"ok": True, "message_ts": f"{time.time():.6f}"})
        if method == "views.open":
            if not body.get("trigger_id"):
                return self.reply(200, {"ok": False, "error": "invalid_arguments"})
            return self.reply(200, {"ok": True, "view": {"id": "V0REASON"}})
        self.reply(200, {"ok": False, "error": "unknown_method"})


class Mail(socketserver.StreamRequestHandler):
    def say(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self) -> None:
        self.say("220 fake-smtp ready")
        sender, recipients = "", []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode(errors="replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.say("250 fake-smtp")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().strip("<>").split(">")[0], []
                self.say("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>").split(">")[0])
                self.say("250 OK")
            elif verb == "DATA":
                self.say("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    data = self.rfile.readline()
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    lines.append(data[1:] if data.startswith(b"..") else data)
                text = b"".join(lines).decode(errors="replace").replace("\r\n", "\n")
                record({"path": "smtp", "from": sender, "to": recipients, "data": text})
                self.say("250 OK: queued")
            elif verb == "QUIT":
                self.say("221 bye")
                return
            else:
                self.say("250 OK")


def smtp() -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer(("127.0.0.1", SMTP_PORT), Mail).serve_forever()


if __name__ == "__main__":
    threading.Thread(target=smtp, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Handler).serve_forever()
