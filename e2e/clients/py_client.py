#!/usr/bin/env python3
"""A small scripted MCP client built on the official MCP Python SDK (`mcp`).

Run it with the venv that e2e/scripts/install-mcp-tools.sh prints:

    DIR=$(e2e/scripts/install-mcp-tools.sh | tail -n1)
    $DIR/venv/bin/python e2e/clients/py_client.py [options] URL SCENARIO_JSON

URL is a Streamable HTTP MCP endpoint (e.g. http://127.0.0.1:PORT/mcp). SCENARIO_JSON is a JSON
list of steps (inline JSON, or @FILE to read it from a file, or - for stdin):

    {"op": "list_tools"}
    {"op": "call_tool", "name": "echo", "arguments": {...}, "progress": true}
    {"op": "concurrent_calls", "name": "echo", "arguments": {...}, "count": N, "progress": false}
    {"op": "list_prompts"}      {"op": "get_prompt", "name": ..., "arguments": {...}}
    {"op": "list_resources"}    {"op": "list_resource_templates"}
    {"op": "read_resource", "uri": ...}
    {"op": "ping"}
    {"op": "session_id"}        the Mcp-Session-Id the client holds (null if the server set none)
    {"op": "initialize_result"} the InitializeResult of the handshake (protocolVersion, serverInfo..)

Each step prints exactly ONE JSON line to stdout:

    {"op": ..., "ok": true, "result": <result JSON>, "progress": [...]}   ("progress" only for
                                                                           call_tool with progress)
    {"op": ..., "ok": false, "error": "<message>", "code": <JSON-RPC code, if any>}

A result is `model_dump(mode="json", by_alias=True, exclude_none=True)`. Progress entries are
{"progress": p, "total": t, "message": m} (None fields left out). concurrent_calls reports
{"results": [<one step object per call, in issue order, without "op">]}.
A failing step does not stop the rest. Exit code: 0 if the session was initialized (whatever the
steps did), 1 if it was not (then one line {"op": "initialize", "ok": false, ...} is printed),
2 on bad usage.

Options:
    --header K=V          extra HTTP header on every request (repeatable)
    --timeout SECONDS     per-request read timeout (default 60)
    --sampling-reply TEXT advertise the sampling capability and answer every
                          sampling/createMessage with this text (model "tollgate-e2e")
    --elicit-accept JSON  advertise elicitation and accept every elicitation/create with this content
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import MCP_SESSION_ID, streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def dump(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def error_entry(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        entry: dict[str, Any] = {"ok": False, "error": exc.message, "code": exc.code}
        if exc.data is not None:
            entry["data"] = exc.data
        return entry
    if isinstance(exc, BaseExceptionGroup):
        msgs = [str(e) or type(e).__name__ for e in exc.exceptions]
        return {"ok": False, "error": f"{type(exc).__name__}: " + "; ".join(msgs)}
    return {"ok": False, "error": str(exc) or type(exc).__name__}


async def call_tool(session: ClientSession, step: dict[str, Any], timeout: float) -> dict[str, Any]:
    progress: list[dict[str, Any]] | None = [] if step.get("progress") else None

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        assert progress is not None
        entry: dict[str, Any] = {"progress": p}
        if total is not None:
            entry["total"] = total
        if message is not None:
            entry["message"] = message
        progress.append(entry)

    try:
        result = await session.call_tool(
            step["name"],
            step.get("arguments") or {},
            read_timeout_seconds=step.get("timeout", timeout),
            progress_callback=on_progress if progress is not None else None,
        )
        out: dict[str, Any] = {"ok": True, "result": dump(result)}
    except Exception as exc:  # noqa: BLE001 — every failure is reported, not raised
        out = error_entry(exc)
    if progress is not None:
        out["progress"] = progress
    return out


async def run_step(
    session: ClientSession, step: dict[str, Any], timeout: float, holder: dict[str, Any]
) -> dict[str, Any]:
    op = step.get("op")
    if op == "call_tool":
        return await call_tool(session, step, timeout)
    if op == "concurrent_calls":
        count = int(step.get("count", 2))
        results = await asyncio.gather(*(call_tool(session, step, timeout) for _ in range(count)))
        return {"ok": all(r["ok"] for r in results), "result": {"results": list(results)}}
    try:
        if op == "list_tools":
            result: Any = await session.list_tools()
        elif op == "list_prompts":
            result = await session.list_prompts()
        elif op == "get_prompt":
            result = await session.get_prompt(step["name"], step.get("arguments"))
        elif op == "list_resources":
            result = await session.list_resources()
        elif op == "list_resource_templates":
            result = await session.list_resource_templates()
        elif op == "read_resource":
            result = await session.read_resource(step["uri"])
        elif op == "ping":
            result = await session.send_ping()
        elif op == "session_id":
            result = holder.get("session_id")
        elif op == "initialize_result":
            result = holder.get("initialize_result")
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True, "result": dump(result)}
    except Exception as exc:  # noqa: BLE001
        return error_entry(exc)


async def main_async(args: argparse.Namespace, steps: list[dict[str, Any]]) -> int:
    headers: dict[str, str] = {}
    for h in args.header:
        key, sep, value = h.partition("=")
        if not sep:
            print(f"--header wants K=V, got {h!r}", file=sys.stderr)
            return 2
        headers[key] = value

    holder: dict[str, Any] = {"session_id": None, "initialize_result": None}

    # The SDK's transport keeps the Mcp-Session-Id to itself; watch the responses for it, which is
    # exactly the value the transport stores and sends back.
    async def on_response(response: httpx2.Response) -> None:
        sid = response.headers.get(MCP_SESSION_ID)
        if sid:
            holder["session_id"] = sid

    http_client = create_mcp_http_client(headers=headers or None)
    http_client.event_hooks = {"request": [], "response": [on_response]}

    session_kwargs: dict[str, Any] = {}
    if args.sampling_reply is not None:
        reply = args.sampling_reply

        async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=reply),
                model="tollgate-e2e",
                stop_reason="endTurn",
            )

        session_kwargs["sampling_callback"] = sampling
    if args.elicit_accept is not None:
        content = json.loads(args.elicit_accept)

        async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            return types.ElicitResult(action="accept", content=content)

        session_kwargs["elicitation_callback"] = elicitation

    initialized = False
    try:
        async with http_client:
            async with streamable_http_client(args.url, http_client=http_client) as (read, write):
                async with ClientSession(
                    read,
                    write,
                    read_timeout_seconds=args.timeout,
                    client_info=types.Implementation(name="tollgate-e2e-py-client", version="0.1.0"),
                    **session_kwargs,
                ) as session:
                    try:
                        holder["initialize_result"] = await session.initialize()
                    except Exception as exc:  # noqa: BLE001
                        emit({"op": "initialize", **error_entry(exc)})
                        return 1
                    initialized = True
                    for step in steps:
                        emit({"op": step.get("op"), **await run_step(session, step, args.timeout, holder)})
    except BaseException as exc:  # noqa: BLE001 — teardown (e.g. the DELETE) must not change the verdict
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if not initialized:
            emit({"op": "initialize", **error_entry(exc)})
            return 1
        print(f"py_client: error while closing the session: {exc!r}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="scripted MCP client (official Python SDK)")
    parser.add_argument("url")
    parser.add_argument("scenario", help="JSON list of steps, @FILE, or - for stdin")
    parser.add_argument("--header", action="append", default=[], metavar="K=V")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--sampling-reply", default=None)
    parser.add_argument("--elicit-accept", default=None, metavar="JSON")
    args = parser.parse_args()

    raw = args.scenario
    if raw == "-":
        raw = sys.stdin.read()
    elif raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as f:
            raw = f.read()
    try:
        steps = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"bad scenario JSON: {exc}", file=sys.stderr)
        return 2
    if isinstance(steps, dict):
        steps = [steps]
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        print("scenario must be a JSON list of objects", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args, steps))


if __name__ == "__main__":
    sys.exit(main())
