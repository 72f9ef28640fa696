//! Held calls (DESIGN §3.2, §3.3): an `ApprovalRequest` per held call, then either a blocking
//! answer (with progress notifications) or, in async mode, a pending result the agent polls with
//! `get_approval_status`, which runs the approved call exactly once.

use crate::Sidecar;
use crate::body::{Body, channel};
use crate::proxy::{CallContext, json};
use crate::snapshot::{Server, Snapshot};
use crate::upstream::header;
use bytes::Bytes;
use futures::StreamExt;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::ResourceExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_api::{ApprovalRequest, ApprovalRequestSpec, Phase, PolicyRef};
use tollgate_core::audit::{Outcome, RecordKind};
use tollgate_core::jsonrpc::{self, Envelope, ToolCallParams};
use tollgate_core::policy::{self, Action, Args, DecidedBy};

pub const GET_STATUS: &str = "get_approval_status";
pub const REQUEST_APPROVAL: &str = "request_approval";
/// Server name policies use for the built-in tools.
pub const BUILTIN_SERVER: &str = "tollgate";
/// Set on a request whose sidecar went away; the operator then cancels it.
pub const CANCEL_ANNOTATION: &str = "tollgate.dev/cancel";
const POLL_SECONDS: u64 = 5;

/// Calls held in async mode, by request name.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<HashMap<String, Arc<Held>>>,
}

impl Registry {
    /// The server a held call goes to (`None` for standalone approvals and unknown requests).
    pub fn server_of(&self, name: &str) -> Option<String> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(name).and_then(|h| h.server.as_ref().map(|s| s.name.clone()))
    }
}

pub struct Held {
    /// The outcome record, filled in when the request ends.
    audit: tollgate_core::audit::AuditRecord,
    created: Instant,
    server: Option<Server>,
    headers: HeaderMap,
    body: Bytes,
    digest: String,
    /// The final answer once known: concurrent polls wait here, later polls get the same one.
    result: tokio::sync::Mutex<Option<Value>>,
}

/// The built-in tools, listed beside the server's own.
pub fn add_builtin_tools(result: &mut Value) {
    let Some(Value::Array(tools)) = result.get_mut("tools") else { return };
    tools.retain(|t| !matches!(t.get("name").and_then(Value::as_str), Some(GET_STATUS | REQUEST_APPROVAL)));
    tools.push(json!({
        "name": GET_STATUS,
        "description": "Status of a tool call held for human approval. Once approved, runs the held call (exactly once) and returns its result.",
        "inputSchema": {"type": "object", "properties": {"request_id": {"type": "string"}}, "required": ["request_id"]},
    }));
    tools.push(json!({
        "name": REQUEST_APPROVAL,
        "description": "Ask a human to approve an operation before you do it.",
        "inputSchema": {"type": "object", "properties": {
            "operation": {"type": "string"}, "context": {"type": "string"}, "reasoning": {"type": "string"}},
            "required": ["operation", "reasoning"]},
    }));
}

/// Handles the built-in tools; `None` for any other tool.
pub async fn builtin(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    call: &ToolCallParams<'_>,
) -> Option<Response<Body>> {
    if !matches!(call.name.as_str(), GET_STATUS | REQUEST_APPROVAL) {
        return None;
    }
    let args: Value = call.arguments.and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or(Value::Null);
    match call.name.as_str() {
        GET_STATUS => {
            let id = args.get("request_id").and_then(Value::as_str).unwrap_or_default();
            Some(json(StatusCode::OK, get_status(sc, id, env.id, headers).await))
        }
        REQUEST_APPROVAL => Some(request_approval(sc, snapshot, server, headers, env, &args).await),
        _ => None,
    }
}

async fn request_approval(sc: &Arc<Sidecar>, snapshot: &Snapshot, server: &Server, headers: &HeaderMap, env: &Envelope<'_>, args: &Value) -> Response<Body> {
    let Some(agent) = snapshot.agent.as_ref() else {
        let reason = snapshot.unavailable(&sc.config.agent, &sc.config.namespace).unwrap_or_default();
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("Access denied: {reason}"), true));
    };
    let reasoning = args.get("reasoning").and_then(Value::as_str).filter(|r| !r.trim().is_empty());
    let arguments = json!({"operation": args.get("operation"), "context": args.get("context")});
    let refs = snapshot.policy_refs();
    let workflows = |w: &str| snapshot.workflows.contains_key(w);
    let args = Args::value(&arguments);
    let call = policy::Call { agent, server: BUILTIN_SERVER, tool: REQUEST_APPROVAL, args: &args, justification: reasoning, now: jiff::Timestamp::now() };
    let decision = policy::decide(&refs, &call, &workflows, Action::Deny);
    if decision.action != Action::RequireApproval {
        let text = match decision.action {
            Action::Deny if decision.decided_by != DecidedBy::ClusterDefault => format!("Access denied: {}", decision.deny_message()),
            _ => format!(
                "request_approval needs a ToolPolicy rule for server {BUILTIN_SERVER:?}, tool {REQUEST_APPROVAL:?} with action RequireApproval and an approvalWorkflow"
            ),
        };
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &text, true));
    }
    let standalone = Server { name: BUILTIN_SERVER.into(), url: String::new(), timeout: server.timeout, headers: Vec::new() };
    let ctx = CallContext {
        sc,
        server: &standalone,
        tool: REQUEST_APPROVAL,
        arguments: &arguments,
        justification: reasoning,
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    hold(&ctx, headers, env.id.map(|i| i.get().to_owned()), Bytes::new(), None).await
}

/// Creates the request and answers as the workflow says: at once (async) or when decided.
pub(crate) async fn hold(ctx: &CallContext<'_>, headers: &HeaderMap, id: Option<String>, body: Bytes, progress: Option<Value>) -> Response<Body> {
    let sc = ctx.sc;
    let id: Option<Box<RawValue>> = id.and_then(|s| RawValue::from_string(s).ok());
    let snapshot = sc.snapshot.load_full();
    // The decision record carries the request's name, so it is written once the request exists;
    // a call that cannot be held gets its decision and its refusal.
    let refuse = |text: &str| {
        ctx.audit(RecordKind::Decision, None, false, None, None);
        ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, None);
        json(StatusCode::OK, jsonrpc::tool_text_result(id.as_deref(), text, true))
    };
    let Some(workflow_name) = ctx.decision.workflow.clone() else {
        return refuse("Access denied: no approval workflow");
    };
    let Some(workflow) = snapshot.workflows.get(&workflow_name).cloned() else {
        return refuse("Access denied: the approval workflow went away");
    };
    let digest = ctx.digest().to_owned();
    let name = match create(ctx, &workflow_name, &digest).await {
        Ok(n) => n,
        Err(e) => {
            sc.metrics.tool_call("require_approval", "request_failed");
            return refuse(&format!("Access denied: approval is required, but the approval request could not be created: {e}"));
        }
    };
    ctx.audit(RecordKind::Decision, None, false, Some(&name), None);
    tracing::info!(request = name, tool = ctx.tool, workflow = workflow_name, r#async = workflow.async_mode, "call held for approval");
    let server = (ctx.server.name != BUILTIN_SERVER).then(|| ctx.server.clone());
    let audit = ctx.record(RecordKind::Outcome, None, false, Some(&name), None);
    let held = Arc::new(Held { audit, created: Instant::now(), server, headers: headers.clone(), body, digest, result: tokio::sync::Mutex::new(None) });
    let deadline = workflow.timeout * 2 + workflow.escalation_after.unwrap_or_default() + Duration::from_secs(30);

    if workflow.async_mode {
        sc.held.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), held);
        sc.metrics.tool_call("require_approval", "pending");
        let text = format!(
            "Approval required: request {name} is pending with workflow {workflow_name}. Call {GET_STATUS} with request_id \"{name}\" every {POLL_SECONDS} seconds; once approved it runs the call and returns its result."
        );
        let result = json!({
            "content": [{"type": "text", "text": text}],
            "structuredContent": {"status": "pending", "request_id": name, "poll_interval_seconds": POLL_SECONDS},
            "isError": false,
        });
        return json(StatusCode::OK, jsonrpc::result_response(id.as_deref(), result));
    }

    let wants_sse = headers.get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    if !wants_sse {
        let (result, _) = settle(sc, &name, &held, deadline).await;
        return json(StatusCode::OK, jsonrpc::result_response(id.as_deref(), result));
    }
    // Blocking with a stream: progress while waiting, then the result, on one SSE response.
    let (tx, body) = channel();
    let (sc2, interval) = (sc.clone(), Duration::from_secs(sc.config.progress_interval_seconds.max(1)));
    tokio::spawn(async move {
        let started = Instant::now();
        let settled = settle(&sc2, &name, &held, deadline);
        tokio::pin!(settled);
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        let mut n = 0u64;
        let result = loop {
            tokio::select! {
                r = &mut settled => break r,
                _ = ticks.tick() => {
                    if let Some(token) = &progress {
                        n += 1;
                        tracing::debug!(request = name, n, "progress notification sent");
                        let msg = format!("waiting for approval of {name} ({}s)", started.elapsed().as_secs());
                        let _ = tx.send(Bytes::from(tollgate_core::sse::message_event(&jsonrpc::progress_notification(token, n, &msg)))).await;
                    }
                }
            }
        };
        let (result, notifications) = result;
        // What the server sent while running the call (its own progress, logs) goes first.
        for n in notifications {
            let _ = tx.send(Bytes::from(tollgate_core::sse::message_event(n.to_string().as_bytes()))).await;
        }
        let message = jsonrpc::result_response(id.as_deref(), result);
        let _ = tx.send(Bytes::from(tollgate_core::sse::message_event(&message))).await;
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(CONTENT_TYPE, header("text/event-stream"));
    r.headers_mut().insert("cache-control", header("no-cache"));
    r
}

fn label_value(s: &str) -> String {
    let v: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn request_name(tool: &str) -> String {
    let base: String = tool
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect::<String>()
        .trim_matches('-')
        .to_owned();
    let base = if base.is_empty() { "call".to_owned() } else { base };
    format!("{base}-{:08x}", rand::random::<u32>())
}

async fn create(ctx: &CallContext<'_>, workflow: &str, digest: &str) -> Result<String, String> {
    let sc = ctx.sc;
    let snapshot = sc.snapshot.load();
    let service_account = snapshot.agent.as_ref().map(|a| a.service_account.clone()).unwrap_or_default();
    let (policy, rule) = match &ctx.decision.decided_by {
        DecidedBy::Rule { policy, rule, .. } => (
            Some(PolicyRef { kind: policy.kind, name: policy.name.clone(), namespace: policy.namespace.clone() }),
            Some(rule.clone()),
        ),
        _ => (None, None),
    };
    let message = ctx.decision.error.clone().map(|e| format!("condition failed (held for safety): {e}")).or(ctx.decision.message.clone());
    let mut labels = BTreeMap::new();
    labels.insert("tollgate.dev/agent".to_owned(), label_value(&sc.config.agent));
    labels.insert("tollgate.dev/server".to_owned(), label_value(&ctx.server.name));
    labels.insert("tollgate.dev/tool".to_owned(), label_value(ctx.tool));
    if !sc.config.pod.is_empty() {
        labels.insert("tollgate.dev/pod".to_owned(), label_value(&sc.config.pod));
    }
    let name = request_name(ctx.tool);
    let request = ApprovalRequest {
        metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels), ..Default::default() },
        spec: ApprovalRequestSpec {
            agent: sc.config.agent.clone(),
            service_account,
            pod: Some(sc.config.pod.clone()).filter(|p| !p.is_empty()),
            sidecar_instance: Some(sc.instance.clone()),
            server: ctx.server.name.clone(),
            tool: ctx.tool.to_owned(),
            arguments: Some(tollgate_core::redact::redact(ctx.arguments)),
            arguments_digest: digest.to_owned(),
            justification: ctx.justification.map(|j| j.chars().take(4096).collect()),
            policy,
            rule,
            message: message.map(|m| m.chars().take(2048).collect()),
            workflow: workflow.to_owned(),
            requested_at: Time(jiff::Timestamp::now()),
        },
        status: None,
    };
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    api.create(&PostParams::default(), &request).await.map_err(|e| e.to_string())?;
    Ok(name)
}

/// Waits for the request to end and returns the `tools/call` result the agent gets: the held
/// call's own result once approved (run here, once), else an `isError` result saying why; with
/// the notifications the server sent while running it.
async fn settle(sc: &Sidecar, name: &str, held: &Held, deadline: Duration) -> (Value, Vec<Value>) {
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let wait = async {
        let mut stream = watcher(api, cfg).default_backoff().applied_objects().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ar) if ar.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_final) => return Some(ar),
                Ok(_) => {}
                Err(e) => tracing::warn!(request = name, error = %e, "watching the approval request"),
            }
        }
        None
    };
    let ar = match tokio::time::timeout(deadline, wait).await {
        Ok(Some(ar)) => {
            tracing::info!(request = name, phase = ?ar.status.as_ref().and_then(|s| s.phase), "approval request decided");
            ar
        }
        Ok(None) | Err(_) => {
            emit_outcome(sc, held, Outcome::Timeout, true, Vec::new());
            return (text_result(&format!("Access denied: approval request {name} was not decided in time"), true), Vec::new());
        }
    };
    conclude(sc, name, held, &ar, None).await
}

/// The held call's outcome record: who approved, and what became of it.
fn emit_outcome(sc: &Sidecar, held: &Held, outcome: Outcome, is_error: bool, approvers: Vec<String>) {
    let mut record = held.audit.clone();
    record.time = jiff::Timestamp::now().to_string();
    record.outcome = Some(outcome);
    record.is_error = is_error;
    record.approvers = approvers;
    record.duration_ms = Some(held.created.elapsed().as_secs_f64() * 1000.0);
    sc.audit.emit(&record);
}

/// Ends a held call as its request ended, and audits the outcome.
async fn conclude(sc: &Sidecar, name: &str, held: &Held, ar: &ApprovalRequest, headers: Option<&HeaderMap>) -> (Value, Vec<Value>) {
    let (result, notifications) = run_or_refuse(sc, name, held, ar, headers).await;
    let status = ar.status.clone().unwrap_or_default();
    let approvers = status.decisions.iter().filter(|d| d.decision == tollgate_api::Verdict::Approve).map(|d| d.user.clone()).collect();
    let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
    let outcome = match status.phase.unwrap_or_default() {
        Phase::Approved if held.server.is_none() || !is_error => Outcome::Approved,
        Phase::Approved => Outcome::UpstreamError,
        Phase::Denied => Outcome::ApprovalDenied,
        Phase::Expired => Outcome::ApprovalExpired,
        Phase::Cancelled | Phase::Pending => Outcome::ApprovalCancelled,
    };
    emit_outcome(sc, held, outcome, is_error, approvers);
    (result, notifications)
}

async fn run_or_refuse(sc: &Sidecar, name: &str, held: &Held, ar: &ApprovalRequest, headers: Option<&HeaderMap>) -> (Value, Vec<Value>) {
    let refused = |text: String| (text_result(&text, true), Vec::new());
    let status = ar.status.clone().unwrap_or_default();
    let last = status.decisions.iter().rev().find(|d| d.decision == tollgate_api::Verdict::Deny);
    match status.phase.unwrap_or_default() {
        Phase::Approved => {
            if ar.spec.sidecar_instance.as_deref() != Some(sc.instance.as_str()) || ar.spec.arguments_digest != held.digest {
                return refused(format!("Access denied: approval request {name} does not match the held call; it will not run"));
            }
            sc.metrics.tool_call("require_approval", "approved");
            match &held.server {
                None => (text_result(&format!("Approved: request {name} was approved ({})", status.approvals.unwrap_or_default()), false), Vec::new()),
                Some(server) => execute(sc, server, held, headers.unwrap_or(&held.headers)).await,
            }
        }
        Phase::Denied => {
            sc.metrics.tool_call("require_approval", "denied");
            let by = last.map(|d| format!(" by {}{}", d.user, d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()));
            refused(format!("Access denied: approval request {name} was denied{}", by.unwrap_or_default()))
        }
        Phase::Expired => {
            sc.metrics.tool_call("require_approval", "expired");
            refused(format!("Access denied: approval request {name} expired before anyone decided"))
        }
        Phase::Cancelled | Phase::Pending => refused(format!("Access denied: approval request {name} was cancelled")),
    }
}

fn text_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// Runs the approved call upstream and returns its `result` (or an `isError` one) and the
/// notifications the server sent on the way.
async fn execute(sc: &Sidecar, server: &Server, held: &Held, headers: &HeaderMap) -> (Value, Vec<Value>) {
    tracing::info!(server = server.name, digest = held.digest, "approved call executed");
    let resp = match sc.upstream.send(server, Method::POST, headers, held.body.clone()).await {
        Ok(r) => r,
        Err(e) => return (text_result(&e.to_string(), true), Vec::new()),
    };
    let messages = match crate::upstream::messages(resp).await {
        Ok(m) => m,
        Err(e) => return (text_result(&format!("MCP server {}: {e}", server.name), true), Vec::new()),
    };
    let (mut answers, notifications): (Vec<Value>, Vec<Value>) =
        messages.into_iter().partition(|m| m.get("result").is_some() || m.get("error").is_some());
    let result = match answers.pop() {
        Some(mut m) => match (m.get_mut("result").map(Value::take), m.get("error")) {
            (Some(result), _) => result,
            (None, Some(err)) => text_result(&format!("MCP server {} answered with an error: {err}", server.name), true),
            _ => text_result("no result", true),
        },
        None => text_result(&format!("MCP server {} sent no result", server.name), true),
    };
    (result, notifications)
}

/// `get_approval_status`: the phase, or, once approved, the held call's result (run once).
async fn get_status(sc: &Sidecar, name: &str, id: Option<&RawValue>, headers: &HeaderMap) -> Vec<u8> {
    let held = sc.held.calls.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
    let Some(held) = held else {
        let text = format!("no held call {name:?} in this sidecar (a request from before a restart is never run)");
        return jsonrpc::tool_text_result(id, &text, true);
    };
    let mut result = held.result.lock().await;
    if let Some(done) = result.as_ref() {
        return jsonrpc::result_response(id, done.clone());
    }
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let ar = match api.get(name).await {
        Ok(ar) => ar,
        Err(e) => return jsonrpc::tool_text_result(id, &format!("cannot read approval request {name}: {e}"), true),
    };
    let status = ar.status.clone().unwrap_or_default();
    if !status.phase.unwrap_or_default().is_final() {
        let text = format!(
            "Approval request {name} is pending ({} approvals); ask again in {POLL_SECONDS} seconds",
            status.approvals.as_deref().unwrap_or("0")
        );
        let pending = json!({
            "content": [{"type": "text", "text": text}],
            "structuredContent": {"status": "pending", "request_id": name, "approvals": status.approvals, "poll_interval_seconds": POLL_SECONDS},
            "isError": false,
        });
        return jsonrpc::result_response(id, pending);
    }
    // The call runs in the session of the poll: the one it was held in may have ended since.
    let (done, _) = conclude(sc, name, &held, &ar, Some(headers)).await;
    *result = Some(done.clone());
    jsonrpc::result_response(id, done)
}

/// Pending requests of an earlier instance of this sidecar can never run (their calls were in
/// its memory); mark them so the operator cancels them.
pub async fn cancel_orphans(sc: &Sidecar) {
    if sc.config.pod.is_empty() {
        return;
    }
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let lp = ListParams::default().labels(&format!("tollgate.dev/pod={}", label_value(&sc.config.pod)));
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "could not list earlier approval requests"),
    };
    for ar in list.items {
        let pending = !ar.status.as_ref().and_then(|s| s.phase).unwrap_or_default().is_final();
        if pending && ar.spec.sidecar_instance.as_deref() != Some(sc.instance.as_str()) {
            let patch = json!({"metadata": {"annotations": {CANCEL_ANNOTATION: "the sidecar that held this call restarted"}}});
            match api.patch(&ar.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(request = ar.name_any(), "marked for cancellation: its sidecar restarted"),
                Err(e) => tracing::warn!(request = ar.name_any(), error = %e, "could not mark for cancellation"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_valid() {
        let n = request_name("Delete_Repository!!");
        assert!(n.starts_with("delete-repository-"), "{n}");
        assert!(n.len() <= 63);
        assert!(request_name("///").starts_with("call-"));
        assert_eq!(label_value("a/b c"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }
}
