//! `/mcp`: one MCP server made of every server the agent may use, plus the built-in approval
//! tools. Tools and prompts are named `<server>__<name>`, resource URIs `<server>+<uri>`
//! (`tollgate_core::mcp::aggregate`); tools stay under policy. Lists are merged, requests about one
//! prompt or resource go to its server, the GET stream merges the servers' streams, and requests
//! the servers send the client (sampling, elicitation, roots) reach it with ids that lead back.

mod relay;
mod session;

pub use session::Sessions;
use session::{SESSION_HEADER, Session};

use crate::approvals::{self, GET_STATUS, REQUEST_APPROVAL};
use crate::body::Body;
use crate::body::json;
use crate::snapshot::{Server, Snapshot};
use crate::state::Sidecar;
use bytes::Bytes;
use hyper::header::{ACCEPT, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use rmcp::model::{Implementation, InitializeResult, ProtocolVersion};
use serde_json::{Value, json};
use std::sync::Arc;
use tollgate_core::mcp::aggregate::{self as names, SEPARATOR};
use tollgate_core::mcp::jsonrpc::{self, Envelope, Incoming as Message};
use tollgate_core::mcp::methods::{self, Aggregated};
use tollgate_core::policy;

const SUPPORTED_VERSIONS: &[ProtocolVersion] = &[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_03_26];
/// Pages of a list fetched from one server at most.
const MAX_PAGES: usize = 64;

pub async fn handle(sc: &Arc<Sidecar>, snapshot: &Snapshot, method: Method, headers: &HeaderMap, bytes: Bytes) -> Response<Body> {
    if method == Method::DELETE {
        if let Some(session) = sc.sessions.remove(headers) {
            for (name, upstream) in session.opened() {
                if let Some(server) = snapshot.servers.get(&name) {
                    let _ = sc.upstream.send(server, Method::DELETE, &upstream.headers, Bytes::new()).await;
                }
            }
        }
        return json(StatusCode::OK, Vec::new());
    }
    if method == Method::GET {
        return match sc.sessions.get(headers) {
            Some(session) => relay::stream(sc, snapshot, &session).await,
            None => unknown_session(None),
        };
    }
    if method != Method::POST {
        return json(StatusCode::METHOD_NOT_ALLOWED, jsonrpc::error_response(None, -32601, "use POST, GET or DELETE"));
    }
    match jsonrpc::parse(&bytes) {
        Ok(Message::Single(env)) if env.method() == Some("initialize") => initialize(sc, snapshot, &env).await,
        Ok(Message::Single(env)) => one(sc, snapshot, headers, &env, &bytes).await,
        Ok(Message::Batch(elements)) => {
            let parts = elements.iter().map(|element| match &element.envelope {
                None => crate::batch::invalid_element(),
                Some(env) if env.method() == Some("initialize") => {
                    Box::pin(async move { json(StatusCode::OK, jsonrpc::error_response(env.id, -32600, "initialize must not be part of a batch")) })
                }
                Some(env) => Box::pin(one(sc, snapshot, headers, env, element.raw.get().as_bytes())),
            });
            crate::batch::answer(headers, parts.collect()).await
        }
        Err(e) => json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, e.code(), &e.to_string())),
    }
}

fn unknown_session(id: Option<&serde_json::value::RawValue>) -> Response<Body> {
    json(StatusCode::NOT_FOUND, jsonrpc::error_response(id, -32001, "unknown or missing Mcp-Session-Id: initialize first"))
}

/// One message of an initialized session.
async fn one(sc: &Arc<Sidecar>, snapshot: &Snapshot, headers: &HeaderMap, env: &Envelope<'_>, raw: &[u8]) -> Response<Body> {
    let Some(session) = sc.sessions.get(headers) else { return unknown_session(env.id) };
    let Some(method) = env.method() else {
        return relay::response_from_client(sc, snapshot, &session, raw).await;
    };
    if env.id.is_none() {
        if method == "tools/call" {
            let server = Server::local(String::new(), std::time::Duration::ZERO);
            return crate::tools::refuse_idless(sc, &server, env);
        }
        return relay::notification_from_client(sc, snapshot, &session, method, raw).await;
    }
    let params: Value = env.params.and_then(|p| serde_json::from_str(p).ok()).unwrap_or_else(|| json!({}));
    match methods::aggregated(method) {
        Aggregated::Ping => json(StatusCode::OK, jsonrpc::result_response(env.id, json!({}))),
        Aggregated::List(key) => list(sc, snapshot, &session, env, method, key).await,
        Aggregated::ToolsCall => tools_call(sc, snapshot, &session, headers, env, params).await,
        Aggregated::HeldTask => held_task(sc, snapshot, &session, env, &params).await,
        Aggregated::Routed => routed(sc, snapshot, &session, headers, env, method, params).await,
        Aggregated::Broadcast => {
            let sends = session.opened().into_iter().filter(|(_, u)| u.offers("logging")).filter_map(|(name, upstream)| {
                let server = snapshot.servers.get(&name)?;
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
                Some(async move { sc.upstream.send(server, Method::POST, &upstream.headers, Bytes::from(body.to_string())).await })
            });
            futures::future::join_all(sends).await;
            json(StatusCode::OK, jsonrpc::result_response(env.id, json!({})))
        }
        Aggregated::NotFound => json(StatusCode::OK, jsonrpc::error_response(env.id, -32601, &format!("method not found: {method}"))),
    }
}

/// `tasks/*` here: only the tasks of calls held for approval live on the aggregate; a server's
/// own tasks are polled where they were made, on `/mcp/<server>`.
async fn held_task(sc: &Arc<Sidecar>, snapshot: &Snapshot, session: &Session, env: &Envelope<'_>, params: &Value) -> Response<Body> {
    let Some(request) = approvals::tasks::task_request(params) else {
        let text = "unknown task: the aggregated endpoint keeps only the tasks of calls held for approval; a server's own tasks are polled on /mcp/<server>";
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, text));
    };
    // The held call runs in this session's upstream session for its server.
    let headers = match sc.held.server_of(request).and_then(|s| snapshot.servers.get(&s)) {
        Some(server) => match session.upstream(&sc.upstream, server).await {
            Ok(u) => u.headers,
            Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e)),
        },
        None => HeaderMap::new(),
    };
    approvals::tasks::answer(sc, None, env, request, &headers).await
}

/// `initialize`: opens the upstream session of every server the agent may use, and answers with
/// what they offer together.
async fn initialize(sc: &Sidecar, snapshot: &Snapshot, env: &Envelope<'_>) -> Response<Body> {
    if env.params.is_some_and(|p| p.len() > session::MAX_INIT_PARAMS) {
        let msg = format!("initialize params larger than {} bytes are refused", session::MAX_INIT_PARAMS);
        return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(env.id, -32600, &msg));
    }
    let params: Value = env.params.and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    let version = SUPPORTED_VERSIONS.iter().find(|v| v.as_str() == asked).unwrap_or(&SUPPORTED_VERSIONS[0]).clone();
    let session = Arc::new(Session::new(params));
    let servers: Vec<&Server> = snapshot.usable_servers().collect();
    let opened = futures::future::join_all(servers.iter().map(|s| session.upstream(&sc.upstream, s))).await;
    let mut instructions = format!("Tools of every MCP server you may use, named <server>{SEPARATOR}<tool>, under Tollgate's policy.");
    let mut capabilities = Vec::new();
    for (server, result) in servers.iter().zip(opened) {
        match result {
            Ok(upstream) => {
                if let Some(text) = &upstream.instructions {
                    instructions.push_str(&format!("\n\n[{}]\n{text}", server.name));
                }
                capabilities.push(upstream.capabilities);
            }
            // Its tools are missing until it answers; a call to it says why.
            Err(e) => tracing::warn!(server = server.name, error = e, "MCP server unavailable at initialize"),
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    sc.sessions.insert(id.clone(), session);
    let result = InitializeResult::new(names::merge_capabilities(&capabilities))
        .with_protocol_version(version)
        .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
        .with_instructions(instructions);
    let mut r = json(StatusCode::OK, jsonrpc::typed_response(env.id, &result));
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

/// Every page of `method` from one server: the items under `key`.
async fn list_one(sc: &Sidecar, session: &Session, server: &Server, method: &str, key: &str) -> Result<Vec<Value>, String> {
    let upstream = session.upstream(&sc.upstream, server).await?;
    let capability = method.split('/').next().unwrap_or_default();
    if !upstream.offers(capability) {
        return Ok(Vec::new());
    }
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.take().map_or_else(|| json!({}), |c| json!({"cursor": c}));
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (_, answer) = sc.upstream.messages(server, Method::POST, &upstream.headers, Bytes::from(body.to_string())).await.map_err(|e| e.to_string())?;
        let mut result = answer.into_iter().find_map(|mut m| m.get_mut("result").map(Value::take)).ok_or_else(|| format!("no {method} result"))?;
        if let Some(Value::Array(page)) = result.get_mut(key).map(Value::take) {
            items.extend(page);
        }
        cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

/// A list merged across servers, under aggregated names; tools under policy.
async fn list(sc: &Sidecar, snapshot: &Snapshot, session: &Session, env: &Envelope<'_>, method: &str, key: &'static str) -> Response<Body> {
    let Some(agent) = snapshot.agent.as_ref() else {
        let reason = snapshot.unavailable(&sc.config.agent, &sc.config.namespace).unwrap_or_default();
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &reason));
    };
    let refs = snapshot.policy_refs();
    let servers: Vec<&Server> = snapshot.usable_servers().collect();
    let lists = futures::future::join_all(servers.iter().map(|s| list_one(sc, session, s, method, key))).await;
    let mut all = Vec::new();
    for (server, listed) in servers.iter().zip(lists) {
        let items = match listed {
            Ok(items) => items,
            Err(e) => {
                // One broken server must not hide the others.
                tracing::warn!(server = server.name, error = e, method, "listing failed on the aggregated endpoint");
                continue;
            }
        };
        let mut result = json!({ key: items });
        if key == "tools" {
            policy::rewrite_tools_list(&mut result, |tool| {
                policy::visible(&refs, agent, &server.name, tool, sc.config.cluster_default).then(|| policy::justification_mode(&refs, &server.name, tool))
            });
        }
        names::prefix_uris(&server.name, &mut result);
        let Some(Value::Array(items)) = result.get_mut(key).map(Value::take) else { continue };
        for mut item in items {
            if matches!(key, "tools" | "prompts") {
                let Some(name) = item.get("name").and_then(Value::as_str).map(|n| names::prefixed(&server.name, n)) else { continue };
                item["name"] = Value::String(name);
            }
            all.push(item);
        }
    }
    let mut result = json!({ key: all });
    if key == "tools" {
        approvals::add_builtin_tools(&mut result);
    }
    json(StatusCode::OK, jsonrpc::result_response(env.id, result))
}

/// Which server a request about one prompt or resource is for, and its params in that server's
/// own names.
fn route(method: &str, mut params: Value) -> Result<(String, Value), String> {
    fn unprefix(v: Option<&mut Value>, split: fn(&str) -> Option<(&str, &str)>, what: &str) -> Result<String, String> {
        let v = v.ok_or_else(|| format!("no {what} given"))?;
        let given = v.as_str().unwrap_or_default().to_owned();
        let (server, own) = split(&given).ok_or_else(|| {
            format!(
                "unknown {what} {given:?}: on /mcp they read <server>{SEPARATOR}<name> for prompts and <server>+<uri> for resources, as the lists give them"
            )
        })?;
        *v = Value::String(own.to_owned());
        Ok(server.to_owned())
    }
    let server = match method {
        "prompts/get" => unprefix(params.get_mut("name"), names::split_name, "prompt")?,
        "completion/complete" => match params.pointer("/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => unprefix(params.pointer_mut("/ref/name"), names::split_name, "prompt")?,
            _ => unprefix(params.pointer_mut("/ref/uri"), names::split_uri, "resource")?,
        },
        _ => unprefix(params.get_mut("uri"), names::split_uri, "resource")?,
    };
    Ok((server, params))
}

async fn routed(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    session: &Session,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    method: &str,
    params: Value,
) -> Response<Body> {
    let (server_name, params) = match route(method, params) {
        Ok(r) => r,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &e)),
    };
    let server = match snapshot.servers.get(&server_name) {
        Some(s) if snapshot.usable_servers().any(|u| u.name == s.name) => s,
        _ => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &format!("no MCP server {server_name:?} for this agent"))),
    };
    let upstream = match session.upstream(&sc.upstream, server).await {
        Ok(u) => u,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e)),
    };
    let mut forwarded = upstream.headers.clone();
    if let Some(accept) = headers.get(ACCEPT) {
        forwarded.insert(ACCEPT, accept.clone());
    }
    let id: Value = env.id.and_then(|i| serde_json::from_str(i.get()).ok()).unwrap_or(Value::Null);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    match sc.upstream.send(server, Method::POST, &forwarded, Bytes::from(body.to_string())).await {
        Ok(resp) => relay::to_client(&server.name, resp).await,
        Err(e) => json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e.to_string())),
    }
}

async fn tools_call(sc: &Arc<Sidecar>, snapshot: &Snapshot, session: &Session, headers: &HeaderMap, env: &Envelope<'_>, mut params: Value) -> Response<Body> {
    let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let builtin = name == GET_STATUS || name == REQUEST_APPROVAL;
    // A held call runs in this session's upstream session for its server.
    let held_server = (name == GET_STATUS)
        .then(|| params.pointer("/arguments/request_id")?.as_str().and_then(|id| sc.held.server_of(id)))
        .flatten()
        .and_then(|s| snapshot.servers.get(&s).cloned());
    let (server, tool) = match names::split_name(&name) {
        _ if builtin => (held_server.clone().or_else(|| snapshot.servers.values().next().cloned()), name.clone()),
        Some((server, tool)) => (snapshot.servers.get(server).cloned(), tool.to_owned()),
        None => (None, name.clone()),
    };
    let Some(server) = server else {
        return json(
            StatusCode::OK,
            jsonrpc::tool_text_result(env.id, &format!("unknown tool {name:?}: tools here are named <server>{SEPARATOR}<tool>"), true),
        );
    };
    let upstream = match (&held_server, builtin) {
        (Some(s), _) => session.upstream(&sc.upstream, s).await.map(|u| u.headers),
        (None, true) => Ok(headers.clone()),
        (None, false) => session.upstream(&sc.upstream, &server).await.map(|u| u.headers),
    };
    let mut forwarded = match upstream {
        Ok(h) => h,
        Err(e) => return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &e, true)),
    };
    params["name"] = Value::String(tool);
    let id: Value = env.id.and_then(|i| serde_json::from_str(i.get()).ok()).unwrap_or(Value::Null);
    let body = Bytes::from(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string());
    let Ok(Message::Single(inner)) = jsonrpc::parse(&body) else {
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, "re-encoding the call failed"));
    };
    // The agent's Accept decides how held calls answer; the upstream session's ids go along.
    if let Some(accept) = headers.get(ACCEPT) {
        forwarded.insert(ACCEPT, accept.clone());
    }
    let resp = crate::tools::tools_call(sc, snapshot, &server, &forwarded, &inner, &body, Default::default()).await;
    relay::to_client(&server.name, resp).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_their_prefix() {
        let (s, p) = route("prompts/get", json!({"name": "docs__summarize", "arguments": {"a": "1"}})).unwrap();
        assert_eq!((s.as_str(), p), ("docs", json!({"name": "summarize", "arguments": {"a": "1"}})));
        let (s, p) = route("resources/read", json!({"uri": "docs+file:///x"})).unwrap();
        assert_eq!((s.as_str(), p), ("docs", json!({"uri": "file:///x"})));
        let (s, p) = route("completion/complete", json!({"ref": {"type": "ref/prompt", "name": "a__p"}, "argument": {}})).unwrap();
        assert_eq!((s.as_str(), &p["ref"]["name"]), ("a", &json!("p")));
        let (s, p) = route("completion/complete", json!({"ref": {"type": "ref/resource", "uri": "a+t://{x}"}})).unwrap();
        assert_eq!((s.as_str(), &p["ref"]["uri"]), ("a", &json!("t://{x}")));
        let e = route("resources/read", json!({"uri": "file:///x"})).unwrap_err();
        assert!(e.contains("<server>+<uri>"), "{e}");
        assert!(route("prompts/get", json!({})).is_err());
    }
}
