#!/usr/bin/env python3
"""A hostile MCP server (Streamable HTTP, stateless JSON-RPC over POST) for the e2e tests.

    python3 hostile.py PORT

Its tools misbehave on purpose, each in one way a broken or malicious server could:
    ok         answers at once: {"content": [{"type": "text", "text": "ok"}]}
    slow       sends nothing for 60 s
    dribble    sends its headers and one byte of the body every second, for 60 s
    huge       a JSON answer of 64 MiB
    endless    an SSE stream of small notifications, for 60 s or 256 MiB, never a result
    malformed  an SSE stream of frames that are not JSON, then the end
Every loop is bounded in time and size, so the server stops by itself.
"""

import json
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Built once: building it per call would make this server, not the sidecar, the slow part.
HUGE = b'{"jsonrpc":"2.0","id":null,"result":{"content":[{"type":"text","text":"' + b"x" * (64 << 20) + b'"}]}}'
TOOLS = ["ok", "slow", "dribble", "huge", "endless", "malformed"]
LIMIT_SECONDS = 60


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply_json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send_response(405)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_DELETE(self):
        self.do_GET()

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        msg = json.loads(self.rfile.read(length) or b"{}")
        method, rid = msg.get("method"), msg.get("id")
        if rid is None:
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if method == "initialize":
            return self.reply_json({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": msg.get("params", {}).get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "1"}}})
        if method == "tools/list":
            tools = [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]
            return self.reply_json({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools}})
        if method != "tools/call":
            return self.reply_json({"jsonrpc": "2.0", "id": rid, "result": {}})
        tool = msg.get("params", {}).get("name")
        getattr(self, "tool_" + tool, self.tool_ok)(rid)

    def tool_ok(self, rid):
        self.reply_json({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}})

    def tool_slow(self, rid):
        time.sleep(LIMIT_SECONDS)

    def tool_dribble(self, rid):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "1000000")
        self.end_headers()
        for _ in range(LIMIT_SECONDS):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(1)

    def tool_huge(self, rid):
        body = HUGE
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            for i in range(0, len(body), 1 << 20):
                self.wfile.write(body[i:i + (1 << 20)])
        except OSError:
            pass

    def stream_head(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()

    def tool_endless(self, rid):
        self.stream_head()
        event = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"' + b"y" * 900 + b'"}}\n\n'
        started, sent = time.monotonic(), 0
        try:
            while time.monotonic() - started < LIMIT_SECONDS and sent < (256 << 20):
                self.wfile.write(event * 64)
                sent += len(event) * 64
        except OSError:
            pass
        self.close_connection = True

    def tool_malformed(self, rid):
        self.stream_head()
        try:
            self.wfile.write(b"data: {not json\n\n" * 10)
        except OSError:
            pass
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), Handler) as httpd:
        print(f"hostile MCP server on 127.0.0.1:{port}", flush=True)
        httpd.serve_forever()
