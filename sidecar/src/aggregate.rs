//! `/mcp`: one MCP server made of every server the agent may use, with tools named
//! `<server>__<tool>`, plus the built-in approval tools. The sidecar owns the downstream session
//! and opens one upstream session per server on first use, initialized with the client's own
//! `initialize` parameters. Tools are what it aggregates; prompts, resources and server-initiated
//! requests stay on `/mcp/<server>`.

use crate::Sidecar;
use crate::approvals::{self, GET_STATUS, REQUEST_APPROVAL};
use crate::body::{Body, full};
use crate::proxy::json;
use crate::snapshot::{Server, Snapshot};
use crate::upstream::{header, messages};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_core::jsonrpc::{self, Envelope, Incoming as Message};
use tollgate_core::policy;

pub const SEPARATOR: &str = "__";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

pub struct Session {
    init_params: Value,
    upstream: tokio::sync::Mutex<HashMap<String, HeaderMap>>,
}

fn session_of(sc: &Sidecar, headers: &HeaderMap) -> Option<Arc<Session>> {
    let id = headers.get(SESSION_HEADER)?.to_str().ok()?;
    sc.sessions.by_id.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
}

pub async fn handle(sc: &Arc<Sidecar>, snapshot: &Snapshot, method: Method, headers: &HeaderMap, bytes: Bytes) -> Response<Body> {
    if method == Method::DELETE {
        if let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            let gone = sc.sessions.by_id.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            if let Some(session) = gone {
                for (name, upstream_headers) in session.upstream.lock().await.iter() {
                    if let Some(server) = snapshot.servers.get(name) {
                        let _ = sc.upstream.send(server, Method::DELETE, upstream_headers, Bytes::new()).await;
                    }
                }
            }
        }
        return json(StatusCode::OK, Vec::new());
    }
    if method != Method::POST {
        return json(StatusCode::METHOD_NOT_ALLOWED, jsonrpc::error_response(None, -32601, "the aggregated /mcp endpoint has no server stream; use /mcp/<server>"));
    }
    let env = match jsonrpc::parse(&bytes) {
        Ok(Message::Single(env)) => env,
        Ok(Message::Batch(_)) => return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, -32600, "batches are not supported on /mcp")),
        Err(e) => return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, e.code(), &e.to_string())),
    };
    if env.method() == Some("initialize") {
        return initialize(sc, &env);
    }
    let Some(session) = session_of(sc, headers) else {
        return json(StatusCode::NOT_FOUND, jsonrpc::error_response(env.id, -32001, "unknown or missing Mcp-Session-Id: initialize first"));
    };
    if !env.is_request() {
        // Notifications and responses: nothing upstream is waiting for them here.
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        return r;
    }
    match env.method() {
        Some("ping") => json(StatusCode::OK, jsonrpc::result_response(env.id, json!({}))),
        Some("tools/list") => tools_list(sc, snapshot, &session, &env).await,
        Some("tools/call") => tools_call(sc, snapshot, &session, headers, &env).await,
        Some(other) => {
            let msg = format!("{other} is not available on the aggregated /mcp endpoint; use /mcp/<server>");
            json(StatusCode::OK, jsonrpc::error_response(env.id, -32601, &msg))
        }
        None => json(StatusCode::OK, jsonrpc::error_response(env.id, -32600, "no method")),
    }
}

fn initialize(sc: &Sidecar, env: &Envelope<'_>) -> Response<Body> {
    let params: Value = env.params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or(Value::Null);
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    let version = SUPPORTED_VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(SUPPORTED_VERSIONS[0]);
    let id = format!("{:032x}", rand::random::<u128>());
    let session = Arc::new(Session { init_params: params, upstream: Default::default() });
    sc.sessions.by_id.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), session);
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!("Tools of every MCP server you may use, named <server>{SEPARATOR}<tool>, under Tollgate's policy."),
    });
    let mut r = json(StatusCode::OK, jsonrpc::result_response(env.id, result));
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// Headers for requests to `server` in this session, initializing the upstream session first.
async fn upstream_headers(sc: &Sidecar, session: &Session, server: &Server) -> Result<HeaderMap, String> {
    let mut sessions = session.upstream.lock().await;
    if let Some(h) = sessions.get(&server.name) {
        return Ok(h.clone());
    }
    let mut headers = HeaderMap::new();
    headers.insert(hyper::header::ACCEPT, header("application/json, text/event-stream"));
    headers.insert(hyper::header::CONTENT_TYPE, header("application/json"));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": session.init_params});
    let resp = sc.upstream.send(server, Method::POST, &headers, Bytes::from(init.to_string())).await.map_err(|e| e.to_string())?;
    if let Some(id) = resp.headers().get(SESSION_HEADER).cloned() {
        headers.insert(SESSION_HEADER, id);
    }
    let answer = messages(resp).await?;
    let version = answer.iter().find_map(|m| m.pointer("/result/protocolVersion")?.as_str().map(str::to_owned));
    let Some(version) = version else {
        return Err(format!("MCP server {} did not complete initialize", server.name));
    };
    if let Ok(v) = HeaderValue::from_str(&version) {
        headers.insert(VERSION_HEADER, v);
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    sc.upstream.send(server, Method::POST, &headers, Bytes::from(initialized.to_string())).await.map_err(|e| e.to_string())?;
    sessions.insert(server.name.clone(), headers.clone());
    Ok(headers)
}

async fn tools_list(sc: &Sidecar, snapshot: &Snapshot, session: &Session, env: &Envelope<'_>) -> Response<Body> {
    let Some(agent) = snapshot.agent.as_ref() else {
        let reason = snapshot.unavailable(&sc.config.agent, &sc.config.namespace).unwrap_or_default();
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &reason));
    };
    let refs = snapshot.policy_refs();
    let mut all = Vec::new();
    for server in snapshot.servers.values().filter(|s| agent.may_use_server(&s.name)) {
        let listed = async {
            let headers = upstream_headers(sc, session, server).await?;
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
            let resp = sc.upstream.send(server, Method::POST, &headers, Bytes::from(body.to_string())).await.map_err(|e| e.to_string())?;
            let msgs = messages(resp).await?;
            msgs.into_iter().find_map(|mut m| m.get_mut("result").map(Value::take)).ok_or_else(|| "no tools/list result".to_owned())
        };
        let mut result = match listed.await {
            Ok(r) => r,
            Err(e) => {
                // One broken server must not hide the others' tools.
                tracing::warn!(server = server.name, error = e, "tools/list failed on the aggregated endpoint");
                continue;
            }
        };
        policy::rewrite_tools_list(&mut result, |tool| {
            policy::visible(&refs, agent, &server.name, tool, sc.config.cluster_default).then(|| policy::justification_mode(&refs, &server.name, tool))
        });
        if let Some(Value::Array(tools)) = result.get_mut("tools") {
            for mut tool in tools.drain(..) {
                if let Some(name) = tool.get("name").and_then(Value::as_str).map(|n| format!("{}{SEPARATOR}{n}", server.name)) {
                    tool["name"] = Value::String(name);
                    all.push(tool);
                }
            }
        }
    }
    let mut result = json!({"tools": all});
    approvals::add_builtin_tools(&mut result);
    json(StatusCode::OK, jsonrpc::result_response(env.id, result))
}

async fn tools_call(sc: &Arc<Sidecar>, snapshot: &Snapshot, session: &Session, headers: &HeaderMap, env: &Envelope<'_>) -> Response<Body> {
    let mut params: serde_json::Map<String, Value> = match env.params.map(|p| serde_json::from_str(p.get())) {
        Some(Ok(p)) => p,
        _ => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, "invalid tools/call params")),
    };
    let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let (server, tool) = match name.split_once(SEPARATOR) {
        _ if name == GET_STATUS || name == REQUEST_APPROVAL => (snapshot.servers.values().next().cloned(), name.clone()),
        Some((server, tool)) => (snapshot.servers.get(server).cloned(), tool.to_owned()),
        None => (None, name.clone()),
    };
    let Some(server) = server else {
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("unknown tool {name:?}: tools here are named <server>{SEPARATOR}<tool>"), true));
    };
    // A held call runs in this session's upstream session for its server.
    let held_server = (name == GET_STATUS)
        .then(|| params.get("arguments")?.get("request_id")?.as_str().and_then(|id| sc.held.server_of(id)))
        .flatten()
        .and_then(|s| snapshot.servers.get(&s).cloned());
    let upstream = match (&held_server, name == GET_STATUS || name == REQUEST_APPROVAL) {
        (Some(s), _) => upstream_headers(sc, session, s).await,
        (None, true) => Ok(headers.clone()),
        (None, false) => upstream_headers(sc, session, &server).await,
    };
    let upstream = match upstream {
        Ok(h) => h,
        Err(e) => return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &e, true)),
    };
    params.insert("name".into(), Value::String(tool));
    let id: Value = env.id.and_then(|i| serde_json::from_str(i.get()).ok()).unwrap_or(Value::Null);
    let body = Bytes::from(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string());
    let Ok(Message::Single(inner)) = jsonrpc::parse(&body) else {
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, "re-encoding the call failed"));
    };
    // The agent's Accept decides how held calls answer; the upstream session's ids go along.
    let mut forwarded = upstream;
    if let Some(accept) = headers.get(hyper::header::ACCEPT) {
        forwarded.insert(hyper::header::ACCEPT, accept.clone());
    }
    crate::proxy::tools_call(sc, snapshot, &server, &forwarded, &inner, &body).await
}
