//! What passes between the servers and the client on the aggregated endpoint: answers and
//! streams on their way to the client get aggregated names (requests a server sends get ids that
//! lead back to it; URIs get their server prefix), and what the client sends that no request of
//! its own explains (answers to those requests, notifications) goes back to the right servers.

use super::session::{SESSION_HEADER, Session};
use crate::body::header;
use crate::body::json;
use crate::body::{Body, channel, full};
use crate::snapshot::Snapshot;
use crate::state::Sidecar;
use crate::upstream::{copy_response_headers, is_event_stream};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tollgate_core::{mcp::aggregate, mcp::jsonrpc, mcp::sse};

/// `resp`, from `server`, as the client of `/mcp` should see it.
pub async fn to_client<B>(server: &str, resp: Response<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let (parts, body) = resp.into_parts();
    let mut headers = HeaderMap::new();
    copy_response_headers(&parts.headers, &mut headers, false);
    // The client's session is the sidecar's, never the upstream's.
    headers.remove(SESSION_HEADER);
    let out = if is_event_stream(&parts.headers) {
        let (tx, out) = channel();
        tokio::spawn(pump(server.to_owned(), body, tx));
        out
    } else {
        match body.collect().await {
            Ok(bytes) => {
                let bytes = bytes.to_bytes();
                match std::str::from_utf8(&bytes).ok().and_then(|text| rewritten(server, text)) {
                    Some(json) => full(json),
                    None => full(bytes),
                }
            }
            Err(e) => full(jsonrpc::error_response(None, -32603, &format!("MCP server {server} broke off: {e}"))),
        }
    };
    let mut r = Response::new(out);
    *r.status_mut() = parts.status;
    *r.headers_mut() = headers;
    r
}

/// A message (or a batch's answers) from `server` in aggregated names; `None` when unchanged.
fn rewritten(server: &str, text: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(text).ok()?;
    let changed = match &mut v {
        Value::Array(all) => all.iter_mut().fold(false, |c, m| aggregate::rewrite_to_client(server, m) | c),
        one => aggregate::rewrite_to_client(server, one),
    };
    changed.then(|| v.to_string())
}

/// Copies an event stream to the client, one rewritten message per event. Event ids are left
/// out: a stream made of several servers' streams cannot be resumed from one server's id.
async fn pump<B>(server: String, mut body: B, tx: tokio::sync::mpsc::Sender<Bytes>)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + Send,
{
    let mut parser = sse::Parser::default();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => return tracing::debug!(server, error = %e, "server stream ended"),
        };
        let events = match parser.push_bytes(&data) {
            Ok(events) => events,
            Err(e) => return tracing::warn!(server, error = e, "server stream refused"),
        };
        for event in events.into_iter().filter(|e| !e.data.is_empty()) {
            let message = rewritten(&server, &event.data).unwrap_or(event.data);
            if tx.send(Bytes::from(sse::message_event(message.as_bytes()))).await.is_err() {
                return; // the client went away; dropping the body closes the upstream stream
            }
        }
    }
}

/// GET: one stream made of the stream of every server of the session that offers one.
pub async fn stream(sc: &Arc<Sidecar>, snapshot: &Snapshot, session: &Arc<Session>) -> Response<Body> {
    let opened = futures::future::join_all(snapshot.usable_servers().map(|server| async move {
        let upstream = session.upstream(&sc.upstream, server).await.ok()?;
        let mut headers = upstream.headers.clone();
        headers.insert(ACCEPT, header("text/event-stream"));
        let resp = sc.upstream.send(server, Method::GET, &headers, Bytes::new()).await.ok()?;
        (resp.status() == StatusCode::OK && is_event_stream(resp.headers())).then(|| (server.name.clone(), resp))
    }))
    .await;
    let streams: Vec<_> = opened.into_iter().flatten().collect();
    if streams.is_empty() {
        return json(StatusCode::METHOD_NOT_ALLOWED, jsonrpc::error_response(None, -32601, "no MCP server of this agent offers a server stream"));
    }
    let (tx, body) = channel();
    // A comment first, so the client sees the stream open before any server has spoken.
    let _ = tx.try_send(Bytes::from_static(b": tollgate merged stream\n\n"));
    for (server, resp) in streams {
        tokio::spawn(pump(server, resp.into_body(), tx.clone()));
    }
    let mut r = Response::new(body);
    r.headers_mut().insert(CONTENT_TYPE, header("text/event-stream"));
    r.headers_mut().insert("cache-control", header("no-cache"));
    r
}

fn accepted() -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// The client's answer to a request a server sent it: back to that server, under its own id.
pub async fn response_from_client(sc: &Sidecar, snapshot: &Snapshot, session: &Session, raw: &[u8]) -> Response<Body> {
    let mut message: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, -32700, &e.to_string())),
    };
    let routed = message.get("id").and_then(aggregate::inbound_response_id).map(|(s, id)| (s.to_owned(), id));
    let Some((server_name, original)) = routed else {
        return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, -32600, "a response to no request this session relayed"));
    };
    let Some(server) = snapshot.servers.get(&server_name) else {
        return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, -32600, &format!("MCP server {server_name} is gone")));
    };
    message["id"] = original;
    let upstream = match session.upstream(&sc.upstream, server).await {
        Ok(u) => u,
        Err(e) => return json(StatusCode::BAD_GATEWAY, jsonrpc::error_response(None, -32603, &e)),
    };
    match sc.upstream.send(server, Method::POST, &upstream.headers, Bytes::from(message.to_string())).await {
        Ok(_) => accepted(),
        Err(e) => json(StatusCode::BAD_GATEWAY, jsonrpc::error_response(None, -32603, &e.to_string())),
    }
}

/// A notification from the client (cancellation, roots changed, …) concerns whichever server it
/// names, which the sidecar does not track: every open upstream session gets it. Servers ignore
/// a cancellation of a request they never had.
pub async fn notification_from_client(sc: &Sidecar, snapshot: &Snapshot, session: &Session, method: &str, raw: &[u8]) -> Response<Body> {
    if method == "notifications/initialized" {
        return accepted(); // each upstream session got its own when it opened
    }
    let sends = session.opened().into_iter().filter_map(|(name, upstream)| {
        let server = snapshot.servers.get(&name)?;
        Some(async move { sc.upstream.send(server, Method::POST, &upstream.headers, Bytes::copy_from_slice(raw)).await })
    });
    futures::future::join_all(sends).await;
    accepted()
}
