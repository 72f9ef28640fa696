//! The MCP endpoint the agent talks to. Only the JSON-RPC envelope is parsed; every method and
//! notification but `tools/list` and `tools/call` is forwarded byte for byte, both ways.

use crate::body::{Body, full, json, streamed};
use crate::snapshot::{Server, Snapshot};
use crate::state::Sidecar;
use crate::upstream::{copy_response_headers, is_event_stream};
use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use tollgate_core::mcp::jsonrpc::{self, Envelope, Incoming as Message};
use tollgate_core::mcp::strict::{self, ReadCall};
use tollgate_core::policy;

/// A request on `/mcp/<server>`, past the checks every request passes first (transport, rights,
/// one reading); `message` is a single message as that reading kept it.
pub(crate) async fn handle(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    method: Method,
    headers: &HeaderMap,
    bytes: Bytes,
    message: Option<strict::Message<'_>>,
) -> Response<Body> {
    if method != Method::POST {
        // GET (the server's stream, resumable with Last-Event-ID) and DELETE (end of session).
        return forward(sc, server, method, headers, Bytes::new(), None).await;
    }
    if let Some(m) = message {
        return single(sc, snapshot, server, headers, &m.envelope, &bytes, m.call).await;
    }
    match jsonrpc::parse(&bytes) {
        Ok(Message::Single(env)) => single(sc, snapshot, server, headers, &env, &bytes, ReadCall::default()).await,
        Ok(Message::Batch(elements)) => batch(sc, snapshot, server, headers, &elements, &bytes).await,
        Err(e) => json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, e.code(), &e.to_string())),
    }
}

/// Whether the firewall decides this message itself rather than passing it through.
fn decided_here(env: &Envelope<'_>) -> bool {
    tollgate_core::mcp::methods::decided_by_firewall(env.method(), env.is_request(), crate::approvals::tasks::is_held_task(env))
}

async fn single(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    bytes: &Bytes,
    read: ReadCall<'_>,
) -> Response<Body> {
    match env.method() {
        Some("tools/call") if env.id.is_none() => crate::tools::refuse_idless(sc, server, env),
        Some("tools/call") => crate::tools::tools_call(sc, snapshot, server, headers, env, bytes, read).await,
        Some("tools/list") if env.is_request() => tools_list(sc, snapshot, server, headers, env, bytes.clone()).await,
        Some("tasks/get" | "tasks/update" | "tasks/cancel") if env.is_request() => {
            let params: Value = env.params.and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
            match crate::approvals::tasks::task_request(&params) {
                Some(request) => crate::approvals::tasks::answer(sc, Some(&server.name), env, request, headers).await,
                None => forward(sc, server, Method::POST, headers, bytes.clone(), env.id).await,
            }
        }
        _ => forward(sc, server, Method::POST, headers, bytes.clone(), env.id).await,
    }
}

/// A batch: `tools/call` and `tools/list` decided one by one, everything else forwarded upstream
/// as one batch of the elements' bytes as sent.
async fn batch(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    elements: &[jsonrpc::Element<'_>],
    bytes: &Bytes,
) -> Response<Body> {
    if !elements.iter().any(|e| e.envelope.as_ref().is_some_and(decided_here)) {
        return forward(sc, server, Method::POST, headers, bytes.clone(), None).await;
    }
    let mut parts: Vec<futures::future::BoxFuture<'_, Response<Body>>> = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for element in elements {
        match &element.envelope {
            None => parts.push(crate::batch::invalid_element()),
            Some(env) if decided_here(env) => {
                let raw = Bytes::copy_from_slice(element.raw.get().as_bytes());
                parts.push(Box::pin(async move { single(sc, snapshot, server, headers, env, &raw, ReadCall::default()).await }));
            }
            Some(_) => rest.push(element.raw.get()),
        }
    }
    if !rest.is_empty() {
        let body = Bytes::from(format!("[{}]", rest.join(",")));
        parts.push(Box::pin(forward(sc, server, Method::POST, headers, body, None)));
    }
    crate::batch::answer(headers, parts).await
}

/// Passes a request through and streams the answer back unchanged.
async fn forward(sc: &Sidecar, server: &Server, method: Method, headers: &HeaderMap, body: Bytes, id: Option<&RawValue>) -> Response<Body> {
    match sc.upstream.send(server, method, headers, body).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut out = Response::new(streamed(body));
            *out.status_mut() = parts.status;
            copy_response_headers(&parts.headers, out.headers_mut(), true);
            out
        }
        Err(e) => json(StatusCode::BAD_GATEWAY, jsonrpc::error_response(id, -32603, &e.to_string())),
    }
}

/// Forwards `tools/list` and rewrites its answer: hidden tools dropped, justification added.
async fn tools_list(sc: &Sidecar, snapshot: &Snapshot, server: &Server, headers: &HeaderMap, env: &Envelope<'_>, body: Bytes) -> Response<Body> {
    if let Some(reason) = snapshot.unavailable(&sc.config.agent, &sc.config.namespace) {
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &reason));
    }
    let (parts, bytes) = match sc.upstream.call(server, Method::POST, headers, body).await {
        Ok(r) => r,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e.to_string())),
    };
    let sse = is_event_stream(&parts.headers);
    let rewrite = |message: &str| -> Option<String> {
        let mut v: Value = serde_json::from_str(message).ok()?;
        let result = v.get_mut("result")?;
        rewrite_listing(sc, snapshot, &server.name, result);
        serde_json::to_string(&v).ok()
    };
    let new_body = if sse {
        let mut parser = tollgate_core::mcp::sse::Parser::default();
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::new();
        // A trailing blank line ends the last event even if the server omitted it.
        for ev in parser.push(&text).unwrap_or_default().into_iter().chain(parser.push("\n\n").unwrap_or_default()) {
            match rewrite(&ev.data) {
                Some(json) if !ev.data.is_empty() => out.push_str(&tollgate_core::mcp::sse::replace_data(&ev, &json)),
                _ => {
                    out.push_str(&ev.raw);
                    out.push_str("\n\n");
                }
            }
        }
        Bytes::from(out)
    } else {
        match std::str::from_utf8(&bytes).ok().and_then(rewrite) {
            Some(json) => Bytes::from(json),
            None => bytes,
        }
    };
    let mut out = Response::new(full(new_body));
    *out.status_mut() = parts.status;
    copy_response_headers(&parts.headers, out.headers_mut(), false);
    out
}

fn rewrite_listing(sc: &Sidecar, snapshot: &Snapshot, server: &str, result: &mut Value) {
    let Some(agent) = &snapshot.agent else { return };
    let refs = snapshot.policy_refs();
    policy::rewrite_tools_list(result, |tool| {
        policy::visible(&refs, agent, server, tool, sc.config.cluster_default).then(|| policy::justification_mode(&refs, server, tool))
    });
    crate::approvals::add_builtin_tools(result);
}
