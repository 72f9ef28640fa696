// A small scripted MCP client built on the official TypeScript SDK (@modelcontextprotocol/sdk):
// `Client` + `StreamableHTTPClientTransport`. The TypeScript twin of py_client.py.
//
// How to run it: the SDK lives in the cache that e2e/scripts/install-mcp-tools.sh fills, not in
// the repo. Node's ESM loader ignores NODE_PATH, so this script finds the SDK itself: set NODE_PATH
// to the cache's node_modules (or TOLLGATE_MCP_TOOLS to the install directory):
//
//   DIR=$(e2e/scripts/install-mcp-tools.sh | tail -n1)
//   NODE_PATH=$DIR/node/node_modules node e2e/clients/ts_client.mjs [options] URL SCENARIO_JSON
//
// SCENARIO_JSON is a JSON list of steps (inline, @FILE, or - for stdin):
//   {"op":"list_tools"}  {"op":"call_tool","name":"echo","arguments":{...},"progress":true}
//   {"op":"concurrent_calls","name":...,"arguments":...,"count":N}
//   {"op":"list_prompts"} {"op":"get_prompt","name":...,"arguments":{...}}
//   {"op":"list_resources"} {"op":"read_resource","uri":...} {"op":"ping"}
//   {"op":"session_id"} {"op":"initialize_result"}
// Each step prints ONE JSON line on stdout:
//   {"op":...,"ok":true,"result":<result as received>,"progress":[...]}   (progress: call_tool
//                                                                          with "progress":true)
//   {"op":...,"ok":false,"error":"<message>","code":<JSON-RPC code, if any>}
// A failing step does not stop the rest. Exit 0 if the session was initialized; 1 if not (then
// one line {"op":"initialize","ok":false,...} is printed); 2 on bad usage.
// Options: --header K=V (repeatable), --timeout SECONDS (per request, default 60).

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function sdkRoot() {
  const candidates = [];
  if (process.env.TOLLGATE_MCP_TOOLS) {
    candidates.push(path.join(process.env.TOLLGATE_MCP_TOOLS, "node", "node_modules"));
  }
  for (const p of (process.env.NODE_PATH || "").split(path.delimiter)) if (p) candidates.push(p);
  for (const nm of candidates) {
    const root = path.join(nm, "@modelcontextprotocol", "sdk");
    if (existsSync(path.join(root, "dist", "esm", "client", "index.js"))) return root;
  }
  process.stderr.write(
    "ts_client: cannot find @modelcontextprotocol/sdk; set NODE_PATH=<install dir>/node/node_modules\n",
  );
  process.exit(2);
}

const root = sdkRoot();
const load = (rel) => import(pathToFileURL(path.join(root, "dist", "esm", rel)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { McpError } = await load("types.js");

function usage(msg) {
  process.stderr.write(`${msg}\nusage: ts_client.mjs [--header K=V]... [--timeout S] URL SCENARIO_JSON\n`);
  process.exit(2);
}

const headers = {};
let timeoutMs = 60_000;
const positional = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--header") {
    const kv = argv[++i] ?? usage("--header wants K=V");
    const eq = kv.indexOf("=");
    if (eq < 1) usage(`--header wants K=V, got ${kv}`);
    headers[kv.slice(0, eq)] = kv.slice(eq + 1);
  } else if (a === "--timeout") {
    timeoutMs = Number(argv[++i]) * 1000;
    if (!(timeoutMs > 0)) usage("--timeout wants seconds");
  } else {
    positional.push(a);
  }
}
if (positional.length !== 2) usage("want URL and SCENARIO_JSON");
const [url, scenarioArg] = positional;
let raw = scenarioArg;
if (raw === "-") raw = readFileSync(0, "utf8");
else if (raw.startsWith("@")) raw = readFileSync(raw.slice(1), "utf8");
let steps;
try {
  steps = JSON.parse(raw);
} catch (e) {
  usage(`bad scenario JSON: ${e.message}`);
}
if (!Array.isArray(steps)) steps = [steps];

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function errorEntry(e) {
  if (e instanceof McpError) {
    // McpError prefixes "MCP error <code>: " to the server's message; report the server's message.
    const entry = { ok: false, error: e.message.replace(/^MCP error -?\d+: /, ""), code: e.code };
    if (e.data !== undefined) entry.data = e.data;
    return entry;
  }
  return { ok: false, error: e instanceof Error ? e.message : String(e) };
}

async function callTool(client, step) {
  const progress = step.progress ? [] : null;
  const options = { timeout: step.timeout ? step.timeout * 1000 : timeoutMs };
  if (progress) {
    options.onprogress = (p) => {
      const entry = { progress: p.progress };
      if (p.total !== undefined) entry.total = p.total;
      if (p.message !== undefined) entry.message = p.message;
      progress.push(entry);
    };
  }
  let out;
  try {
    const result = await client.callTool({ name: step.name, arguments: step.arguments ?? {} }, undefined, options);
    out = { ok: true, result };
  } catch (e) {
    out = errorEntry(e);
  }
  if (progress) out.progress = progress;
  return out;
}

async function runStep(client, transport, step) {
  const opts = { timeout: timeoutMs };
  try {
    switch (step.op) {
      case "call_tool":
        return await callTool(client, step);
      case "concurrent_calls": {
        const n = Number(step.count ?? 2);
        const results = await Promise.all(Array.from({ length: n }, () => callTool(client, step)));
        return { ok: results.every((r) => r.ok), result: { results } };
      }
      case "list_tools":
        return { ok: true, result: await client.listTools(undefined, opts) };
      case "list_prompts":
        return { ok: true, result: await client.listPrompts(undefined, opts) };
      case "get_prompt":
        return { ok: true, result: await client.getPrompt({ name: step.name, arguments: step.arguments }, opts) };
      case "list_resources":
        return { ok: true, result: await client.listResources(undefined, opts) };
      case "list_resource_templates":
        return { ok: true, result: await client.listResourceTemplates(undefined, opts) };
      case "read_resource":
        return { ok: true, result: await client.readResource({ uri: step.uri }, opts) };
      case "ping":
        return { ok: true, result: await client.ping(opts) };
      case "session_id":
        return { ok: true, result: transport.sessionId ?? null };
      case "initialize_result":
        return {
          ok: true,
          result: {
            protocolVersion: transport.protocolVersion ?? null,
            capabilities: client.getServerCapabilities(),
            serverInfo: client.getServerVersion(),
            instructions: client.getInstructions(),
          },
        };
      default:
        return { ok: false, error: `unknown op ${JSON.stringify(step.op)}` };
    }
  } catch (e) {
    return errorEntry(e);
  }
}

const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "tollgate-e2e-ts-client", version: "0.1.0" }, { capabilities: {} });
try {
  await client.connect(transport, { timeout: timeoutMs });
} catch (e) {
  emit({ op: "initialize", ...errorEntry(e) });
  await transport.close().catch(() => {});
  process.exit(1);
}
for (const step of steps) {
  emit({ op: step.op, ...(await runStep(client, transport, step)) });
}
try {
  await transport.terminateSession();
} catch (e) {
  process.stderr.write(`ts_client: terminating the session failed: ${e?.message ?? e}\n`);
}
await client.close().catch(() => {});
process.exit(0);
