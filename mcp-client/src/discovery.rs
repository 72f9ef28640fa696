//! Discovery: the handshake and `tools/list` (every page) of one MCP server, as a client that
//! only looks. The answer is what `MCPServer.status` records; an error says what a person can
//! act on (cannot connect, refused the credentials, not MCP) with a reason for the condition.

use crate::transport::{self, HttpClient, ReadError, full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// The revision discovery speaks; servers of later revisions still answer its handshake.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
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

    /// The result of request `id`.
    async fn call(&mut self, id: u64, method: &'static str, params: Value) -> Result<Value, DiscoveryError> {
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

/// What `target` says of itself and its tools.
pub async fn discover(client: &HttpClient, target: &Target) -> Result<Discovered, DiscoveryError> {
    let mut x = Exchange { client, target, deadline: Instant::now() + target.timeout, session: None, version: None };
    let client_info = json!({"name": "tollgate-operator", "version": env!("CARGO_PKG_VERSION")});
    let init = x.call(0, "initialize", json!({"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": client_info})).await?;
    let protocol_version = init["protocolVersion"].as_str().map(str::to_owned);
    x.version = protocol_version.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
    let info = &init["serverInfo"];
    let name = info["name"].as_str().unwrap_or_default().to_owned();
    let version = info["version"].as_str().map(str::to_owned);
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
        let result = x.call(page as u64, "tools/list", params).await?;
        for t in result["tools"].as_array().into_iter().flatten() {
            let Some(name) = t["name"].as_str() else { continue };
            tools.push(Tool { name: name.to_owned(), description: t["description"].as_str().map(str::to_owned), input_schema: t["inputSchema"].clone() });
        }
        cursor = result["nextCursor"].as_str().filter(|c| !c.is_empty()).map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    // The session is not needed any more; a server that keeps it anyway expires it.
    if x.session.is_some() {
        let _ = x.send(Method::DELETE, None, "DELETE").await;
    }
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Discovered { name, version, protocol_version, tools })
}
