//! Discovery: the handshake and `tools/list` (every page) of one MCP server, as a client that
//! only looks. The answer is what `MCPServer.status` records; an error says what a person can
//! act on (cannot connect, refused the credentials, not MCP) with a reason for the condition.

use crate::transport::{self, HttpClient, ReadError, full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request};
use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams, InitializeResult, ListToolsResult, ProtocolVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The revision discovery speaks; servers of later revisions still answer its handshake.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_06_18;
/// A server that pages forever is cut off here.
const MAX_PAGES: usize = 50;

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Its configured headers (credentials), sent on every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole discovery's deadline.
    pub timeout: Duration,
    pub max_answer: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub name: String,
    pub version: Option<String>,
    pub protocol_version: Option<String>,
    pub tools: Vec<Tool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

impl Tool {
    /// `sha256:` of the canonical input schema: the same schema gives the same digest whatever
    /// its key order, and any change to it shows.
    pub fn schema_digest(&self) -> String {
        tollgate_core::mcp::digest::arguments_digest(&self.input_schema)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot connect to {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("no answer from {url} within {secs}s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} refused the credentials (HTTP {status}): check the Secrets its headers name")]
    Unauthorized { url: String, status: u16 },
    /// The body is never repeated: whoever may name a URL could otherwise read what an internal
    /// endpoint answers through the object's status.
    #[error("{url} answered {method} with HTTP {status}")]
    Http { url: String, method: &'static str, status: u16 },
    #[error("{url}: {method}: {source}")]
    Read { url: String, method: &'static str, source: ReadError },
    #[error("{url} did not answer {method} as an MCP server: {detail}")]
    Protocol { url: String, method: &'static str, detail: String },
    #[error("{url} returned an error to {method}: {message} ({code})")]
    Rpc { url: String, method: &'static str, code: i64, message: String },
}

impl DiscoveryError {
    /// The `Ready` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DiscoveryError::Unreachable { .. } => "Unreachable",
            DiscoveryError::Timeout { .. } => "Timeout",
            DiscoveryError::Unauthorized { .. } => "Unauthorized",
            DiscoveryError::Http { .. } | DiscoveryError::Read { .. } => "BadAnswer",
            DiscoveryError::Protocol { .. } | DiscoveryError::Rpc { .. } => "NotMCP",
        }
    }
}

/// What did not fit MCP's types, without the values the server sent: serde names them ("invalid
/// type: string \"…\"", "unknown variant `…`"), and the reason is shown in the object's status.
/// What was expected and a missing field's name are MCP's own words.
fn shape_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.split_once(", expected ") {
        Some((_, expected)) => format!("a value of the wrong shape, expected {expected}"),
        None if text.starts_with("missing field ") => text,
        None => "an answer that is not shaped as MCP's".to_owned(),
    }
}

struct Exchange<'a> {
    client: &'a HttpClient,
    target: &'a Target,
    deadline: Instant,
    session: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

impl Exchange<'_> {
    async fn send(&self, method: Method, body: Option<&Value>, rpc: &'static str) -> Result<(hyper::http::response::Parts, bytes::Bytes), DiscoveryError> {
        let url = &self.target.url;
        let mut req = Request::builder().method(method).uri(url);
        if let Some(h) = req.headers_mut() {
            h.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(s) = &self.session {
                h.insert("mcp-session-id", s.clone());
            }
            if let Some(v) = &self.version {
                h.insert("mcp-protocol-version", v.clone());
            }
            for (name, value) in &self.target.headers {
                h.insert(name.clone(), value.clone());
            }
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req.body(full(bytes)).map_err(|e| DiscoveryError::Protocol { url: url.clone(), method: rpc, detail: e.to_string() })?;
        let timeout = || DiscoveryError::Timeout { url: url.clone(), secs: self.target.timeout.as_secs() };
        let resp = match tokio::time::timeout_at(self.deadline, self.client.request(req)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) => return Err(DiscoveryError::Unreachable { url: url.clone(), reason: transport::root_cause(&e) }),
            Ok(Ok(r)) => r,
        };
        let (parts, body) = resp.into_parts();
        let bytes = transport::read_body(body, self.target.max_answer, self.deadline).await.map_err(|source| match source {
            ReadError::Timeout => timeout(),
            source => DiscoveryError::Read { url: url.clone(), method: rpc, source },
        })?;
        let status = parts.status.as_u16();
        if status == 401 || status == 403 {
            return Err(DiscoveryError::Unauthorized { url: url.clone(), status });
        }
        if !parts.status.is_success() {
            return Err(DiscoveryError::Http { url: url.clone(), method: rpc, status });
        }
        Ok((parts, bytes))
    }

    /// The result of request `id`, read as `T`.
    async fn typed_call<T: DeserializeOwned>(&mut self, id: u64, method: &'static str, params: &impl Serialize) -> Result<T, DiscoveryError> {
        let result = self.call(id, method, params).await?;
        serde_json::from_value(result).map_err(|e| DiscoveryError::Protocol { url: self.target.url.clone(), method, detail: shape_error(&e) })
    }

    /// The result of request `id`.
    async fn call(&mut self, id: u64, method: &'static str, params: &impl Serialize) -> Result<Value, DiscoveryError> {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (parts, bytes) = self.send(Method::POST, Some(&body), method).await?;
        if let Some(s) = parts.headers.get("mcp-session-id") {
            self.session = Some(s.clone());
        }
        let url = &self.target.url;
        let protocol = |detail: String| DiscoveryError::Protocol { url: url.clone(), method, detail };
        let messages = transport::parse_messages(transport::is_event_stream(&parts.headers), &bytes).map_err(protocol)?;
        let answer =
            messages.into_iter().find(|m| m.get("id") == Some(&json!(id)) && m.get("method").is_none()).ok_or_else(|| protocol("no response to it".into()))?;
        if let Some(e) = answer.get("error") {
            let message = e["message"].as_str().unwrap_or("(no message)").chars().take(200).collect();
            return Err(DiscoveryError::Rpc { url: url.clone(), method, code: e["code"].as_i64().unwrap_or(0), message });
        }
        answer.get("result").cloned().ok_or_else(|| protocol("a response with neither result nor error".into()))
    }
}

/// What `target` says of itself and its tools. Its answers are read as MCP's own types: a server
/// whose handshake or tool list does not parse as one is not MCP, as the official clients see it.
pub async fn discover(client: &HttpClient, target: &Target) -> Result<Discovered, DiscoveryError> {
    let mut x = Exchange { client, target, deadline: Instant::now() + target.timeout, session: None, version: None };
    let hello = InitializeRequestParams::new(ClientCapabilities::default(), Implementation::new("tollgate-operator", env!("CARGO_PKG_VERSION")))
        .with_protocol_version(PROTOCOL_VERSION);
    let init: InitializeResult = x.typed_call(0, "initialize", &hello).await?;
    x.version = HeaderValue::from_str(init.protocol_version.as_str()).ok();
    // A server that does not want the notification says so with an error status; it changes
    // nothing about what it lists.
    let _ = x.send(Method::POST, Some(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})), "notifications/initialized").await;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 1..=MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let result: ListToolsResult = x.typed_call(page as u64, "tools/list", &params).await?;
        tools.extend(result.tools.into_iter().map(|t| Tool {
            name: t.name.into_owned(),
            description: t.description.map(Cow::into_owned),
            input_schema: Value::Object(Arc::unwrap_or_clone(t.input_schema)),
        }));
        cursor = result.next_cursor.filter(|c| !c.is_empty());
        if cursor.is_none() {
            break;
        }
    }
    // The session is not needed any more; a server that keeps it anyway expires it.
    if x.session.is_some() {
        let _ = x.send(Method::DELETE, None, "DELETE").await;
    }
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let Implementation { name, version, .. } = init.server_info;
    Ok(Discovered { name, version: Some(version), protocol_version: Some(init.protocol_version.to_string()), tools })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;

    /// A loopback MCP server that answers `initialize` properly and `tools/list` with `tools`.
    async fn server(tools: Value) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tools = tools.clone();
                let answer = service_fn(move |req: hyper::Request<Incoming>| {
                    let tools = tools.clone();
                    async move {
                        let body: Value = serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes()).unwrap_or_default();
                        let result = match body["method"].as_str() {
                            Some("initialize") => {
                                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "2"}})
                            }
                            Some("tools/list") => json!({"tools": tools}),
                            _ => return Ok::<_, Infallible>(hyper::Response::builder().status(202).body(full("")).unwrap()),
                        };
                        let reply = json!({"jsonrpc": "2.0", "id": body["id"], "result": result}).to_string();
                        Ok(hyper::Response::builder().header(CONTENT_TYPE, "application/json").body(full(reply)).unwrap())
                    }
                });
                tokio::spawn(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), answer).into_owned());
            }
        });
        url
    }

    fn target(url: String) -> Target {
        Target { url, headers: Vec::new(), timeout: Duration::from_secs(10), max_answer: 1 << 20 }
    }

    #[tokio::test]
    async fn tools_are_read_as_mcps_own_types() {
        let client = transport::client(Arc::new(rustls::RootCertStore::empty()));
        let url = server(
            json!([{"name": "b", "inputSchema": {"type": "object"}}, {"name": "a", "description": "A", "inputSchema": {"type": "object", "required": ["x"]}}]),
        )
        .await;
        let found = discover(&client, &target(url)).await.unwrap();
        assert_eq!((found.name.as_str(), found.version.as_deref(), found.protocol_version.as_deref()), ("fake", Some("2"), Some("2025-06-18")));
        let names: Vec<(&str, Option<&str>)> = found.tools.iter().map(|t| (t.name.as_str(), t.description.as_deref())).collect();
        assert_eq!(names, [("a", Some("A")), ("b", None)]);
        assert_eq!(found.tools[0].input_schema["required"], json!(["x"]));
    }

    #[tokio::test]
    async fn what_a_server_answered_is_never_repeated_in_the_reason() {
        // Whoever may name a URL must not read an internal endpoint's answers through the status.
        let client = transport::client(Arc::new(rustls::RootCertStore::empty()));
        let url = server(json!("internal-s3cr3t-value")).await;
        let err = discover(&client, &target(url)).await.unwrap_err();
        assert_eq!(err.reason(), "NotMCP");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("expected a sequence"), "{err}");
    }

    #[tokio::test]
    async fn a_tool_list_that_is_not_mcp_says_why() {
        let client = transport::client(Arc::new(rustls::RootCertStore::empty()));
        let url = server(json!([{"name": "no-schema"}])).await;
        let err = discover(&client, &target(url)).await.unwrap_err();
        assert_eq!(err.reason(), "NotMCP");
        assert!(err.to_string().contains("tools/list") && err.to_string().contains("inputSchema"), "{err}");
    }
}
