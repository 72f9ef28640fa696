#!/usr/bin/env python3
"""A fake model provider speaking OpenAI's and Anthropic's real wire formats (JSON answers, SSE
streams with their usage blocks, error bodies, 429 with Retry-After), for the gateway's tests. It
records every request it got (path, headers, body) and serves them at GET /calls.

    python3 e2e/servers/fake_provider.py PORT OPENAI_KEY ANTHROPIC_KEY

OpenAI:    POST /v1/chat/completions, POST /v1/responses      (Authorization: Bearer OPENAI_KEY)
Anthropic: POST /v1/messages                                  (x-api-key: ANTHROPIC_KEY)

Every answer says "Hello from <model>". Usage: input tokens = the request body's length // 10,
output tokens = 5 (cached input tokens 0), but "cheap" uses every output token the request allowed
(`max_tokens`), so a call costs exactly what the gateway reserved for it. The model "rate-limited" answers 429; "broken" answers
500; "flood" streams 40 MiB; "absurd" reports 10^19 tokens of each kind (past a 64-bit signed integer's sums); "slow" streams its first event, then waits a second before the rest. A stream of any model whose
last message is "hold:<tag>" waits after its first events until `POST /release/<tag>` (at most a
minute), and a whole chat completion before its answer, so a test decides when the call ends
rather than racing a clock. The model "reviewer"
plays an AI first reader: it answers a JSON verdict on the held call in its last message, deny
(95 %) for a tool named like "drop", approve (90 %) for one named like "read", else approve
unsure (40 %).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS: list[dict] = []
LOCK = threading.Lock()
HELD: dict[str, threading.Event] = {}


def gate(tag: str) -> threading.Event:
    with LOCK:
        return HELD.setdefault(tag, threading.Event())
OUTPUT_TOKENS = 5


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()

    def event(self, data: dict | str, name: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        chunk = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
        self.wfile.write(chunk.encode())
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                self.reply(200, {"calls": CALLS})
        else:
            self.reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if self.path.startswith("/release/"):
            gate(self.path.removeprefix("/release/")).set()
            return self.reply(200, {"released": True})
        with LOCK:
            CALLS.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        model = body.get("model", "")
        usage_in = max(1, len(raw) // 10)
        if self.path in ("/v1/chat/completions", "/v1/responses"):
            if self.headers.get("authorization") != f"Bearer {OPENAI_KEY}":
                return self.reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
            if model == "rate-limited":
                return self.reply(429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}, {"retry-after": "0"})
            if model == "broken":
                return self.reply(500, {"error": {"message": "The server had an error", "type": "server_error"}})
            if self.path == "/v1/chat/completions":
                return self.chat(body, model, usage_in)
            return self.openai_responses(body, model, usage_in)
        if self.path == "/v1/messages":
            if self.headers.get("x-api-key") != ANTHROPIC_KEY:
                return self.reply(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
            if model == "rate-limited":
                return self.reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "0"})
            return self.messages(body, model, usage_in)
        self.reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    @staticmethod
    def hold(body: dict) -> bool:
        """Waits for `POST /release/<tag>` when the last message is `hold:<tag>`; whether it was."""
        last = str((body.get("messages") or [{}])[-1].get("content", ""))
        if last.startswith("hold:"):
            gate(last.removeprefix("hold:")).wait(60)
            return True
        return False

    @classmethod
    def pause(cls, body: dict, model: str) -> None:
        if not cls.hold(body) and model == "slow":
            time.sleep(1)

    @staticmethod
    def review(body: dict) -> str:
        held = str((body.get("messages") or [{}])[-1].get("content", ""))
        if '"tool":"drop' in held:
            verdict = {"decision": "deny", "reason": "it drops data", "confidence": 0.95}
        elif '"tool":"read' in held:
            verdict = {"decision": "approve", "reason": "it only reads", "confidence": 0.9}
        else:
            verdict = {"decision": "approve", "reason": "probably fine", "confidence": 0.4}
        return "```json\n" + json.dumps(verdict) + "\n```"

    def chat(self, body: dict, model: str, usage_in: int) -> None:
        text = self.review(body) if model == "reviewer" else f"Hello from {model}"
        out = int(body.get("max_completion_tokens") or body.get("max_tokens") or OUTPUT_TOKENS) if model == "cheap" else OUTPUT_TOKENS
        usage = {"prompt_tokens": usage_in, "completion_tokens": out, "total_tokens": usage_in + out,
                 "prompt_tokens_details": {"cached_tokens": 0}}
        if model == "absurd":
            usage = {"prompt_tokens": 10**19, "completion_tokens": 10**19, "total_tokens": 10**19, "prompt_tokens_details": {"cached_tokens": 0}}
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self.hold(body)
            return self.reply(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        self.start_stream()
        chunk = {**base, "object": "chat.completion.chunk"}
        self.event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        self.pause(body, model)
        if model == "flood":
            # More than any socket buffers hold: a client that stops reading stalls the stream.
            piece = "x" * 1024
            try:
                for _ in range(40_000):
                    self.event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            except (BrokenPipeError, ConnectionResetError):
                return
        for piece in (text[:5], text[5:]):
            self.event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        self.event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self.event({**chunk, "choices": [], "usage": usage})
        self.event("[DONE]")
        self.close_connection = True

    def openai_responses(self, body: dict, model: str, usage_in: int) -> None:
        text = f"Hello from {model}"
        usage = {"input_tokens": usage_in, "output_tokens": OUTPUT_TOKENS, "total_tokens": usage_in + OUTPUT_TOKENS,
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        response = {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "model": model, "status": "completed",
                    "output": [message], "usage": usage, "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
        if not body.get("stream"):
            return self.reply(200, response)
        self.start_stream()
        self.event({"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress", "output": [], "usage": None}},
                   "response.created")
        self.event({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_fake", "output_index": 0, "content_index": 0,
                    "delta": text, "logprobs": []}, "response.output_text.delta")
        self.event({"type": "response.completed", "sequence_number": 2, "response": response}, "response.completed")
        self.close_connection = True

    def messages(self, body: dict, model: str, usage_in: int) -> None:
        text = f"Hello from {model}"
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn", "stop_sequence": None,
                   "content": [{"type": "text", "text": text}],
                   "usage": {"input_tokens": usage_in, "output_tokens": OUTPUT_TOKENS, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}
        if not body.get("stream"):
            return self.reply(200, message)
        self.start_stream()
        start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": usage_in, "output_tokens": 1}}
        self.event({"type": "message_start", "message": start}, "message_start")
        self.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")
        self.pause(body, model)
        self.event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}, "content_block_delta")
        self.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self.event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": OUTPUT_TOKENS}},
                   "message_delta")
        self.event({"type": "message_stop"}, "message_stop")
        self.close_connection = True


if __name__ == "__main__":
    port, OPENAI_KEY, ANTHROPIC_KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("listening", flush=True)
    server.serve_forever()
