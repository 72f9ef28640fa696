//! The listener the agent talks to: every request passes the transport rules, the agent's rights
//! and the one-reading check here, whatever its endpoint and method, before `/mcp/<server>`
//! ([`crate::proxy`]) or `/mcp` ([`crate::aggregate`]) sees it.

use crate::body::{Body, json, refused};
use crate::state::Sidecar;
use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::mcp::jsonrpc;
use tollgate_mcp_client::transport;

pub async fn serve(addr: SocketAddr, sidecar: Arc<Sidecar>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "MCP listening");
    // A client that never finishes its headers must not hold a connection (and its memory) forever.
    // HTTP/1 only, as MCP clients speak it: working out the version of a connection that sends
    // nothing has no deadline, so it held the connection for ever.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(sidecar.config.header_read_timeout_seconds.max(1)));
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = tollgate_runtime::accept(&listener).await;
        let _ = stream.set_nodelay(true);
        let sidecar = sidecar.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, sidecar.clone()));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `Host`, `Origin` and `Content-Type`, each at most once, by the sidecar's transport rules. A
/// redirected connection's `Host` is the MCP server the agent dialled, not the sidecar.
fn check_transport(sc: &Sidecar, req: &Request<Incoming>, is_post: bool, redirected: bool) -> Result<(), tollgate_core::mcp::access::TransportRefusal> {
    let headers = req.headers();
    let one = |name: hyper::header::HeaderName, what: &'static str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (_, Some(_)) => Err(tollgate_core::mcp::access::TransportRefusal::Repeated(what)),
            (first, None) => Ok(first.and_then(|v| v.to_str().ok())),
        }
    };
    let host = one(hyper::header::HOST, "Host")?.or_else(|| req.uri().authority().map(|a| a.as_str()));
    let (origin, content_type) = (one(hyper::header::ORIGIN, "Origin")?, one(CONTENT_TYPE, "Content-Type")?);
    if redirected {
        return sc.transport.check_redirected(is_post, origin, content_type);
    }
    sc.transport.check(is_post, host, origin, content_type)
}

/// The 2026-07-28 routing headers, checked against the body they mirror before anything is
/// decided: an upstream (or a proxy before it) may route on them. A lying `tools/call` is audited.
/// The refusal, if any.
fn check_routing_headers(sc: &Arc<Sidecar>, headers: &hyper::HeaderMap, bytes: &Bytes, server: Option<&crate::snapshot::Server>) -> Option<Response<Body>> {
    use tollgate_core::mcp::routing::{self, RoutingHeaders};
    let mut h = RoutingHeaders::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let value = value.to_str().unwrap_or("\u{fffd}");
        let slot = match name {
            "mcp-method" => &mut h.method,
            "mcp-name" => &mut h.name,
            "mcp-protocol-version" => &mut h.protocol_version,
            _ => match name.strip_prefix("mcp-param-") {
                Some(token) => {
                    h.params.push((token, value));
                    if seen.contains(&name) {
                        h.repeated = Some(name);
                    }
                    seen.push(name);
                    continue;
                }
                None => continue,
            },
        };
        if slot.is_some() {
            h.repeated = Some(name);
        }
        *slot = Some(value);
    }
    // Every client sends the protocol version; only a 2026-07-28 request also mirrors its body
    // (and then its version is checked against `_meta` too). Others cost no second parse.
    if h.method.is_none() && h.name.is_none() && h.params.is_empty() && h.repeated.is_none() {
        return None;
    }
    let refuse = |env: Option<&jsonrpc::Envelope<'_>>, e: &dyn std::fmt::Display| {
        let message = e.to_string();
        if let (Some(env), Some(server)) = (env, server)
            && env.method() == Some("tools/call")
        {
            return crate::tools::refuse_invalid(sc, server, env, &message, StatusCode::BAD_REQUEST, routing::HEADER_MISMATCH);
        }
        json(StatusCode::BAD_REQUEST, jsonrpc::error_response(env.and_then(|e| e.id), routing::HEADER_MISMATCH, &message))
    };
    match jsonrpc::parse(bytes) {
        Ok(jsonrpc::Incoming::Single(env)) => {
            let params: serde_json::Value = env.params.and_then(|p| serde_json::from_str(p).ok()).unwrap_or_default();
            routing::check(&h, &env, &params).err().map(|e| refuse(Some(&env), &e))
        }
        Ok(jsonrpc::Incoming::Batch(_)) if h.method.is_some() || h.name.is_some() || !h.params.is_empty() => {
            Some(refuse(None, &routing::HeaderMismatch::Batch))
        }
        // Not JSON-RPC: refused as such further on.
        _ => None,
    }
}

async fn handle(req: Request<Incoming>, sc: Arc<Sidecar>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let server_name = match path.strip_prefix("/mcp/") {
        Some(name) => Some(name.to_owned()),
        None if path == "/mcp" => None,
        None => return Ok(json(StatusCode::NOT_FOUND, jsonrpc::error_response(None, -32601, "not an MCP endpoint: use /mcp or /mcp/<server>"))),
    };
    Ok(route(req, sc, server_name, false).await)
}

/// A request on a connection the agent dialled to an MCP server's own address (transparent
/// mode): decided exactly as on `/mcp/<server>`, for the server at that address whose MCP
/// endpoint the request names (several may share a host and port). Nothing else is reachable.
pub async fn handle_redirected(req: Request<Incoming>, sc: Arc<Sidecar>, servers: Arc<[String]>) -> Result<Response<Body>, Infallible> {
    let snapshot = sc.snapshot.load();
    let endpoints: Vec<(&String, &str)> =
        servers.iter().filter_map(|n| snapshot.servers.get(n).map(|s| (n, tollgate_core::k8s::transparent::url_path(&s.url)))).collect();
    let Some((server, _)) = endpoints.iter().find(|(_, path)| *path == req.uri().path()) else {
        let paths: Vec<&str> = endpoints.iter().map(|(_, p)| *p).collect();
        let msg = format!("only the MCP endpoints of MCP servers {} ({}) are reachable at this address through Tollgate", servers.join(", "), paths.join(", "));
        return Ok(json(StatusCode::NOT_FOUND, jsonrpc::error_response(None, -32601, &msg)));
    };
    let server = (*server).clone();
    drop(snapshot);
    Ok(route(req, sc, Some(server), true).await)
}

async fn route(req: Request<Incoming>, sc: Arc<Sidecar>, server_name: Option<String>, redirected: bool) -> Response<Body> {
    // Transport first: a page in a browser must not reach the agent's tools (DNS rebinding).
    let is_post = req.method() == Method::POST;
    let transport = check_transport(&sc, &req, is_post, redirected);
    if let Err(r) = transport {
        tracing::info!(refusal = %r, "request refused at the transport");
        return refused(r.http_status(), -32600, &r.to_string());
    }
    // Then the agent's rights, for every method: nothing reaches a server it may not use.
    let snapshot = sc.snapshot.load_full();
    let agent = match snapshot.agent_access(&sc.config.agent, &sc.config.namespace) {
        Ok(a) => a,
        Err(r) => return refused(r.http_status(), -32600, &r.to_string()),
    };
    let server = match &server_name {
        None => None,
        Some(name) => match tollgate_core::mcp::access::server_access(agent, name, snapshot.servers.contains_key(name)) {
            Ok(()) => snapshot.servers.get(name),
            Err(r) => return refused(r.http_status(), -32600, &r.to_string()),
        },
    };
    let (parts, body) = req.into_parts();
    let bytes = if is_post {
        match transport::read_request(body, sc.config.max_body, Duration::from_secs(sc.config.request_body_seconds)).await {
            Ok(b) => b,
            Err(e) => return json(e.status(), jsonrpc::error_response(None, -32600, &format!("request refused: {e}"))),
        }
    } else {
        Bytes::new()
    };
    // What is decided here must be what the upstream runs: bodies parsers read differently go nowhere.
    // The one reading also yields a single message's envelope, params and arguments, so nothing
    // reads the body again to decide it.
    let checked = if is_post { tollgate_core::mcp::strict::read(&bytes) } else { Ok(Default::default()) };
    let message = match checked {
        Ok(checked) => checked.message,
        Err(a) => {
            let code = if matches!(a, tollgate_core::mcp::strict::Ambiguity::Json(_)) { -32700 } else { -32600 };
            return json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, code, &a.to_string()));
        }
    };
    if is_post && let Some(refusal) = check_routing_headers(&sc, &parts.headers, &bytes, server) {
        return refusal;
    }
    let is_get = parts.method == Method::GET;
    let resp = match &server {
        None => crate::aggregate::handle(&sc, &snapshot, parts.method, &parts.headers, bytes.clone()).await,
        Some(server) => crate::proxy::handle(&sc, &snapshot, server, parts.method, &parts.headers, bytes.clone(), message).await,
    };
    if !is_get || !resp.status().is_success() {
        return resp;
    }
    // The GET stream stays open for as long as the agent keeps its rights to it.
    let (head, body) = resp.into_parts();
    Response::from_parts(head, crate::guard::while_allowed(&sc, body, server.map(|s| s.name.clone())))
}
