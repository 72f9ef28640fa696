#!/usr/bin/env python3
"""An MCP server built on the official Python SDK that, like a real hosted server, refuses every
request without its bearer token (HTTP 401). Its one tool, `whoami`, says which token it saw.
TOKEN may list several, comma-separated (a credential being rotated).

    $VENV/bin/python e2e/servers/auth_echo.py PORT TOKEN[,TOKEN...]

Serves Streamable HTTP on http://127.0.0.1:PORT/mcp; prints "listening" once it accepts.
"""

from __future__ import annotations

import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def main() -> None:
    port, token = int(sys.argv[1]), sys.argv[2]
    expected = {f"Bearer {t}".encode() for t in token.split(",")}
    server = MCPServer("auth-echo")

    @server.tool()
    async def whoami(ctx: Context) -> str:
        """Says which credential the request carried."""
        auth = (ctx.headers or {}).get("authorization", "")
        return f"authorized as {auth.removeprefix('Bearer ')}"

    inner = server.streamable_http_app()

    async def app(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") not in expected:
            body = b'{"error": "missing or wrong bearer token"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    print("listening", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
