//! How a held call ends: its request watched until it is final, gone or too late; then, if the
//! request it created approved it by a real quorum, the call runs once; every end is audited.

use super::builtin::GET_STATUS;
use super::registry::{Concluded, Held, POLL_SECONDS};
use super::request;
use crate::snapshot::Server;
use crate::state::Sidecar;
use futures::StreamExt;
use hyper::Method;
use hyper::header::HeaderMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use tollgate_api::{ApprovalRequest, Phase, Verdict};
use tollgate_core::approval::held::{Binding, Seen, may_run, outcome};
use tollgate_core::audit::Outcome;
use tollgate_core::mcp::jsonrpc;

/// How a held call's wait ended.
pub(super) enum Ending {
    /// The request reached a final phase (it is the one the call created).
    Final(Box<ApprovalRequest>),
    /// The request was deleted, or replaced by another of the same name.
    Gone,
    TimedOut,
}

fn is_ours(ar: &ApprovalRequest, held: &Held) -> bool {
    ar.metadata.uid.as_deref() == Some(held.binding.uid.as_str())
}

/// Watches request `name` until it ends, is deleted or replaced, or the call's deadline passes.
pub(super) async fn wait(sc: &Sidecar, name: &str, held: &Held) -> Ending {
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let watch = async {
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        // A relist (the watch restarted) that no longer shows the request means it was deleted
        // while nobody watched.
        let mut listed = false;
        while let Some(ev) = stream.next().await {
            let ar = match ev {
                Ok(Event::Apply(ar) | Event::InitApply(ar)) => ar,
                Ok(Event::Delete(_)) => return Ending::Gone,
                Ok(Event::Init) => {
                    listed = false;
                    continue;
                }
                Ok(Event::InitDone) if !listed => return Ending::Gone,
                Ok(Event::InitDone) => continue,
                Err(e) => {
                    tracing::warn!(request = name, error = %e, "watching the approval request");
                    continue;
                }
            };
            if !is_ours(&ar, held) {
                return Ending::Gone;
            }
            listed = true;
            if ar.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_final) {
                return Ending::Final(Box::new(ar));
            }
        }
        Ending::TimedOut
    };
    let left = held.deadline.saturating_duration_since(Instant::now());
    let ending = tokio::time::timeout(left, watch).await.unwrap_or(Ending::TimedOut);
    if let Ending::Final(ar) = &ending {
        tracing::info!(request = name, phase = ?ar.status.as_ref().and_then(|s| s.phase), "approval request decided");
    }
    ending
}

/// A blocking client hung up before its request ended: the request is cancelled and the call
/// audited as such; it never runs.
pub(super) async fn client_left(sc: &Sidecar, name: &str, held: &Held) {
    request::cancel(sc, name, "the client that made the call went away").await;
    emit_outcome(sc, held, Outcome::ApprovalCancelled, true, Vec::new());
}

/// The held call's outcome record: who approved, and what became of it.
fn emit_outcome(sc: &Sidecar, held: &Held, outcome: Outcome, is_error: bool, approvers: Vec<String>) {
    let mut record = held.audit.clone();
    record.time = jiff::Timestamp::now().to_string();
    record.outcome = Some(outcome);
    record.is_error = is_error;
    record.approvers = approvers;
    record.duration_ms = Some(held.created.elapsed().as_secs_f64() * 1000.0);
    let mut span = held.span.lock().unwrap_or_else(|e| e.into_inner());
    span.in_scope(|| sc.audit.emit(&record));
    // The wait is over: its span ends with the last handle, whoever still holds one.
    *span = tracing::Span::none();
}

/// [`jsonrpc::text_result`] as the value a concluded call carries (upstream answers are values,
/// passed through as the server wrote them).
pub(super) fn text_result(text: &str, is_error: bool) -> Value {
    serde_json::to_value(jsonrpc::text_result(text, is_error)).unwrap_or_default()
}

/// Ends a held call as its wait ended: runs it if it may, and audits the outcome. `headers` are
/// the upstream session's (the poll's, for an async call). With `check_agent`, an agent that is
/// suspended or gone by now gets nothing (async polls are refused before they get here).
pub(super) async fn conclude(sc: &Sidecar, name: &str, held: &Held, ending: Ending, headers: Option<&HeaderMap>, check_agent: bool) -> (Value, Vec<Value>) {
    let refused = |outcome: Outcome, text: String| {
        emit_outcome(sc, held, outcome, true, Vec::new());
        (text_result(&text, true), Vec::new())
    };
    let ar = match ending {
        Ending::Final(ar) => ar,
        Ending::Gone => {
            return refused(Outcome::ApprovalCancelled, format!("Access denied: approval request {name} was deleted; the held call will not run"));
        }
        Ending::TimedOut => return refused(Outcome::Timeout, format!("Access denied: approval request {name} was not decided in time")),
    };
    let status = ar.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    crate::trace::decided_by_people(&held.span(), &status.decisions);
    let approvers: Vec<String> = status.decisions.iter().filter(|d| d.decision == Verdict::Approve).map(|d| d.user.clone()).collect();
    let (result, notifications) = match phase {
        Phase::Approved => {
            let snapshot = sc.snapshot.load();
            if check_agent && let Err(refusal) = snapshot.agent_access(&sc.config.agent, &sc.config.namespace) {
                let _ = snapshot;
                return refused(Outcome::ApprovalCancelled, format!("Access denied: {refusal}"));
            }
            let seen = Seen {
                name,
                binding: Binding {
                    uid: ar.metadata.uid.clone().unwrap_or_default(),
                    agent: ar.spec.agent.clone(),
                    sidecar_instance: ar.spec.sidecar_instance.clone().unwrap_or_default(),
                    workflow: ar.spec.workflow.clone(),
                    server: ar.spec.server.clone(),
                    tool: ar.spec.tool.clone(),
                    digest: ar.spec.arguments_digest.clone(),
                },
                requested_at: ar.spec.requested_at.0,
                decisions: &status.decisions,
                escalated_at: status.escalated_at.as_ref().map(|t| t.0),
            };
            if let Err(unbound) = may_run(&held.binding, &seen, &held.workflow, jiff::Timestamp::now()) {
                tracing::warn!(request = name, %unbound, "approved request does not bind the held call");
                return refused(Outcome::ApprovalCancelled, format!("Access denied: {unbound}"));
            }
            sc.metrics.tool_call("require_approval", "approved");
            match &held.server {
                None => (text_result(&format!("Approved: request {name} was approved ({})", status.approvals.clone().unwrap_or_default()), false), Vec::new()),
                Some(server) => {
                    let headers = headers.map_or_else(|| held.headers.clone(), |poll| crate::upstream::with_routing_of(poll, &held.headers));
                    execute(sc, server, held, &headers).await
                }
            }
        }
        Phase::Denied => {
            sc.metrics.tool_call("require_approval", "denied");
            let last = status.decisions.iter().rev().find(|d| d.decision == Verdict::Deny);
            let by = last.map(|d| format!(" by {}{}", d.user, d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()));
            (text_result(&format!("Access denied: approval request {name} was denied{}", by.unwrap_or_default()), true), Vec::new())
        }
        Phase::Expired => {
            sc.metrics.tool_call("require_approval", "expired");
            (text_result(&format!("Access denied: approval request {name} expired before anyone decided"), true), Vec::new())
        }
        Phase::Cancelled | Phase::Pending => (text_result(&format!("Access denied: approval request {name} was cancelled"), true), Vec::new()),
    };
    let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
    emit_outcome(sc, held, outcome(phase, is_error, held.server.is_none()), is_error, approvers);
    (result, notifications)
}

/// Runs the approved call upstream and returns its `result` (or an `isError` one) and the
/// notifications the server sent on the way.
async fn execute(sc: &Sidecar, server: &Server, held: &Held, headers: &HeaderMap) -> (Value, Vec<Value>) {
    tracing::info!(server = server.name, digest = held.binding.digest, "approved call executed");
    let messages = match sc.upstream.messages(server, Method::POST, headers, held.body.clone()).await {
        Ok((_, m)) => m,
        Err(e) => return (text_result(&e.to_string(), true), Vec::new()),
    };
    let (mut answers, notifications): (Vec<Value>, Vec<Value>) = messages.into_iter().partition(|m| m.get("result").is_some() || m.get("error").is_some());
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

/// Where a held call stands when polled.
pub(super) enum Poll {
    /// No such held call here: unknown, pruned, or from before a restart.
    Unknown,
    /// Its request is still pending, with this many approvals.
    Pending { approvals: Option<String> },
    /// It ended: its result (the call's own, or an `isError` one saying why it did not run).
    Done(Concluded),
    /// The request could not be read; the poll may be repeated.
    Unreadable(String),
}

/// One poll of held call `name`: its state, or, once its request ended, its answer. The call is
/// concluded once, in a task of its own: a poll that hangs up mid-run does not stop it, and the
/// next poll gets its result. The call runs in the session of the poll (`headers`): the one it
/// was held in may have ended since.
pub(super) async fn poll(sc: &Arc<Sidecar>, name: &str, headers: &HeaderMap) -> Poll {
    let Some(held) = sc.held.get(name) else { return Poll::Unknown };
    if let Some(done) = held.answer.get() {
        return Poll::Done(done.clone());
    }
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let ending = match api.get_opt(name).await {
        Ok(Some(ar)) if !is_ours(&ar, &held) => Ending::Gone,
        Ok(None) => Ending::Gone,
        Ok(Some(ar)) if ar.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_final) => Ending::Final(Box::new(ar)),
        Ok(Some(_)) if Instant::now() >= held.deadline => Ending::TimedOut,
        Ok(Some(ar)) => return Poll::Pending { approvals: ar.status.and_then(|s| s.approvals) },
        Err(e) => return Poll::Unreadable(format!("cannot read approval request {name}: {e}")),
    };
    let (sc2, name2, headers2) = (sc.clone(), name.to_owned(), headers.clone());
    let span = held.span();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let answer = held
                .answer
                .get_or_init(|| async {
                    let (result, _) = conclude(&sc2, &name2, &held, ending, Some(&headers2), true).await;
                    let _ = held.answered_at.set(Instant::now());
                    Concluded { result, by_client: false }
                })
                .await;
            answer.clone()
        },
        span,
    ));
    match task.await {
        Ok(done) => Poll::Done(done),
        Err(e) => Poll::Unreadable(format!("running the held call failed: {e}")),
    }
}

/// The client gave up on held call `name` (`tasks/cancel`): unless it already ended, its request
/// is cancelled and it never runs. `Err` with the answer it ended with when too late.
pub(super) async fn cancel_by_client(sc: &Sidecar, name: &str) -> Result<(), Concluded> {
    let Some(held) = sc.held.get(name) else { return Ok(()) };
    let mut ours = false;
    let done = held
        .answer
        .get_or_init(|| async {
            ours = true;
            request::cancel(sc, name, "the agent cancelled the task").await;
            emit_outcome(sc, &held, Outcome::ApprovalCancelled, true, Vec::new());
            let _ = held.answered_at.set(Instant::now());
            Concluded {
                result: text_result(&format!("Cancelled: the held call of approval request {name} was cancelled by the agent; it did not run"), true),
                by_client: true,
            }
        })
        .await;
    if ours { Ok(()) } else { Err(done.clone()) }
}

/// `get_approval_status`: the phase, or, once the request ended, the held call's answer.
pub(super) async fn get_status(sc: &Arc<Sidecar>, name: &str, id: Option<&RawValue>, headers: &HeaderMap) -> Vec<u8> {
    match poll(sc, name, headers).await {
        Poll::Unknown => jsonrpc::tool_text_result(id, &format!("no held call {name:?} in this sidecar (a request from before a restart is never run)"), true),
        Poll::Done(done) => jsonrpc::result_response(id, done.result),
        Poll::Pending { approvals } => {
            let text = format!("Approval request {name} is pending ({} approvals); ask again in {POLL_SECONDS} seconds", approvals.as_deref().unwrap_or("0"));
            let structured = json!({"status": "pending", "request_id": name, "approvals": approvals, "poll_interval_seconds": POLL_SECONDS});
            jsonrpc::typed_response(id, &jsonrpc::text_result_with(text, structured))
        }
        Poll::Unreadable(e) => jsonrpc::tool_text_result(id, &format!("{e}; ask again with {GET_STATUS}"), true),
    }
}
