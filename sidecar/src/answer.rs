//! The answer to an allowed `tools/call`, as the agent gets it: a JSON answer read whole within
//! the server's size and time bounds; an SSE answer passed through event by event (progress
//! arrives as it is sent), within the same bounds. Whatever goes wrong (too large, too slow,
//! broken off, malformed, or no result at all) ends in an `isError` result naming the server,
//! never in a hung or half-answered agent.

use crate::body::header;
use crate::body::json;
use crate::body::{Body, channel, full};
use crate::snapshot::Server;
use crate::upstream::{UpstreamError, copy_response_headers, is_event_stream, read_body};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::value::RawValue;
use tollgate_core::{mcp::jsonrpc, mcp::sse};

/// An `isError` result for the call `id`, saying what went wrong upstream.
pub fn upstream_error(id: Option<&RawValue>, e: &UpstreamError) -> Response<Body> {
    let mut r = json(StatusCode::OK, jsonrpc::tool_text_result(id, &e.to_string(), true));
    // Not a proxy failure the client should retry blindly: the answer is in the body.
    r.headers_mut().insert("x-tollgate-upstream-error", header("1"));
    r
}

/// The agent's response for the upstream's `resp` to the call `id`.
pub async fn relay(
    resp: Response<hyper::body::Incoming>,
    server: &Server,
    id: Option<&RawValue>,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let sse = is_event_stream(&parts.headers);
    let out = if sse {
        let id = id.map(|i| i.get().to_owned());
        let (tx, out) = channel();
        tokio::spawn(pump(body, server.clone(), id, limit, deadline, tx));
        out
    } else {
        match read_body(body, limit, deadline, server).await {
            Ok(bytes) => full(bytes),
            Err(e) => return upstream_error(id, &e),
        }
    };
    let mut r = Response::new(out);
    *r.status_mut() = parts.status;
    copy_response_headers(&parts.headers, r.headers_mut(), !sse);
    r
}

/// Copies an SSE answer event by event; stops with an error result for `id` when the server
/// breaks a bound or ends without answering.
async fn pump(
    mut body: hyper::body::Incoming,
    server: Server,
    id: Option<String>,
    limit: usize,
    deadline: tokio::time::Instant,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let id_raw = id.as_deref().and_then(|i| RawValue::from_string(i.to_owned()).ok());
    let fail = |text: String| Bytes::from(sse::message_event(&jsonrpc::tool_text_result(id_raw.as_deref(), &text, true)));
    let mut parser = sse::Parser::default();
    let (mut total, mut answered, mut malformed) = (0usize, false, 0usize);
    let name = &server.name;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let _ = tx.send(fail(format!("MCP server {name} did not finish its answer within {}s", server.timeout.as_secs()))).await;
                return;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let _ = tx.send(fail(format!("MCP server {name} broke off its answer: {e}"))).await;
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        // A server that floods its stream must not keep this (single) thread from other calls.
        if total / crate::upstream::YIELD_EVERY != (total + data.len()) / crate::upstream::YIELD_EVERY {
            tokio::task::yield_now().await;
        }
        total += data.len();
        if total > limit {
            let _ = tx.send(fail(format!("MCP server {name} answered with more than {limit} bytes; the answer was cut off"))).await;
            return;
        }
        let events = match parser.push_bytes(&data) {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(fail(format!("MCP server {name} sent a malformed event stream: {e}"))).await;
                return;
            }
        };
        for event in events {
            if !event.data.is_empty() {
                match serde_json::from_str::<jsonrpc::Envelope<'_>>(&event.data) {
                    Ok(env) => answered |= env.method.is_none() && env.id.map(RawValue::get) == id.as_deref(),
                    Err(_) => {
                        malformed += 1;
                        continue;
                    }
                }
            }
            let mut raw = event.raw;
            raw.push_str("\n\n");
            if tx.send(Bytes::from(raw)).await.is_err() {
                return; // the agent went away; dropping the body closes the upstream answer
            }
        }
    }
    if !answered {
        let skipped = if malformed > 0 { format!(" ({malformed} malformed events skipped)") } else { String::new() };
        let _ = tx.send(fail(format!("MCP server {name} ended its answer without a result{skipped}"))).await;
    }
}
