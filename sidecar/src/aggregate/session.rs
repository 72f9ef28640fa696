//! Sessions of the aggregated endpoint: the sidecar owns the downstream session and opens one
//! upstream session per server, initialized with the client's own `initialize` parameters.

use crate::body::header;
use crate::snapshot::Server;
use bytes::Bytes;
use hyper::Method;
use hyper::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

pub const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Sessions kept at most; the oldest goes when a new one would pass this (clients that never
/// send DELETE must not grow the sidecar without bound).
const MAX_SESSIONS: usize = 256;
/// The largest `initialize` params a session keeps (to open upstream sessions with them later):
/// with [`MAX_SESSIONS`], sessions hold a few MiB at most.
pub const MAX_INIT_PARAMS: usize = 16 << 10;

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<SessionTable>,
}

/// Sessions by id, and their ids oldest first.
type SessionTable = (HashMap<String, Arc<Session>>, std::collections::VecDeque<String>);

impl Sessions {
    pub fn get(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = headers.get(SESSION_HEADER)?.to_str().ok()?;
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).0.get(id).cloned()
    }

    pub fn insert(&self, id: String, session: Arc<Session>) {
        let mut guard = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = order.pop_front() else { break };
            map.remove(&oldest);
        }
        map.insert(id.clone(), session);
        order.push_back(id);
    }

    pub fn remove(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = headers.get(SESSION_HEADER)?.to_str().ok()?;
        let mut guard = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.retain(|i| i != id);
        guard.0.remove(id)
    }
}

/// One upstream session: the headers that address it, and what the server said it can do.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub headers: HeaderMap,
    pub capabilities: Value,
    pub instructions: Option<String>,
}

impl Upstream {
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.get(capability).is_some()
    }
}

pub struct Session {
    init_params: Value,
    upstream: Mutex<HashMap<String, Arc<OnceCell<Upstream>>>>,
}

impl Session {
    pub fn new(init_params: Value) -> Self {
        Session { init_params, upstream: Mutex::default() }
    }

    /// The upstream session for `server`, opened on first use; concurrent first uses open it once.
    pub async fn upstream(&self, client: &crate::upstream::Upstream, server: &Server) -> Result<Upstream, String> {
        let cell = self.upstream.lock().unwrap_or_else(|e| e.into_inner()).entry(server.name.clone()).or_default().clone();
        cell.get_or_try_init(|| open(client, server, &self.init_params)).await.cloned()
    }

    /// The upstream sessions opened so far, by server.
    pub fn opened(&self) -> Vec<(String, Upstream)> {
        let map = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().filter_map(|(name, cell)| cell.get().map(|u| (name.clone(), u.clone()))).collect()
    }
}

async fn open(client: &crate::upstream::Upstream, server: &Server, init_params: &Value) -> Result<Upstream, String> {
    let mut headers = HeaderMap::new();
    headers.insert(hyper::header::ACCEPT, header("application/json, text/event-stream"));
    headers.insert(hyper::header::CONTENT_TYPE, header("application/json"));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init_params});
    let (parts, answer) = client.messages(server, Method::POST, &headers, Bytes::from(init.to_string())).await.map_err(|e| e.to_string())?;
    if let Some(id) = parts.headers.get(SESSION_HEADER).cloned() {
        headers.insert(SESSION_HEADER, id);
    }
    let Some(result) = answer.into_iter().find_map(|mut m| m.get_mut("result").map(Value::take)) else {
        return Err(format!("MCP server {} did not complete initialize", server.name));
    };
    let version = result.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(VERSION_HEADER, v);
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    client.send(server, Method::POST, &headers, Bytes::from(initialized.to_string())).await.map_err(|e| e.to_string())?;
    Ok(Upstream {
        headers,
        capabilities: result.get("capabilities").cloned().unwrap_or(Value::Null),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
    })
}
