//! Held calls as tasks (the 2026-07-28 tasks extension): a client that declared the extension
//! gets a task for a held call and polls it with `tasks/get`, which runs the approved call exactly
//! once, as `get_approval_status` does; `tasks/cancel` ends it unrun. Task ids the sidecar made
//! are answered here and never forwarded; every other task is the server's.

use super::registry::{Concluded, Held, POLL_SECONDS};
use super::settle::{self, Poll};
use crate::body::{Body, json};
use crate::state::Sidecar;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use rmcp::model::CreateTaskResult;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tollgate_core::mcp::jsonrpc::{self, Envelope};
use tollgate_core::mcp::tasks::{self, Status, View};

const INVALID_PARAMS: i64 = -32602;

/// The approval request behind a `tasks/*` request's task, when the task is a held call's.
pub(crate) fn task_request(params: &Value) -> Option<&str> {
    tasks::requested_id(params).and_then(tasks::request_of)
}

/// Whether a message is a `tasks/*` request for a task this sidecar made.
pub(crate) fn is_held_task(env: &Envelope<'_>) -> bool {
    env.is_request()
        && matches!(env.method(), Some("tasks/get" | "tasks/update" | "tasks/cancel"))
        && env.params.and_then(|p| serde_json::from_str::<Value>(p).ok()).is_some_and(|p| task_request(&p).is_some())
}

/// When an `Instant` of this process was, on the wall clock.
fn wall(at: Instant) -> jiff::Timestamp {
    let ago = jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
    jiff::Timestamp::now().checked_sub(ago).unwrap_or_else(|_| jiff::Timestamp::now())
}

fn view(name: &str, held: &Held, status: Status, message: String, result: Option<Value>) -> View {
    let created_at = wall(held.created);
    View {
        id: tasks::held_id(name),
        status,
        message,
        created_at,
        updated_at: held.answered_at.get().map_or(created_at, |at| wall(*at)),
        ttl_ms: u64::try_from(held.deadline.saturating_duration_since(held.created).as_millis()).unwrap_or(u64::MAX),
        poll_interval_ms: POLL_SECONDS * 1000,
        result,
    }
}

fn waiting(name: &str, held: &Held, approvals: Option<&str>) -> View {
    let message = format!("waiting for approval: request {name} ({} approvals) under workflow {}", approvals.unwrap_or("0"), held.binding.workflow);
    view(name, held, Status::Working, message, None)
}

fn ended(name: &str, held: &Held, done: Concluded) -> View {
    if done.by_client {
        return view(name, held, Status::Cancelled, format!("cancelled by the agent before approval request {name} ended"), None);
    }
    let failed = done.result.get("isError").and_then(Value::as_bool).unwrap_or(false);
    let message = if failed { format!("approval request {name} ended; the call did not succeed") } else { format!("approved: request {name}; the call ran") };
    view(name, held, Status::Completed, message, Some(done.result))
}

/// The answer to the `tools/call` that held the call.
pub(super) fn created(name: &str, held: &Held) -> CreateTaskResult {
    waiting(name, held, None).created()
}

/// A `tasks/*` request for a held call's task (`request` is its approval request). On
/// `/mcp/<server>`, `server` names the endpoint: a task held for another server is not found.
pub(crate) async fn answer(sc: &Arc<Sidecar>, server: Option<&str>, env: &Envelope<'_>, request: &str, headers: &HeaderMap) -> Response<Body> {
    let unknown = || {
        let text = format!("unknown task {}: no call held here under that id (a held call does not survive a restart)", tasks::held_id(request));
        json(StatusCode::OK, jsonrpc::error_response(env.id, INVALID_PARAMS, &text))
    };
    let Some(held) = sc.held.get(request) else { return unknown() };
    if server.is_some_and(|s| held.server.as_ref().map(|h| h.name.as_str()) != Some(s)) {
        return unknown();
    }
    let result = match env.method() {
        Some("tasks/get") => match settle::poll(sc, request, headers).await {
            Poll::Unknown => return unknown(),
            Poll::Pending { approvals } => waiting(request, &held, approvals.as_deref()).current(),
            Poll::Done(done) => ended(request, &held, done).current(),
            Poll::Unreadable(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e)),
        },
        Some("tasks/cancel") => match settle::cancel_by_client(sc, request).await {
            Ok(()) => view(request, &held, Status::Cancelled, format!("cancelled by the agent; approval request {request} was withdrawn"), None).current(),
            Err(_) => {
                let text = format!("task {} has already ended; it cannot be cancelled", tasks::held_id(request));
                return json(StatusCode::OK, jsonrpc::error_response(env.id, INVALID_PARAMS, &text));
            }
        },
        _ => {
            let text = format!("task {} waits for a human's approval and takes no input", tasks::held_id(request));
            return json(StatusCode::OK, jsonrpc::error_response(env.id, INVALID_PARAMS, &text));
        }
    };
    json(StatusCode::OK, jsonrpc::typed_response(env.id, &result))
}
