#!/usr/bin/env python3
"""A scripted client on the official MCP Python SDK 2.x `Client`, speaking a given revision:
`--mode 2026-07-28` (stateless: no initialize, `_meta` and routing headers on every request),
`--mode auto` (probes `server/discover`, falls back to the handshake) or `--mode legacy`.

    $VENV/bin/python e2e/clients/py_modern_client.py [--mode M] URL SCENARIO_JSON

Steps: {"op": "list_tools"} and {"op": "call_tool", "name": ..., "arguments": {...}}. With
`--elicit JSON`, every elicitation is accepted with that content (and counted: the step's line
says how many it answered under "elicitations"). Each step
prints one JSON line, {"op", "ok": true, "result"} or {"op", "ok": false, "error", "code"}; exit 0
when every step ran (whatever each answered), 1 when the client could not connect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult


def dump(result: Any) -> Any:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


async def run(url: str, mode: str, steps: list[dict[str, Any]], elicit: dict[str, Any] | None) -> int:
    asked = 0

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        nonlocal asked
        asked += 1
        return ElicitResult(action="accept", content=elicit)

    options: dict[str, Any] = {"elicitation_callback": on_elicit} if elicit is not None else {}
    try:
        async with Client(url, mode=mode, **options) as client:
            for step in steps:
                out: dict[str, Any] = {"op": step["op"]}
                try:
                    if step["op"] == "list_tools":
                        out["result"] = dump(await client.list_tools(cache_mode="refresh"))
                    elif step["op"] == "call_tool":
                        out["result"] = dump(await client.call_tool(step["name"], step.get("arguments") or {}))
                    else:
                        raise ValueError(f"unknown op {step['op']!r}")
                    out["ok"] = True
                    out["elicitations"] = asked
                except MCPError as e:
                    out.update(ok=False, error=str(e), code=getattr(getattr(e, "error", None), "code", None))
                except Exception as e:  # noqa: BLE001 - every failure is a step's answer
                    out.update(ok=False, error=f"{type(e).__name__}: {e}")
                print(json.dumps(out), flush=True)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"op": "connect", "ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="2026-07-28")
    parser.add_argument("--timeout", default="60")
    parser.add_argument("--elicit", default=None)
    parser.add_argument("url")
    parser.add_argument("scenario")
    args = parser.parse_args()
    elicit = json.loads(args.elicit) if args.elicit else None
    sys.exit(asyncio.run(run(args.url, args.mode, json.loads(args.scenario), elicit)))


if __name__ == "__main__":
    main()
