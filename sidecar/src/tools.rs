//! `tools/call`, on either endpoint: decided by `tollgate-core`, then denied, forwarded, or held
//! for approval; an id-less call is refused.

use crate::body::{Body, json};
use crate::call::CallContext;
use crate::snapshot::{Server, Snapshot};
use crate::state::Sidecar;
use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;
use tollgate_core::audit::{Outcome, RecordKind};
use tollgate_core::json_tree::Tree;
use tollgate_core::mcp::jsonrpc::{self, Envelope};
use tollgate_core::mcp::strict::ReadCall;
use tollgate_core::policy::{self, Action, Args, Decision};

/// A `tools/call` refused before any decision (no id, routing headers that lie about it): a
/// JSON-RPC error with `status`, and the refusal audited.
pub(crate) fn refuse_invalid(sc: &Arc<Sidecar>, server: &Server, env: &Envelope<'_>, message: &str, status: StatusCode, code: i64) -> Response<Body> {
    // Its records are written as any call's: not while they could not be kept.
    if sc.audit.refuses_call() {
        sc.metrics.tool_call("deny", "audit_unwritten");
        return json(status, jsonrpc::error_response(env.id, code, crate::audit::AUDIT_UNWRITTEN));
    }
    let tool = jsonrpc::tool_call_params(env.params).map(|c| c.name).unwrap_or_default();
    let decision = Decision::refused(policy::DecidedBy::InvalidRequest, message);
    let ctx = CallContext {
        sc,
        server,
        tool: &tool,
        arguments: &Tree::Null,
        raw_arguments: None,
        justification: None,
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    ctx.audit(RecordKind::Decision, None, false, None, None);
    ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, None);
    sc.metrics.tool_call("deny", "invalid_request");
    json(status, jsonrpc::error_response(env.id, code, message))
}

/// A `tools/call` without an id (or with `"id": null`): as a notification it would run with no
/// answer to anyone; refused with a JSON-RPC error, and audited.
pub(crate) fn refuse_idless(sc: &Arc<Sidecar>, server: &Server, env: &Envelope<'_>) -> Response<Body> {
    refuse_invalid(sc, server, env, "a tools/call must carry an id: without one it is never forwarded", StatusCode::BAD_REQUEST, -32600)
}

/// A `tools/call`: decided, then denied, forwarded, or held for approval. What the strict check
/// did not keep in `read` is read here from `env`.
pub(crate) async fn tools_call(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    raw: &Bytes,
    read: ReadCall<'_>,
) -> Response<Body> {
    let started = Instant::now();
    let call = match read.params.map_or_else(|| jsonrpc::tool_call_params(env.params), Ok) {
        Ok(c) => c,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &e)),
    };
    let span = crate::trace::tools_call((&sc.config.namespace, &sc.config.agent), &server.name, &call.name, env, headers, call.meta.as_ref());
    tracing::Instrument::instrument(decide_and_act(sc, snapshot, server, headers, env, raw, call, read.arguments, started), span).await
}

#[allow(clippy::too_many_arguments)]
async fn decide_and_act(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    raw: &Bytes,
    call: jsonrpc::ToolCallParams<'_>,
    read: Option<Tree<'_>>,
    started: Instant,
) -> Response<Body> {
    if let Some(resp) = crate::approvals::builtin(sc, snapshot, server, headers, env, &call).await {
        return resp;
    }
    if let Some(reason) = snapshot.unavailable(&sc.config.agent, &sc.config.namespace) {
        sc.metrics.tool_call("deny", "not_loaded");
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("Access denied: {reason}"), true));
    }
    if sc.audit.refuses_call() {
        return crate::call::refused_unwritten(sc, env.id);
    }
    let Some(agent) = snapshot.agent.as_ref() else {
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, "Access denied: no agent", true));
    };
    let arguments: Tree<'_> = match (read, call.arguments) {
        (_, None) => Tree::Object(Default::default()),
        (Some(v), Some(_)) => v,
        (None, Some(a)) => match tollgate_core::json_tree::parse(a) {
            Ok(v) => v,
            Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &format!("invalid arguments: {e}"))),
        },
    };
    let refs = snapshot.policy_refs();
    let mode = policy::justification_mode(&refs, &server.name, &call.name);
    let split = policy::split_justification(arguments, mode);
    let workflows = |w: &str| snapshot.workflows.contains_key(w);
    let args = Args::tree(&split.arguments);
    let decided =
        policy::Call { agent, server: &server.name, tool: &call.name, args: &args, justification: split.justification.as_deref(), now: jiff::Timestamp::now() };
    let mut decision = policy::decide(&refs, &decided, &workflows, sc.config.cluster_default);
    let limited = sc.limits.apply(&mut decision, &server.name, &call.name);
    let ctx = CallContext {
        sc,
        server,
        tool: &call.name,
        arguments: &split.arguments,
        // Without a justification taken out, the arguments are what the agent sent.
        raw_arguments: if mode.is_none() { call.arguments } else { None },
        justification: split.justification.as_deref(),
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    if decision.action == Action::Deny {
        // An allowed call's decision record is written as it goes upstream (`forward_recorded`);
        // a held call's names its request: `hold` writes it.
        ctx.audit(RecordKind::Decision, None, false, None, None);
    }
    tracing::debug!(action = ?decision.action, by = %decision.decided_by, correlation = ctx.correlation, "tools/call decided");
    note_shadow(sc, &decision, &ctx.correlation, &server.name, &call.name);

    let forward_body = without_justification(env, mode.is_some(), &split.arguments, raw);
    match decision.action {
        Action::Deny => {
            sc.metrics.tool_call("deny", if limited.is_some() { "rate_limited" } else { "denied" });
            ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, Some(started));
            match limited {
                Some(l) => json(StatusCode::OK, rate_limited(env.id, &l)),
                None => json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("Access denied: {}", decision.deny_message()), true)),
            }
        }
        Action::Allow => {
            sc.metrics.tool_call("allow", "forwarded");
            let resp = ctx.forward_recorded(call_upstream(sc, server, headers, forward_body, env.id)).await;
            let outcome = if resp.status() == StatusCode::OK { Outcome::Forwarded } else { Outcome::UpstreamError };
            ctx.audit_after_answer(outcome, outcome != Outcome::Forwarded, started);
            resp
        }
        Action::RequireApproval => {
            let progress = call.meta.as_ref().and_then(|m| m.progress_token.clone());
            let (forward_body, as_task) = as_plain_call(forward_body);
            crate::approvals::hold(&ctx, headers, env.id.map(|i| i.get().to_owned()), forward_body, progress, as_task).await
        }
    }
}

/// A JSON-RPC error for a call over a rate limit, saying when to retry (in its message and as
/// `data.retryAfterSeconds`). The code is in the range JSON-RPC leaves to servers.
fn rate_limited(id: Option<&RawValue>, l: &crate::limits::Refused) -> Vec<u8> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": RATE_LIMITED, "message": l.message, "data": {"retryAfterSeconds": l.retry_after_secs}}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The JSON-RPC error code of a call over a rate limit.
pub const RATE_LIMITED: i64 = -32029;

/// What goes upstream: the call without its justification (taken out when the tool has a
/// justification mode), else the body as the agent sent it.
fn without_justification(env: &Envelope<'_>, split: bool, arguments: &Tree<'_>, raw: &Bytes) -> Bytes {
    if !split {
        return raw.clone();
    }
    match env.params.map(|p| jsonrpc::with_arguments(env.id, p, arguments)) {
        Some(Ok(b)) => Bytes::from(b),
        _ => raw.clone(),
    }
}

/// An audited rule that would have decided otherwise: counted, and logged (its record says it too).
fn note_shadow(sc: &Sidecar, decision: &policy::Decision, correlation: &str, server: &str, tool: &str) {
    let Some(shadow) = &decision.shadow else { return };
    let would = match shadow.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::RequireApproval => "require_approval",
    };
    sc.metrics.shadow("tool", would);
    tracing::info!(would, by = %shadow.decided_by, correlation, server, tool, "an audited rule would have decided otherwise");
}

/// A held call made by a client that declared the tasks extension is answered with a task the
/// sidecar owns; it then runs upstream as a plain call, so its result is the call's own and not
/// a task of the server's. The body and whether it declared the extension.
fn as_plain_call(body: Bytes) -> (Bytes, bool) {
    let Ok(mut message) = serde_json::from_slice::<Value>(&body) else { return (body, false) };
    let Some(params) = message.get_mut("params").filter(|p| tollgate_core::mcp::tasks::declared(p)) else { return (body, false) };
    tollgate_core::mcp::tasks::undeclare(params);
    match serde_json::to_vec(&message) {
        Ok(plain) => (Bytes::from(plain), true),
        Err(_) => (body, false),
    }
}

/// Forwards an allowed call; a down, slow, huge or broken answer is an `isError` result naming
/// the server.
pub(crate) async fn call_upstream(sc: &Sidecar, server: &Server, headers: &HeaderMap, body: Bytes, id: Option<&RawValue>) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + server.timeout;
    match sc.upstream.send(server, Method::POST, headers, body).await {
        Ok(resp) => crate::answer::relay(resp, server, id, sc.upstream.max_answer, deadline).await,
        Err(e) => crate::answer::upstream_error(id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_held_task_runs_upstream_as_a_plain_call_and_other_bodies_pass_as_they_are() {
        let declared = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "deploy", "arguments": {"env": "prod"},
            "_meta": {"io.modelcontextprotocol/clientCapabilities": {"extensions": {(tollgate_core::mcp::tasks::EXTENSION): {}, "other": {}}}}}});
        let (plain, was) = as_plain_call(Bytes::from(declared.to_string()));
        assert!(was);
        let sent: Value = serde_json::from_slice(&plain).unwrap_or_default();
        assert_eq!(sent["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]["extensions"], json!({"other": {}}));
        assert_eq!(sent["params"]["arguments"], json!({"env": "prod"}), "the call itself is untouched");
        for body in [r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#, "not json"] {
            let (same, was) = as_plain_call(Bytes::from(body));
            assert_eq!((same.as_ref(), was), (body.as_bytes(), false));
        }
    }
}
