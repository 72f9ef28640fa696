//! Traces over OTLP into a real receiver (Jaeger v2, built from its Go module): a tool call, a
//! held call approved by a person, and a streamed model call each make one connected trace,
//! continuing the agent's `traceparent` through Tollgate to the MCP server or the provider, with
//! the MCP and GenAI attributes and Tollgate's decision; arguments and keys appear nowhere.

mod common;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::sync::OnceLock;
use tollgate_e2e::gateway::{GatewayProcess, OPENAI_KEY, Scene, model_client};
use tollgate_e2e::jaeger::{Jaeger, Trace};
use tollgate_e2e::{ControlPlane, Operator, Sidecar, TasksServer, User, py_client_with_args, random_hex, wait_until};

fn jaeger() -> &'static Jaeger {
    static J: OnceLock<Jaeger> = OnceLock::new();
    J.get_or_init(|| Jaeger::start(ControlPlane::shared()).unwrap_or_else(|e| panic!("starting Jaeger: {e:#}")))
}

/// The environment of a process that exports to the receiver.
fn traced() -> Vec<(&'static str, &'static str)> {
    static ENV: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    ENV.get_or_init(|| jaeger().env()).iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The operator, exporting its reconciles to the same receiver.
fn operator() -> &'static Operator {
    static OP: OnceLock<Operator> = OnceLock::new();
    OP.get_or_init(|| Operator::start_with_env(ControlPlane::shared(), &traced()).unwrap_or_else(|e| panic!("starting the operator: {e:#}")))
}

/// A `traceparent` the agent would send: a new trace, its own span as the parent.
fn agent_context() -> Result<(String, String, String)> {
    let (trace, span) = (random_hex(16)?, random_hex(8)?);
    Ok((format!("00-{trace}-{span}-01"), trace, span))
}

/// The trace id and parent span id of a `traceparent`.
fn parts(traceparent: &str) -> Option<(&str, &str)> {
    let mut it = traceparent.split('-');
    let (_, trace, span) = (it.next()?, it.next()?, it.next()?);
    Some((trace, span))
}

const SECRET: &str = "sk-live-do-not-trace-4b1d";

fn objects(server: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: tasks}}
spec: {{url: "{server}", timeoutSeconds: 10}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: [tasks]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {{name: ops}}
spec: {{approvers: {{users: [approver-a]}}, requiredApprovals: 1, timeoutSeconds: 120}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: traced}}
spec:
  tools:
    - {{server: tasks, name: report, rules: [{{action: Allow}}]}}
    - {{server: tasks, name: wipe, approvalWorkflow: ops, rules: [{{action: RequireApproval, message: wiping needs a person}}]}}
"#
    )
}

#[test]
fn a_tool_call_and_a_held_call_are_traced_from_the_agent_to_the_mcp_server() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = TasksServer::start(cp)?;
    let ns = cp.create_namespace("tracing")?;
    cp.apply(User::Admin, &ns, &objects(&server.url()))?;
    let env = traced();
    let sidecar = Sidecar::start_with_env(cp, &ns, "coder", "coder", "coder-pod", &env)?;

    // An allowed call.
    let (traceparent, trace_id, agent_span) = agent_context()?;
    let header = format!("traceparent={traceparent}");
    let out =
        py_client_with_args(&sidecar.url("tasks"), &["--header", &header], &json!([{"op": "call_tool", "name": "report", "arguments": {"token": SECRET}}]))?;
    ensure!(out[0]["ok"] == true, "{out:?}");
    let trace = jaeger().wait_trace(&trace_id, |t| !t.named("tools/call report").is_empty())?;
    let span = trace.named("tools/call report")[0].clone();
    ensure!(trace.service(&span) == "tollgate-sidecar", "{span}");
    ensure!(Trace::parent(&span).as_deref() == Some(agent_span.as_str()), "not the agent's span's child: {span}");
    for (key, want) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.operation.name", "execute_tool"),
        ("gen_ai.tool.name", "report"),
        ("span.kind", "server"),
        ("tollgate.agent", &format!("{ns}/coder")),
        ("tollgate.server", "tasks"),
        ("tollgate.decision", "allow"),
        ("tollgate.policy", &format!("ToolPolicy {ns}/traced")),
        ("tollgate.rule", "spec.tools[0].rules[0]"),
        ("tollgate.outcome", "forwarded"),
    ] {
        ensure!(Trace::tag(&span, key).as_deref() == Some(want), "{key} is not {want:?}: {span}");
    }
    ensure!(Trace::tag(&span, "mcp.protocol.version").is_some_and(|s| !s.is_empty()), "no protocol version: {span}");
    let keys: Vec<&str> = span["tags"].as_array().map(|t| t.iter().filter_map(|t| t["key"].as_str()).collect()).unwrap_or_default();
    ensure!(keys.iter().all(|k| keys.iter().filter(|o| *o == k).count() == 1), "an attribute twice: {keys:?}");
    // The server was called as the sidecar span's child.
    let calls = server.calls()?;
    let seen = calls.iter().find(|c| c["name"] == "report").and_then(|c| c["traceparent"].as_str()).context("the server got no traceparent")?;
    ensure!(parts(seen) == Some((trace_id.as_str(), span["spanID"].as_str().unwrap_or_default())), "server saw {seen}, sidecar span {span}");
    ensure!(!trace.0.to_string().contains(SECRET), "an argument is in the trace: {}", trace.0);

    // MCP also carries the context in the request's `_meta`, for clients without headers.
    let (traceparent, trace_id, agent_span) = agent_context()?;
    let session = tollgate_e2e::raw_mcp::RawSession::open(&sidecar.url("tasks"), "2025-11-25")?;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "report", "arguments": {}, "_meta": {"traceparent": traceparent}}});
    let answer = session.post(&call)?;
    ensure!(answer.response(&json!(7)).is_some_and(|r| r.get("result").is_some()), "{answer:?}");
    let trace = jaeger().wait_trace(&trace_id, |t| !t.named("tools/call report").is_empty())?;
    ensure!(Trace::parent(trace.named("tools/call report")[0]).as_deref() == Some(agent_span.as_str()), "{}", trace.0);
    // A `_meta.traceparent` that is not text is ignored, and the call still runs.
    let odd = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "report", "arguments": {}, "_meta": {"traceparent": 42}}});
    let answer = session.post(&odd)?;
    ensure!(answer.response(&json!(8)).is_some_and(|r| r.get("result").is_some()), "{answer:?}");

    // A hostile tool name (a control sequence, 100 KB) is bounded and inert on the span.
    let (traceparent, trace_id, _) = agent_context()?;
    let name = format!("\u{1b}[31m{}", "w".repeat(100_000));
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name, "arguments": {}, "_meta": {"traceparent": traceparent}}});
    session.post(&call)?;
    let trace = jaeger().wait_trace(&trace_id, |t| t.spans().iter().any(|s| Trace::tag(s, "gen_ai.tool.name").is_some()))?;
    let tool = trace.spans().iter().find_map(|s| Trace::tag(s, "gen_ai.tool.name")).unwrap_or_default();
    ensure!(tool.len() <= 260 && tool.starts_with("\u{fffd}[31mwww") && tool.ends_with('…'), "{tool:?}");
    ensure!(trace.0.to_string().len() < 20_000, "the span carries the whole name: {} bytes", trace.0.to_string().len());

    // A held call, approved by a person.
    let (traceparent, trace_id, agent_span) = agent_context()?;
    let url = sidecar.url("tasks");
    let held = std::thread::spawn(move || {
        let header = format!("traceparent={traceparent}");
        py_client_with_args(&url, &["--header", &header], &json!([{"op": "call_tool", "name": "wipe", "arguments": {"token": SECRET}}]))
    });
    let name = common::pending_request(cp, &ns)?;
    let annotation = cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &ns, "-o", r"jsonpath={.metadata.annotations.tollgate\.dev/traceparent}"])?;
    ensure!(parts(annotation.trim()).map(|p| p.0) == Some(trace_id.as_str()), "the request's traceparent annotation is {annotation:?}");
    common::decide(cp, User::ApproverA, &ns, &name, "Approve")?;
    let out = held.join().map_err(|_| anyhow::anyhow!("the held call's client panicked"))??;
    ensure!(out[0]["ok"] == true, "the approved call did not run: {out:?}");

    let trace = jaeger().wait_trace(&trace_id, |t| !t.named("tools/call wipe").is_empty() && !t.named(&format!("await_approval {name}")).is_empty())?;
    let call = trace.named("tools/call wipe")[0].clone();
    let wait = trace.named(&format!("await_approval {name}"))[0].clone();
    ensure!(Trace::parent(&call).as_deref() == Some(agent_span.as_str()), "{call}");
    ensure!(Trace::parent(&wait) == call["spanID"].as_str().map(str::to_owned), "the wait is not the call's child: {wait}");
    ensure!(Trace::tag(&call, "tollgate.decision").as_deref() == Some("require_approval"), "{call}");
    ensure!(Trace::tag(&wait, "tollgate.approval_request") == Some(format!("{ns}/{name}")), "{wait}");
    ensure!(Trace::tag(&wait, "tollgate.workflow").as_deref() == Some("ops"), "{wait}");
    ensure!(Trace::tag(&wait, "tollgate.outcome").as_deref() == Some("approved"), "{wait}");
    let events = Trace::events(&wait);
    let decision =
        events.iter().find(|e| e.get("tollgate.approval.user") == Some(&json!("approver-a"))).with_context(|| format!("no decision event: {wait}"))?;
    ensure!(decision.get("tollgate.approval.decision") == Some(&json!("Approve")), "{decision:?}");
    let seen = server.calls()?.iter().find(|c| c["name"] == "wipe").and_then(|c| c["traceparent"].as_str().map(str::to_owned)).context("wipe never ran")?;
    ensure!(parts(&seen) == Some((trace_id.as_str(), wait["spanID"].as_str().unwrap_or_default())), "server saw {seen}, wait span {wait}");
    ensure!(!trace.0.to_string().contains(SECRET), "an argument is in the trace: {}", trace.0);

    // The operator's reconcile of the request is linked to the held call's trace.
    let linked = wait_until(std::time::Duration::from_secs(20), std::time::Duration::from_millis(200), || operator_linked(&name, &trace_id))?;
    ensure!(linked["operationName"] == "reconcile", "{linked}");
    Ok(())
}

/// An operator span about request `name` that links to trace `trace_id`.
fn operator_linked(name: &str, trace_id: &str) -> Result<Option<Value>> {
    let tags = json!({"request": name}).to_string();
    let url = format!("http://127.0.0.1:{}/api/traces?service=tollgate-operator&limit=50&tags={}", jaeger().query_port, urlencode(&tags));
    let answer = tollgate_e2e::raw_mcp::request("GET", &url, &[], None)?;
    let traces = answer.messages.first().and_then(|b| b["data"].as_array().cloned()).unwrap_or_default();
    Ok(traces
        .iter()
        .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
        .find(|s| s["references"].as_array().is_some_and(|refs| refs.iter().any(|r| r["refType"] == "FOLLOWS_FROM" && r["traceID"] == trace_id))))
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[test]
fn a_streamed_model_call_is_traced_from_the_agent_to_the_provider() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "tracing-model", "")?;
    let env = traced();
    let gateway = GatewayProcess::start_with(cp, &scene.ledger_url(), scene.port, &env)?;
    let (traceparent, trace_id, agent_span) = agent_context()?;
    let out = model_client(
        &gateway.agent_env(&scene.key),
        &json!([{"op": "chat", "model": "fast", "stream": true, "include_usage": true, "headers": {"traceparent": traceparent}}]),
    )?;
    ensure!(out[0]["ok"] == true, "{out:?}");
    let usage = &out[0]["usage"];
    let trace = jaeger().wait_trace(&trace_id, |t| !t.named("chat fast").is_empty())?;
    let span = trace.named("chat fast")[0].clone();
    ensure!(trace.service(&span) == "tollgate-gateway", "{span}");
    ensure!(Trace::parent(&span).as_deref() == Some(agent_span.as_str()), "not the agent's span's child: {span}");
    for (key, want) in [
        ("gen_ai.operation.name", "chat".to_owned()),
        ("gen_ai.provider.name", "openai".to_owned()),
        ("gen_ai.request.model", "fast".to_owned()),
        ("gen_ai.usage.input_tokens", usage["prompt_tokens"].to_string()),
        ("gen_ai.usage.output_tokens", usage["completion_tokens"].to_string()),
        ("http.response.status_code", "200".to_owned()),
        ("tollgate.agent", format!("{}/coder", scene.ns)),
        ("tollgate.decision", "allow".to_owned()),
    ] {
        ensure!(Trace::tag(&span, key).as_deref() == Some(want.as_str()), "{key} is not {want:?}: {span}");
    }
    let cost: f64 = Trace::tag(&span, "tollgate.cost_usd").context("no cost")?.parse()?;
    ensure!(cost > 0.0, "{span}");
    // The provider was called as the gateway span's child.
    let calls = scene.fake.calls()?;
    let seen = calls.iter().rev().find_map(|c| c["headers"]["traceparent"].as_str()).context("the provider got no traceparent")?;
    ensure!(parts(seen) == Some((trace_id.as_str(), span["spanID"].as_str().unwrap_or_default())), "provider saw {seen}, gateway span {span}");
    let text = trace.0.to_string();
    ensure!(!text.contains(&scene.key) && !text.contains(OPENAI_KEY) && !text.contains("Say hello"), "a key or the prompt is in the trace: {text}");
    Ok(())
}
