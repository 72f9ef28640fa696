#!/usr/bin/env python3
"""A stateless MCP 2026-07-28 server with the tasks extension (`io.modelcontextprotocol/tasks`),
written on the wire format because the Python SDK does not serve the extension yet.

    python3 tasks.py PORT

POST /mcp: JSON-RPC. A `tools/call` from a client that declared the extension in
`_meta["io.modelcontextprotocol/clientCapabilities"].extensions` is answered with a task
(`resultType: "task"`) that completes after 300 ms; `tasks/get` and `tasks/cancel` serve it, and
check the `Mcp-Name` routing header against the task id as the spec requires. Without the
extension a call answers at once. Tools: `report` and `wipe`, both answering with their
arguments.

GET /calls: every `tools/call` this server received, as a JSON list of
{"name", "arguments", "declared_tasks", "traceparent"}: what the tests check the firewall did or did not
forward.
"""

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXTENSION = "io.modelcontextprotocol/tasks"
TASK_SECONDS = 0.3
CALLS = []
TASKS = {}
LOCK = threading.Lock()


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def declared(params):
    caps = (params.get("_meta") or {}).get("io.modelcontextprotocol/clientCapabilities") or {}
    return EXTENSION in (caps.get("extensions") or {})


def tool_result(name, arguments):
    return {"content": [{"type": "text", "text": f"{name}: {json.dumps(arguments, sort_keys=True)}"}], "isError": False}


def task_view(task):
    view = {k: task[k] for k in ("taskId", "status", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs")}
    if task["status"] == "working" and time.monotonic() >= task["done_at"]:
        task["status"], task["lastUpdatedAt"] = "completed", now()
        view.update(status="completed", lastUpdatedAt=task["lastUpdatedAt"])
    if task["status"] == "completed":
        view["result"] = task["result"]
    return view


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                return self.reply(200, CALLS)
        self.reply(405, {})

    def do_POST(self):
        msg = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if rid is None:
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()
            return

        def ok(result):
            self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": result})

        def error(code, message, status=200):
            self.reply(status, {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})

        if method == "initialize":
            return ok({"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}, "extensions": {EXTENSION: {}}},
                       "serverInfo": {"name": "tasks", "version": "1"}})
        if method == "tools/list":
            tools = [{"name": t, "inputSchema": {"type": "object"}} for t in ("report", "wipe")]
            return ok({"tools": tools, "resultType": "complete"})
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments") or {}
            with LOCK:
                CALLS.append({"name": name, "arguments": arguments, "declared_tasks": declared(params),
                              "traceparent": self.headers.get("traceparent")})
            if not declared(params):
                return ok(dict(tool_result(name, arguments), resultType="complete"))
            task = {"taskId": str(uuid.uuid4()), "status": "working", "createdAt": now(), "lastUpdatedAt": now(), "ttlMs": 60000, "pollIntervalMs": 100,
                    "done_at": time.monotonic() + TASK_SECONDS, "result": tool_result(name, arguments)}
            with LOCK:
                TASKS[task["taskId"]] = task
            return ok(dict(task_view(task), resultType="task"))
        if method in ("tasks/get", "tasks/cancel", "tasks/update"):
            task_id = params.get("taskId")
            if self.headers.get("mcp-name") not in (None, task_id):
                return error(-32020, "Mcp-Name header does not match the task id", 400)
            with LOCK:
                task = TASKS.get(task_id)
                if task is None:
                    return error(-32602, f"unknown task {task_id}")
                if method == "tasks/cancel" and task_view(task)["status"] == "working":
                    task["status"], task["lastUpdatedAt"] = "cancelled", now()
                return ok(dict(task_view(task), resultType="complete"))
        error(-32601, f"method not found: {method}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), Handler) as httpd:
        print(f"tasks MCP server on 127.0.0.1:{port}", flush=True)
        httpd.serve_forever()
