#!/usr/bin/env bash
# Usage: run-everything-server.sh PORT
# Runs the reference MCP server @modelcontextprotocol/server-everything (from the cache that
# install-mcp-tools.sh fills) in Streamable HTTP mode, in the foreground (exec), on 127.0.0.1:PORT.
# The MCP endpoint is http://127.0.0.1:PORT/mcp (POST, GET for the SSE stream, DELETE).
# Ready when stderr shows "MCP Streamable HTTP Server listening on port PORT" (or when the port
# accepts connections). It logs a line per request to stdout. Stops on SIGINT/SIGTERM.
# Set TOLLGATE_MCP_TOOLS to the install directory to skip the (fast, idempotent) install check.
set -euo pipefail

PORT="${1:?usage: run-everything-server.sh PORT}"
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got '$PORT'" >&2; exit 2; }
if [[ -z "${TOLLGATE_MCP_TOOLS:-}" ]]; then
  TOLLGATE_MCP_TOOLS="$("$(dirname "${BASH_SOURCE[0]}")/install-mcp-tools.sh" | tail -n 1)"
fi
entry="$TOLLGATE_MCP_TOOLS/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
[[ -f "$entry" ]] || { echo "no server-everything under $TOLLGATE_MCP_TOOLS" >&2; exit 1; }

export PORT
exec "${TOLLGATE_NODE:-node}" --import "file://$TOLLGATE_MCP_TOOLS/loopback-listen.mjs" "$entry" streamableHttp
