//! JSON-RPC batches (MCP 2025-03-26 allows them; later revisions dropped them). The firewall
//! answers the elements it decides one by one, sends the rest upstream together, and joins the
//! answers into one reply: a JSON array of the responses, or, when the client accepts SSE, one
//! stream with every message (notifications too).

use crate::body::header;
use crate::body::json;
use crate::body::{Body, full};
use crate::upstream::messages;
use futures::future::BoxFuture;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tollgate_core::mcp::jsonrpc;

/// The answer to an element that is not a JSON-RPC message.
pub(crate) fn invalid_element() -> BoxFuture<'static, Response<Body>> {
    Box::pin(async { json(StatusCode::OK, jsonrpc::error_response(None, -32600, "batch element is not a JSON-RPC message")) })
}

/// Runs the parts concurrently and joins what they answered.
pub(crate) async fn answer(headers: &HeaderMap, parts: Vec<BoxFuture<'_, Response<Body>>>) -> Response<Body> {
    let mut all: Vec<Value> = Vec::new();
    for resp in futures::future::join_all(parts).await {
        match messages(resp).await {
            Ok(m) => all.extend(m),
            Err(e) => all.push(serde_json::from_slice(&jsonrpc::error_response(None, -32603, &e)).unwrap_or(Value::Null)),
        }
    }
    let is_response = |m: &Value| m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some());
    if !all.iter().any(is_response) {
        // Only notifications and responses went in: nothing to answer (Streamable HTTP's 202).
        let mut r = Response::new(full(Vec::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    }
    let sse = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    if sse {
        let mut out = Vec::new();
        for m in &all {
            out.extend_from_slice(&tollgate_core::mcp::sse::message_event(m.to_string().as_bytes()));
        }
        let mut r = Response::new(full(out));
        r.headers_mut().insert(CONTENT_TYPE, header("text/event-stream"));
        return r;
    }
    let responses: Vec<Value> = all.into_iter().filter(is_response).collect();
    json(StatusCode::OK, serde_json::to_vec(&responses).unwrap_or_default())
}
