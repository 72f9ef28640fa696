//! Held calls (DESIGN §3.2, §3.3): an `ApprovalRequest` per held call, then either a blocking
//! answer (with progress notifications) or, in async mode, a pending result the agent polls with
//! `get_approval_status`, which runs the approved call exactly once.
//!
//! A held call is bound to the request object it created (`tollgate_core::approval::held`): its UID and
//! spec, and the quorum of the workflow it was held under. Once its request has ended it is
//! concluded in a task of its own, so a client that hangs up neither runs it twice nor leaves it
//! unaudited.

mod builtin;
mod registry;
mod request;
mod settle;
pub(crate) mod tasks;

pub use builtin::{BUILTIN_SERVER, GET_STATUS, REQUEST_APPROVAL, add_builtin_tools};
use registry::POLL_SECONDS;
pub use registry::{Held, MAX_HELD, Registry};

pub use request::{CANCEL_ANNOTATION, cancel_orphans};

use crate::body::header;
use crate::body::json;
use crate::body::{Body, channel};
use crate::call::CallContext;
use crate::snapshot::{Server, Snapshot};
use crate::state::Sidecar;
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_core::approval::held::{Binding, hold_deadline};
use tollgate_core::audit::{Outcome, RecordKind};
use tollgate_core::json_tree::Tree;
use tollgate_core::mcp::jsonrpc::{self, Envelope, ToolCallParams};
use tollgate_core::policy::{self, Action, Args, DecidedBy};

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
    let args: Value = call.arguments.and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
    match call.name.as_str() {
        GET_STATUS => {
            let id = args.get("request_id").and_then(Value::as_str).unwrap_or_default();
            Some(json(StatusCode::OK, settle::get_status(sc, id, env.id, headers).await))
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
    // Decided and recorded as any call is: refused while its records could not be kept.
    if sc.audit.refuses_call() {
        return crate::call::refused_unwritten(sc, env.id);
    }
    let reasoning = args.get("reasoning").and_then(Value::as_str).filter(|r| !r.trim().is_empty());
    let arguments = json!({"operation": args.get("operation"), "context": args.get("context")});
    let refs = snapshot.policy_refs();
    let workflows = |w: &str| snapshot.workflows.contains_key(w);
    let arguments = Tree::borrowed(&arguments);
    let args = Args::tree(&arguments);
    let call = policy::Call { agent, server: BUILTIN_SERVER, tool: REQUEST_APPROVAL, args: &args, justification: reasoning, now: jiff::Timestamp::now() };
    let mut decision = policy::decide(&refs, &call, &workflows, Action::Deny);
    // A rate limit on its rule holds for it as for any tool.
    let limited = sc.limits.apply(&mut decision, BUILTIN_SERVER, REQUEST_APPROVAL);
    let standalone = Server::local(BUILTIN_SERVER.into(), server.timeout);
    let ctx = CallContext {
        sc,
        server: &standalone,
        tool: REQUEST_APPROVAL,
        arguments: &arguments,
        raw_arguments: None,
        justification: reasoning,
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    if decision.action != Action::RequireApproval {
        let text = match decision.action {
            Action::Deny if decision.decided_by != DecidedBy::ClusterDefault => format!("Access denied: {}", decision.deny_message()),
            _ => format!(
                "request_approval needs a ToolPolicy rule for server {BUILTIN_SERVER:?}, tool {REQUEST_APPROVAL:?} with action RequireApproval and an approvalWorkflow"
            ),
        };
        // Not held, so refused. The records say what the rules decided (an `allow` is refused
        // too: the tool does nothing but ask) and that the call was refused.
        ctx.audit(RecordKind::Decision, None, false, None, None);
        ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, None);
        let decided = if decision.action == Action::Allow { "allow" } else { "deny" };
        sc.metrics.tool_call(decided, if limited.is_some() { "rate_limited" } else { "not_held" });
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &text, true));
    }
    hold(&ctx, headers, env.id.map(|i| i.get().to_owned()), Bytes::new(), None, false).await
}

/// Creates the request and answers as the workflow says: at once (async) or when decided. A
/// client that declared the tasks extension (`as_task`) gets a task it polls, whatever the mode.
pub(crate) async fn hold(
    ctx: &CallContext<'_>,
    headers: &HeaderMap,
    id: Option<String>,
    body: Bytes,
    progress: Option<Value>,
    as_task: bool,
) -> Response<Body> {
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
    let polled = workflow.async_mode || as_task;
    if polled && sc.held.len() >= MAX_HELD {
        return refuse(&format!("Access denied: this sidecar already holds {MAX_HELD} calls for approval; try again later"));
    }
    let digest = ctx.digest().to_owned();
    let (name, uid) = match request::create(ctx, &workflow_name, &digest).await {
        Ok(created) => created,
        Err(e) => {
            sc.metrics.tool_call("require_approval", "request_failed");
            return refuse(&format!("Access denied: approval is required, but the approval request could not be created: {e}"));
        }
    };
    ctx.audit(RecordKind::Decision, None, false, Some(&name), None);
    tracing::info!(
        request = name,
        server = ctx.server.name,
        tool = ctx.tool,
        workflow = workflow_name,
        r#async = workflow.async_mode,
        as_task,
        "call held for approval"
    );
    let server = (ctx.server.name != BUILTIN_SERVER).then(|| ctx.server.clone());
    let audit = ctx.held_record(&name);
    let binding = Binding {
        uid,
        agent: sc.config.agent.clone(),
        sidecar_instance: sc.instance.clone(),
        workflow: workflow_name.clone(),
        server: ctx.server.name.clone(),
        tool: ctx.tool.to_owned(),
        digest,
    };
    let created = Instant::now();
    let deadline = created + hold_deadline(workflow.timeout, workflow.escalation_after);
    let span = crate::trace::approval_wait(&tracing::Span::current(), &sc.config.namespace, &name, &workflow_name);
    let held = Arc::new(Held {
        audit,
        created,
        deadline,
        server,
        headers: headers.clone(),
        body,
        binding,
        workflow: workflow.rules.clone(),
        answer: tokio::sync::OnceCell::new(),
        answered_at: std::sync::OnceLock::new(),
        span: std::sync::Mutex::new(span),
    });

    if polled {
        return match answer_polled(sc, &name, held, &workflow_name, id.as_deref(), as_task).await {
            Ok(r) => r,
            Err(text) => refuse(&text),
        };
    }
    answer_blocking(sc.clone(), name, held, headers, id, progress)
}

/// A held call the agent polls (`get_approval_status`, or a task): kept in the registry, and
/// answered at once with how to poll; why not, when the registry is full.
async fn answer_polled(
    sc: &Arc<Sidecar>,
    name: &str,
    held: Arc<Held>,
    workflow_name: &str,
    id: Option<&RawValue>,
    as_task: bool,
) -> Result<Response<Body>, String> {
    let view = as_task.then(|| tasks::created(name, &held));
    if !sc.held.insert(name.to_owned(), held) {
        request::cancel(sc, name, "the sidecar holds too many calls").await;
        return Err(format!("Access denied: this sidecar already holds {MAX_HELD} calls for approval; try again later"));
    }
    sc.metrics.tool_call("require_approval", "pending");
    if let Some(view) = view {
        return Ok(json(StatusCode::OK, jsonrpc::typed_response(id, &view)));
    }
    let text = format!(
        "Approval required: request {name} is pending with workflow {workflow_name}. Call {GET_STATUS} with request_id \"{name}\" every {POLL_SECONDS} seconds; once approved it runs the call and returns its result."
    );
    let result = jsonrpc::text_result_with(text, json!({"status": "pending", "request_id": name, "poll_interval_seconds": POLL_SECONDS}));
    Ok(json(StatusCode::OK, jsonrpc::typed_response(id, &result)))
}

/// A held call the client waits on: the answer is written when the request ends, by a task that
/// outlives the client's connection, so a client that hangs up still gets its call cancelled (or
/// finished) and audited. With SSE, progress notifications while it waits.
fn answer_blocking(sc: Arc<Sidecar>, name: String, held: Arc<Held>, headers: &HeaderMap, id: Option<Box<RawValue>>, progress: Option<Value>) -> Response<Body> {
    let wants_sse = headers.get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    let (tx, body) = channel();
    let interval = Duration::from_secs(sc.config.progress_interval_seconds.max(1));
    // The call's span lasts as long as the client waits; the ending runs in the wait's.
    let (call_span, wait_span) = (tracing::Span::current(), held.span());
    let waiting = async move {
        let started = Instant::now();
        let ending = {
            let ended = settle::wait(&sc, &name, &held);
            tokio::pin!(ended);
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            let mut n = 0u64;
            loop {
                tokio::select! {
                    e = &mut ended => break Some(e),
                    () = tx.closed() => break None,
                    _ = ticks.tick() => {
                        if let (Some(token), true) = (&progress, wants_sse) {
                            n += 1;
                            tracing::debug!(request = name, n, "progress notification sent");
                            let msg = format!("waiting for approval of {name} ({}s)", started.elapsed().as_secs());
                            let _ = tx.send(Bytes::from(tollgate_core::mcp::sse::message_event(&jsonrpc::progress_notification(token, n, &msg)))).await;
                        }
                    }
                }
            }
        };
        let Some(ending) = ending else {
            settle::client_left(&sc, &name, &held).await;
            return;
        };
        let (result, notifications) = settle::conclude(&sc, &name, &held, ending, None, true).await;
        let message = jsonrpc::result_response(id.as_deref(), result);
        if !wants_sse {
            let _ = tx.send(Bytes::from(message)).await;
            return;
        }
        // What the server sent while running the call (its own progress, logs) goes first.
        for n in notifications {
            let _ = tx.send(Bytes::from(tollgate_core::mcp::sse::message_event(n.to_string().as_bytes()))).await;
        }
        let _ = tx.send(Bytes::from(tollgate_core::mcp::sse::message_event(&message))).await;
        drop(call_span);
    };
    tokio::spawn(tracing::Instrument::instrument(waiting, wait_span));
    let mut r = Response::new(body);
    let content_type = if wants_sse { "text/event-stream" } else { "application/json" };
    r.headers_mut().insert(CONTENT_TYPE, header(content_type));
    r.headers_mut().insert("cache-control", header("no-cache"));
    r
}
