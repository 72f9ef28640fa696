//! Requests to upstream MCP servers: plain HTTP with connection pooling and the server's
//! configured headers. A server's `timeoutSeconds` bounds the whole answer of a request (not a
//! GET stream, which is long-lived by design), and an answer the sidecar reads is bounded in size:
//! a hostile or broken server costs the agent a clear error, never the sidecar its memory.

use crate::body::{Body, full};
use crate::snapshot::Server;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Request headers passed to the upstream as they are; everything else is the proxy's business.
/// Besides these, every `Mcp-*` header goes (the session, the protocol version, the 2026-07-28
/// routing headers, and ones later revisions add); the routing ones were checked against the body.
const FORWARDED_REQUEST_HEADERS: &[&str] = &["accept", "content-type", "last-event-id"];
/// Hop-by-hop response headers that must not be copied.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"];

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("MCP server {server} did not answer within {secs}s")]
    Timeout { server: String, secs: u64 },
    #[error("MCP server {server} is unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("MCP server {server} has an unsupported URL {url:?}: {reason}")]
    BadUrl { server: String, url: String, reason: String },
    #[error("MCP server {server} cannot be called: {source}")]
    Credentials { server: String, source: crate::credentials::CredentialError },
    #[error("MCP server {server} answered with more than {limit} bytes; the answer was dropped")]
    TooLarge { server: String, limit: usize },
    #[error("MCP server {server} broke off its answer: {reason}")]
    BrokeOff { server: String, reason: String },
}

pub struct Upstream {
    client: Client<HttpConnector, Body>,
    credentials: crate::credentials::Credentials,
    /// The largest answer the sidecar reads from a server.
    pub max_answer: usize,
}

impl Upstream {
    pub fn new(credentials: crate::credentials::Credentials, max_answer: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Upstream { client: Client::builder(TokioExecutor::new()).build(connector), credentials, max_answer }
    }

    /// Sends one request and reads its whole answer, within the server's timeout and size limit.
    pub async fn call(
        &self,
        server: &Server,
        method: Method,
        downstream: &HeaderMap,
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Bytes), UpstreamError> {
        let deadline = tokio::time::Instant::now() + server.timeout;
        let resp = self.send(server, method, downstream, body).await?;
        let (parts, body) = resp.into_parts();
        let bytes = read_body(body, self.max_answer, deadline, server).await?;
        Ok((parts, bytes))
    }

    /// The JSON-RPC messages of a request's whole answer (see [`Upstream::call`]).
    pub async fn messages(
        &self,
        server: &Server,
        method: Method,
        downstream: &HeaderMap,
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Vec<serde_json::Value>), UpstreamError> {
        let (parts, bytes) = self.call(server, method, downstream, body).await?;
        let messages =
            parse_messages(is_event_stream(&parts.headers), &bytes).map_err(|reason| UpstreamError::BrokeOff { server: server.name.clone(), reason })?;
        Ok((parts, messages))
    }

    /// Sends one request; the deadline covers the response head, not a stream that follows.
    pub async fn send(&self, server: &Server, method: Method, downstream: &HeaderMap, body: Bytes) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        if !server.url.starts_with("http://") {
            return Err(UpstreamError::BadUrl {
                server: server.name.clone(),
                url: server.url.clone(),
                reason: "only http:// upstreams are supported so far".into(),
            });
        }
        // Without its credentials a server is not called at all: it would only refuse, less clearly.
        let credentials = self.credentials.resolve(&server.headers).map_err(|source| UpstreamError::Credentials { server: server.name.clone(), source })?;
        let mut req = Request::builder().method(method).uri(&server.url);
        if let Some(h) = req.headers_mut() {
            for name in FORWARDED_REQUEST_HEADERS {
                if let Some(v) = downstream.get(*name) {
                    h.insert(HeaderName::from_static(name), v.clone());
                }
            }
            for (name, value) in downstream {
                if name.as_str().starts_with("mcp-") {
                    h.append(name.clone(), value.clone());
                }
            }
            for (name, value) in credentials {
                h.insert(name, value);
            }
        }
        let req = req.body(full(body)).map_err(|e| UpstreamError::BadUrl { server: server.name.clone(), url: server.url.clone(), reason: e.to_string() })?;
        match tokio::time::timeout(server.timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout { server: server.name.clone(), secs: server.timeout.as_secs() }),
            Ok(Err(e)) => Err(UpstreamError::Unreachable { server: server.name.clone(), reason: root_cause(&e) }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Whether a header mirrors one message's body (2026-07-28): it belongs to that message only.
pub fn is_routing_header(name: &str) -> bool {
    name == "mcp-method" || name == "mcp-name" || name.starts_with("mcp-param-")
}

/// `session`'s headers with the routing headers of the message they now carry (`own`): a held
/// call runs in a poll's session, never under the poll's `Mcp-Name`.
pub fn with_routing_of(session: &HeaderMap, own: &HeaderMap) -> HeaderMap {
    let mut out: HeaderMap = session.iter().filter(|(n, _)| !is_routing_header(n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect();
    for (n, v) in own.iter().filter(|(n, _)| is_routing_header(n.as_str())) {
        out.append(n.clone(), v.clone());
    }
    out
}

/// Bytes of an answer processed between two chances for other tasks to run.
pub(crate) const YIELD_EVERY: usize = 64 << 10;

/// A body read to its end, refused past `limit` bytes or `deadline`.
pub async fn read_body<B>(mut body: B, limit: usize, deadline: tokio::time::Instant, server: &Server) -> Result<Bytes, UpstreamError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout { server: server.name.clone(), secs: server.timeout.as_secs() }),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(UpstreamError::BrokeOff { server: server.name.clone(), reason: e.to_string() }),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(UpstreamError::TooLarge { server: server.name.clone(), limit });
            }
            // A server that floods its answer must not keep this (single) thread from other calls.
            if out.len() / YIELD_EVERY != (out.len() + data.len()) / YIELD_EVERY {
                tokio::task::yield_now().await;
            }
            out.extend_from_slice(&data);
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The upstream's response headers as the agent should see them.
pub fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap, keep_length: bool) {
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || (!keep_length && n == "content-length") {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The JSON-RPC messages of an answer, whether it came as JSON (one message or a batch's array)
/// or as an SSE stream. For answers the sidecar made itself (batches); a server's answer is read
/// with [`Upstream::messages`], which bounds it.
pub async fn messages<B>(resp: Response<B>) -> Result<Vec<serde_json::Value>, String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let sse = is_event_stream(resp.headers());
    let bytes = resp.into_body().collect().await.map_err(|e| format!("the answer broke off: {e}"))?.to_bytes();
    parse_messages(sse, &bytes)
}

/// The JSON-RPC messages of a whole answer. Events and bodies that are not JSON are skipped: what
/// is missing then shows as no result.
pub fn parse_messages(sse: bool, bytes: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let text = String::from_utf8_lossy(bytes);
    Ok(if sse {
        let mut p = tollgate_core::sse::Parser::default();
        let mut events = p.push(&text)?;
        events.extend(p.push("\n\n")?);
        events.iter().filter_map(|e| serde_json::from_str(&e.data).ok()).collect()
    } else {
        match serde_json::from_str(&text) {
            Ok(serde_json::Value::Array(all)) => all,
            Ok(one) => vec![one],
            Err(_) => Vec::new(),
        }
    })
}
