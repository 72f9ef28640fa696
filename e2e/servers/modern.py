#!/usr/bin/env python3
"""A stateless MCP server on the official Python SDK 2.x, which speaks the 2026-07-28 revision
(no initialize, `_meta` on every request, `server/discover`, routing headers it checks against
the body) and still answers the initialize handshake of older clients.

    $VENV/bin/python e2e/servers/modern.py PORT

Serves Streamable HTTP on http://127.0.0.1:PORT/mcp; prints "listening" once it accepts. Its
tools: `echo`, `read_file`, `delete_everything`, `whoami_headers` (the Mcp-* headers it got), and
`remove_file`, which asks the client to confirm (an elicitation: on 2026-07-28 an
`InputRequiredResult` the client answers by retrying the call with `inputResponses`).
"""

from __future__ import annotations

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

    @server.tool()
    async def echo(message: str) -> str:
        """Says the message back."""
        return f"Echo: {message}"

    @server.tool()
    async def read_file(path: str) -> str:
        """Pretends to read a file."""
        return f"contents of {path}"

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

    app = server.streamable_http_app(stateless_http=True, json_response=True)
    print("listening", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
