#!/usr/bin/env python3
"""A stateless MCP server on the official Python SDK 2.x, which speaks the 2026-07-28 revision
(no initialize, `_meta` on every request, `server/discover`, routing headers it checks against
the body) and still answers the initialize handshake of older clients.

    $VENV/bin/python e2e/servers/modern.py PORT [HOST [CERT KEY]]

Serves Streamable HTTP on http://HOST:PORT/mcp (HOST 127.0.0.1 by default; https with CERT and
KEY); prints "listening" once it accepts. Its
tools: `echo`, `read_file`, `delete_everything`, `whoami_headers` (the Mcp-* headers it got), and
`remove_file`, which asks the client to confirm (an elicitation: on 2026-07-28 an
`InputRequiredResult` the client answers by retrying the call with `inputResponses`).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import uvicorn
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from pydantic import BaseModel


class Confirmation(BaseModel):
    confirm: bool


async def confirmation(path: str) -> Elicit[Confirmation]:
    return Elicit(f"Remove {path}?", Confirmation)


def main() -> None:
    port = int(sys.argv[1])
    server = MCPServer("modern")

    # MODERN_VARIANT=2 is the same server after an upgrade: `echo` takes another argument,
    # `delete_everything` is gone and `write_file` is new (what discovery must notice).
    upgraded = os.environ.get("MODERN_VARIANT") == "2"

    if upgraded:

        @server.tool()
        async def echo(message: str, loud: bool = False) -> str:
            """Says the message back, perhaps loudly."""
            return f"Echo: {message.upper() if loud else message}"

        @server.tool()
        async def write_file(path: str, text: str) -> str:
            """Pretends to write a file."""
            return f"wrote {path}"

    else:

        @server.tool()
        async def echo(message: str) -> str:
            """Says the message back."""
            return f"Echo: {message}"

    @server.tool()
    async def read_file(path: str) -> str:
        """Pretends to read a file."""
        return f"contents of {path}"

    if not upgraded:

        @server.tool()
        async def delete_everything(confirm: bool = True) -> str:
            """What no agent should run."""
            return "everything deleted"

    @server.tool()
    async def whoami_headers(ctx: Context) -> str:
        """The routing headers the request carried, as the server saw them."""
        headers = ctx.headers or {}
        return ";".join(f"{k}={v}" for k, v in sorted(headers.items()) if k.lower().startswith("mcp-"))

    @server.tool()
    async def remove_file(path: str, answer: Annotated[Confirmation, Resolve(confirmation)]) -> str:
        """Removes a file once the user confirms."""
        return f"removed {path}" if answer.confirm else f"kept {path}"

    # A network namespace's documentation-range address, for transparent mode's test; the SDK
    # then accepts that host (it refuses foreign Host headers, as it should).
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    # The name clients reach it by, when a portal gives it another address than where it listens.
    public = os.environ.get("MODERN_PUBLIC_HOST", host)
    app = server.streamable_http_app(stateless_http=True, json_response=True, host=public)
    print("listening", flush=True)
    # CERT and KEY: serve HTTPS, as a hosted server with a private CA does.
    tls = {"ssl_certfile": sys.argv[3], "ssl_keyfile": sys.argv[4]} if len(sys.argv) > 4 else {}
    uvicorn.run(app, host=host, port=port, log_level="warning", **tls)


if __name__ == "__main__":
    main()
