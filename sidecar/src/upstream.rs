//! Requests to upstream MCP servers: HTTP or HTTPS (rustls: the platform's roots, plus a
//! server's own CA bundle when it names one) with connection pooling and the server's configured
//! headers. A server's `timeoutSeconds` bounds the whole answer of a request (not a
//! GET stream, which is long-lived by design), and an answer the sidecar reads is bounded in size:
//! a hostile or broken server costs the agent a clear error, never the sidecar its memory.

use crate::body::full;
use crate::snapshot::Server;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Request, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tollgate_api::CaBundleSource;
use tollgate_mcp_client::transport::{self, HttpClient};

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
    #[error("MCP server {server}: its CA bundle {path} cannot be used: {reason}")]
    CaBundle { server: String, path: String, reason: String },
}

/// Where mounted CA bundles are: Secrets and ConfigMaps, one directory each, a file per key.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub secrets: PathBuf,
    pub config_maps: PathBuf,
}

pub struct Upstream {
    /// For `http://` servers: no certificates loaded.
    plain: HttpClient,
    /// The platform's roots and a client trusting them, loaded at the first `https://` server:
    /// a sidecar that never speaks TLS does not hold the platform's trust store in memory.
    platform: std::sync::OnceLock<(Arc<rustls::RootCertStore>, HttpClient)>,
    ca_files: CaFiles,
    /// Clients that also trust a server's bundle, by its file, rebuilt when the file changes (a
    /// rotated Secret or ConfigMap applies without a restart).
    with_bundle: Mutex<HashMap<PathBuf, (SystemTime, HttpClient)>>,
    credentials: crate::credentials::Credentials,
    /// The largest answer the sidecar reads from a server.
    pub max_answer: usize,
}

impl Upstream {
    pub fn new(credentials: crate::credentials::Credentials, max_answer: usize, ca_files: CaFiles) -> Self {
        let plain = transport::client(Arc::new(rustls::RootCertStore::empty()));
        Upstream { plain, platform: std::sync::OnceLock::new(), ca_files, with_bundle: Mutex::default(), credentials, max_answer }
    }

    fn platform(&self) -> &(Arc<rustls::RootCertStore>, HttpClient) {
        self.platform.get_or_init(|| {
            let roots = Arc::new(transport::platform_roots());
            (roots.clone(), transport::client(roots))
        })
    }

    /// The client for `server`: the platform's roots, or those plus its CA bundle.
    fn client_for(&self, server: &Server) -> Result<HttpClient, Box<UpstreamError>> {
        let Some(bundle) = server.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) else {
            return Ok(if server.url.starts_with("https://") { self.platform().1.clone() } else { self.plain.clone() });
        };
        let bad = |path: &std::path::Path, reason: String| {
            Box::new(UpstreamError::CaBundle { server: server.name.clone(), path: path.display().to_string(), reason })
        };
        let path = match bundle {
            CaBundleSource { secret_key_ref: Some(r), .. } => self.ca_files.secrets.join(&r.name).join(&r.key),
            CaBundleSource { config_map_key_ref: Some(r), .. } => self.ca_files.config_maps.join(&r.name).join(&r.key),
            _ => return Err(bad(&self.ca_files.secrets, "set exactly one of secretKeyRef or configMapKeyRef".into())),
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(|e| bad(&path, format!("not mounted into the sidecar: {e}")))?;
        let mut cache = self.with_bundle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, client)) = cache.get(&path)
            && *at == modified
        {
            return Ok(client.clone());
        }
        let pem = std::fs::read(&path).map_err(|e| bad(&path, format!("not readable: {e}")))?;
        let roots = transport::roots_with_bundle(&self.platform().0, &pem).map_err(|reason| bad(&path, reason))?;
        let client = transport::client(Arc::new(roots));
        cache.insert(path, (modified, client.clone()));
        Ok(client)
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
        if !server.url.starts_with("http://") && !server.url.starts_with("https://") {
            return Err(UpstreamError::BadUrl {
                server: server.name.clone(),
                url: server.url.clone(),
                reason: "only http:// and https:// are supported".into(),
            });
        }
        let client = self.client_for(server).map_err(|e| *e)?;
        // Without its credentials a server is not called at all: it would only refuse, less clearly.
        let credentials =
            self.credentials.resolve(&server.headers).await.map_err(|source| UpstreamError::Credentials { server: server.name.clone(), source })?;
        // The parsed URL and its `Host` header come from the snapshot; hyper keeps a `Host` it is given.
        let mut req = match &server.target {
            Some(t) => Request::builder().method(method).uri(t.uri.clone()),
            None => Request::builder().method(method).uri(&server.url),
        };
        if let Some(h) = req.headers_mut() {
            if let Some(t) = &server.target {
                h.insert(hyper::header::HOST, t.host.clone());
            }
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
            // The server's spans join the call's trace (never the agent's own header: the
            // sidecar's span is the parent, and without tracing nothing is added).
            tollgate_runtime::otel::propagate(&tracing::Span::current(), h);
        }
        let req = req.body(full(body)).map_err(|e| UpstreamError::BadUrl { server: server.name.clone(), url: server.url.clone(), reason: e.to_string() })?;
        match tokio::time::timeout(server.timeout, client.request(req)).await {
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

pub(crate) use transport::{YIELD_EVERY, is_event_stream, parse_messages, root_cause};

/// A body read to its end, refused past `limit` bytes or `deadline`, the error naming `server`.
pub async fn read_body<B>(body: B, limit: usize, deadline: tokio::time::Instant, server: &Server) -> Result<Bytes, UpstreamError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    transport::read_body(body, limit, deadline).await.map_err(|e| match e {
        transport::ReadError::Timeout => UpstreamError::Timeout { server: server.name.clone(), secs: server.timeout.as_secs() },
        transport::ReadError::TooLarge(limit) => UpstreamError::TooLarge { server: server.name.clone(), limit },
        transport::ReadError::BrokeOff(reason) => UpstreamError::BrokeOff { server: server.name.clone(), reason },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (hyper::header::HeaderName::from_static(n), hyper::header::HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn a_held_call_runs_in_the_polls_session_under_its_own_routing_headers() {
        let session = headers(&[("mcp-session-id", "s-2"), ("mcp-name", "get_approval_status"), ("mcp-param-request", "r")]);
        let own = headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_repo"), ("authorization", "Bearer agent")]);
        let out = with_routing_of(&session, &own);
        assert_eq!(out.get("mcp-session-id").map(|v| v.as_bytes()), Some(b"s-2".as_slice()), "the poll's session");
        assert_eq!(out.get_all("mcp-name").iter().map(|v| v.as_bytes()).collect::<Vec<_>>(), [b"delete_repo".as_slice()], "never the poll's name");
        assert!(out.get("mcp-param-request").is_none() && out.get("authorization").is_none(), "{out:?}");
    }

    #[test]
    fn hop_by_hop_headers_and_a_length_that_no_longer_holds_stay_behind() {
        let from = headers(&[("content-type", "application/json"), ("connection", "close"), ("content-length", "12"), ("mcp-session-id", "s")]);
        let mut to = HeaderMap::new();
        copy_response_headers(&from, &mut to, false);
        assert!(to.get("connection").is_none() && to.get("content-length").is_none());
        assert!(to.get("content-type").is_some() && to.get("mcp-session-id").is_some());
        let mut kept = HeaderMap::new();
        copy_response_headers(&from, &mut kept, true);
        assert_eq!(kept.get("content-length").map(|v| v.as_bytes()), Some(b"12".as_slice()));
    }
}
