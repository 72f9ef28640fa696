#!/usr/bin/env python3
"""An app container that tries to leave transparent mode's redirect: it runs as root, becomes
the sidecar's UID (1337, which the redirect exempts) if it can, then calls a tool of the MCP
server at URL straight, with nothing but the standard library (the agent's own code).

    python3 become_sidecar.py URL TOOL

Prints one JSON line: {"setuid": true|false, "uid": N, "setuid_error": ..., "result": <the
tools/call answer>} or {"error": ...} when the call could not be made.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.parse

SIDECAR_UID = 1337


def become_sidecar() -> tuple[bool, str | None]:
    try:
        os.setgroups([])
        os.setgid(SIDECAR_UID)
        os.setuid(SIDECAR_UID)
        return True, None
    except OSError as e:
        return False, str(e)


def post(url: urllib.parse.SplitResult, body: dict, session: str | None) -> tuple[dict | None, str | None]:
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=20)
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
    if session:
        headers["mcp-session-id"] = session
    conn.request("POST", url.path or "/", json.dumps(body), headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    session = resp.getheader("mcp-session-id") or session
    if "id" not in body:
        return None, session
    for line in text.splitlines():
        if line.startswith("data:"):
            text = line[5:].strip()
            break
    return (json.loads(text) if text else {"status": resp.status}), session


def main() -> None:
    url, tool = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2]
    became, error = become_sidecar()
    out: dict = {"setuid": became, "uid": os.getuid(), "setuid_error": error}
    try:
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "become-sidecar", "version": "1"}}
        _, session = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, None)
        post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        result, _ = post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {}}}, session)
        out["result"] = result
    except (OSError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
