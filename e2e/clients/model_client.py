#!/usr/bin/env python3
"""A scripted agent on the official `openai` and `anthropic` Python SDKs (pinned by
e2e/scripts/install-model-sdks.sh), configured only as an injected agent pod is: by
OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY.

    $VENV/bin/python e2e/clients/model_client.py SCENARIO_JSON      (inline, or @FILE)

Steps:
    {"op": "models"}
    {"op": "chat", "model": M, "stream": bool, "include_usage": bool, "headers": {...}}
    {"op": "responses", "model": M, "stream": bool}
    {"op": "messages", "model": M, "stream": bool, "beta": bool}
    Any step may add "kwargs": {...}, passed to the SDK's create() as they are (tools=...,
    mcp_servers=..., betas=..., extra_body=...); "beta" calls client.beta.messages.
    {"op": "burst", "model": M, "count": N, "concurrency": C, "base_urls": [URL, ...]}
        N chat calls (max_tokens 10), C at a time, call i on base URL i mod len; says how many
        answered 200, 403 and anything else, and per call its replica, status and message.

Each step prints ONE JSON line: {"op", "ok": true, "text", "usage", "chunks", "first_event_s",
"total_s", "ended_at_s" (when it ended, in seconds since the epoch)} or {"op", "ok": false, "error": <SDK exception class>, "status", "message"}. The SDKs
do not retry (max_retries=0) unless a step says "retries": N: a test sees exactly what the gateway
answered.
"""

from __future__ import annotations

import json
import sys
import time

import anthropic
import openai


def run(step: dict) -> dict:
    op = step["op"]
    # "retries": the SDK's own retries (they wait as a 429's retry-after says); none by default.
    retries = step.get("retries", 0)
    oai = openai.OpenAI(max_retries=retries, timeout=90)
    ant = anthropic.Anthropic(max_retries=retries, timeout=90)
    started = time.monotonic()
    first = None
    out: dict = {"op": op, "ok": True}
    try:
        if op == "models":
            out["models"] = sorted(m.id for m in oai.models.list())
        elif op == "chat":
            messages = [{"role": "user", "content": "Say hello"}]
            if step.get("stream"):
                extra = {"stream_options": {"include_usage": True}} if step.get("include_usage") else {}
                text, usage, chunks = "", None, 0
                extra["extra_headers"] = step.get("headers")
                for chunk in oai.chat.completions.create(model=step["model"], messages=messages, stream=True, **extra):
                    first = first or time.monotonic()
                    chunks += 1
                    if chunk.usage is not None:
                        usage = chunk.usage.model_dump()
                    for c in chunk.choices:
                        text += c.delta.content or ""
                out.update(text=text, usage=usage, chunks=chunks)
            else:
                kwargs = step.get("kwargs", {})
                if step.get("headers"):
                    kwargs["extra_headers"] = step["headers"]
                if step.get("max_tokens") is not None:
                    kwargs["max_tokens"] = step["max_tokens"]
                r = oai.chat.completions.create(model=step["model"], messages=messages, **kwargs)
                out.update(text=r.choices[0].message.content, usage=r.usage.model_dump() if r.usage else None)
        elif op == "responses":
            if step.get("stream"):
                text, usage = "", None
                for event in oai.responses.create(model=step["model"], input="Say hello", stream=True):
                    first = first or time.monotonic()
                    if event.type == "response.output_text.delta":
                        text += event.delta
                    if event.type == "response.completed":
                        usage = event.response.usage.model_dump() if event.response.usage else None
                out.update(text=text, usage=usage)
            else:
                r = oai.responses.create(model=step["model"], **{"input": "Say hello", **step.get("kwargs", {})})
                out.update(text=r.output_text, usage=r.usage.model_dump() if r.usage else None)
        elif op == "messages":
            messages = [{"role": "user", "content": "Say hello"}]
            if step.get("stream"):
                with ant.messages.stream(model=step["model"], max_tokens=64, messages=messages) as s:
                    text = ""
                    for piece in s.text_stream:
                        first = first or time.monotonic()
                        text += piece
                    final = s.get_final_message()
                out.update(text=text, usage=final.usage.model_dump())
            else:
                messages_api = ant.beta.messages if step.get("beta") else ant.messages
                r = messages_api.create(model=step["model"], max_tokens=64, messages=messages, **step.get("kwargs", {}))
                out.update(text="".join(b.text for b in r.content if b.type == "text"), usage=r.usage.model_dump())
        elif op == "burst":
            from concurrent.futures import ThreadPoolExecutor

            clients = [openai.OpenAI(max_retries=0, timeout=60, base_url=u) for u in step["base_urls"]]

            def one(i: int) -> dict:
                replica = i % len(clients)
                try:
                    clients[replica].chat.completions.create(
                        model=step["model"], max_tokens=10, messages=[{"role": "user", "content": "Say hello"}])
                    return {"replica": replica, "status": "200"}
                except openai.APIStatusError as e:
                    return {"replica": replica, "status": str(e.status_code), "message": e.message,
                            "retry_after": e.response.headers.get("retry-after")}
                except openai.APIConnectionError as e:
                    return {"replica": replica, "status": "connection", "message": str(e)}

            with ThreadPoolExecutor(max_workers=step.get("concurrency", 50)) as pool:
                results = list(pool.map(one, range(step["count"])))
            statuses = [r["status"] for r in results]
            out["counts"] = {k: statuses.count(k) for k in sorted(set(statuses))}
            out["calls"] = results
        else:
            return {"op": op, "ok": False, "error": "BadStep", "message": f"unknown op {op}"}
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        return {"op": op, "ok": False, "error": type(e).__name__, "status": e.status_code, "message": str(e)}
    except (openai.APIConnectionError, anthropic.APIConnectionError) as e:
        return {"op": op, "ok": False, "error": type(e).__name__, "message": str(e)}
    out["total_s"] = time.monotonic() - started
    out["ended_at_s"] = time.time()
    if first is not None:
        out["first_event_s"] = first - started
    return out


def main() -> None:
    arg = sys.argv[1]
    steps = json.load(open(arg[1:])) if arg.startswith("@") else json.loads(arg)
    for step in steps:
        print(json.dumps(run(step)), flush=True)


if __name__ == "__main__":
    main()
