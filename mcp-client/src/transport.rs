//! HTTP to MCP servers: one pooled client per trust store (rustls with the ring provider: the
//! platform's roots, plus a server's own CA bundle when it names one), answers read to their end
//! within a size limit and a deadline, and their JSON-RPC messages whether they came as JSON or
//! as an SSE stream.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// The platform's CA certificates (what the image's trust store holds).
pub fn platform_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, "platform CA certificates loaded");
    roots
}

/// `base` plus the CA certificates of a PEM bundle; why not, when it holds none.
pub fn roots_with_bundle(base: &rustls::RootCertStore, pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("not PEM certificates: {e}"))?;
    let mut roots = base.clone();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("it holds no usable CA certificate".into());
    }
    Ok(roots)
}

/// A pooled HTTP/1.1 client for `http://` and `https://` that trusts `roots`.
pub fn client(roots: Arc<rustls::RootCertStore>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports the default versions; this cannot happen with it.
        Err(e) => unreachable!("ring supports TLS 1.2 and 1.3: {e}"),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Why an answer could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the answer did not end in time")]
    Timeout,
    #[error("the answer was larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer broke off: {0}")]
    BrokeOff(String),
}

/// Bytes of an answer processed between two chances for other tasks to run.
pub const YIELD_EVERY: usize = 64 << 10;

/// A body read to its end, refused past `limit` bytes or `deadline`.
pub async fn read_body<B>(mut body: B, limit: usize, deadline: tokio::time::Instant) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // A body of one frame (most are) is that frame's bytes, not a copy of them.
    let mut first = Bytes::new();
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) if out.is_empty() => return Ok(first),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(ReadError::BrokeOff(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let read = first.len() + out.len();
        if read + data.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        // A server that floods its answer must not keep this (perhaps single) thread from others.
        if read / YIELD_EVERY != (read + data.len()) / YIELD_EVERY {
            tokio::task::yield_now().await;
        }
        if read == 0 {
            first = data;
        } else {
            if out.is_empty() {
                out.extend_from_slice(&std::mem::take(&mut first));
            }
            out.extend_from_slice(&data);
        }
    }
}

/// A client's request body refused: too large, too slow, or cut off.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0} s")]
    TooSlow(u64),
    #[error("the request body broke off: {0}")]
    BrokeOff(String),
}

impl RequestBodyError {
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            RequestBodyError::TooLarge(_) => hyper::StatusCode::PAYLOAD_TOO_LARGE,
            RequestBodyError::TooSlow(_) => hyper::StatusCode::REQUEST_TIMEOUT,
            RequestBodyError::BrokeOff(_) => hyper::StatusCode::BAD_REQUEST,
        }
    }
}

/// A client's request body, read to its end within `limit` bytes and `within` of now. Headers
/// have a deadline of their own (the server's); without one for the body, a client that sends
/// its headers and then dribbles, or nothing, holds a connection, a task and a descriptor for
/// ever, and enough of them take the server's descriptors from everyone.
pub async fn read_request<B>(body: B, limit: usize, within: std::time::Duration) -> Result<Bytes, RequestBodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_body(body, limit, tokio::time::Instant::now() + within).await.map_err(|e| match e {
        ReadError::Timeout => RequestBodyError::TooSlow(within.as_secs()),
        ReadError::TooLarge(n) => RequestBodyError::TooLarge(n),
        ReadError::BrokeOff(e) => RequestBodyError::BrokeOff(e),
    })
}

/// The innermost cause of an error: what a person can act on ("connection refused").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The JSON-RPC messages of a whole answer. Events and bodies that are not JSON are skipped: what
/// is missing then shows as no result.
pub fn parse_messages(sse: bool, bytes: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let text = String::from_utf8_lossy(bytes);
    Ok(if sse {
        let mut p = tollgate_core::mcp::sse::Parser::default();
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

/// A credential header: `prefix` and `value` (its trailing newline, which a file often has,
/// dropped), marked sensitive so no debug output shows it; none when it cannot be a header.
pub fn credential_header(name: &str, prefix: Option<&str>, value: &str) -> Option<(hyper::header::HeaderName, hyper::header::HeaderValue)> {
    let text = format!("{}{}", prefix.unwrap_or_default(), value.trim_end_matches(['\r', '\n']));
    let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut value = hyper::header::HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// POSTs `body` to `url` with `headers`; the answer's status and body (at most 1 MiB), or why
/// there is none, within `timeout`. For the small JSON calls of notifications, Slack and Vault.
pub async fn post(client: &HttpClient, url: &str, headers: &[(&str, &str)], body: Bytes, timeout: std::time::Duration) -> Result<(u16, Bytes), String> {
    small_call(client, hyper::Method::POST, url, headers, body, timeout).await
}

/// As [`post`], with any method.
pub async fn small_call(
    client: &HttpClient,
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: std::time::Duration,
) -> Result<(u16, Bytes), String> {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(full(body)).map_err(|e| format!("{url}: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("unreachable: {}", root_cause(&e))),
        Err(_) => return Err(format!("no answer within {} s", timeout.as_secs())),
    };
    let status = resp.status().as_u16();
    let bytes = read_body(resp.into_body(), 1 << 20, deadline).await.map_err(|e| e.to_string())?;
    Ok((status, bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_json_batches_and_sse_events() {
        assert_eq!(parse_messages(false, br#"{"id":1}"#).unwrap(), [serde_json::json!({"id": 1})]);
        assert_eq!(parse_messages(false, br#"[{"id":1},{"id":2}]"#).unwrap().len(), 2);
        let sse = b"event: message\ndata: {\"id\":1}\n\n: keepalive\n\ndata: not json\n\ndata: {\"id\":2}";
        assert_eq!(parse_messages(true, sse).unwrap(), [serde_json::json!({"id": 1}), serde_json::json!({"id": 2})]);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let base = rustls::RootCertStore::empty();
        assert!(roots_with_bundle(&base, b"not pem").unwrap_err().contains("no usable CA"));
    }

    #[tokio::test]
    async fn answers_are_bounded_in_size() {
        let body = Full::new(Bytes::from(vec![b'x'; 100]));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(read_body(body.clone(), 10, deadline).await, Err(ReadError::TooLarge(10)));
        assert_eq!(read_body(body, 100, deadline).await.unwrap().len(), 100);
    }

    /// A body in frames, empty ones among them, as a stream delivers it.
    struct Framed(std::collections::VecDeque<&'static [u8]>);

    impl hyper::body::Body for Framed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|p| Ok(hyper::body::Frame::data(Bytes::from_static(p)))))
        }
    }

    fn framed(parts: &[&'static [u8]]) -> Framed {
        Framed(parts.iter().copied().collect())
    }

    #[tokio::test]
    async fn a_body_in_frames_is_read_whole_and_bounded_across_them() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let cases: [(&[&'static [u8]], &[u8]); 4] =
            [(&[b""], b""), (&[b"{\"a\":1}"], b"{\"a\":1}"), (&[b"", b"{\"a\"", b"", b":1}"], b"{\"a\":1}"), (&[b"{", b"\"a\"", b":", b"1}"], b"{\"a\":1}")];
        for (parts, whole) in cases {
            assert_eq!(read_body(framed(parts), 7, deadline).await.unwrap(), Bytes::copy_from_slice(whole), "{parts:?}");
        }
        // The bound holds for the bytes of all frames, the first one's included.
        assert_eq!(read_body(framed(&[b"{\"a\"", b":1}", b" "]), 7, deadline).await, Err(ReadError::TooLarge(7)));
        assert_eq!(read_body(framed(&[b"{\"a\":1} "]), 7, deadline).await, Err(ReadError::TooLarge(7)));
    }
}
