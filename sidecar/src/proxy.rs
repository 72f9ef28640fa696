//! The MCP endpoint the agent talks to. Only the JSON-RPC envelope is parsed; every method and
//! notification but `tools/list` and `tools/call` is forwarded byte for byte, both ways.

use crate::Sidecar;
use crate::body::{Body, full, streamed};
use crate::snapshot::{Server, Snapshot};
use crate::upstream::{copy_response_headers, header, is_event_stream};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tollgate_core::audit::{AgentRef, AuditDecision, AuditRecord, Outcome, RawJson, RecordKind};
use tollgate_core::jsonrpc::{self, Envelope, Incoming as Message};
use tollgate_core::policy::{self, Action, Args, Decision};

pub async fn serve(addr: SocketAddr, sidecar: Arc<Sidecar>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "MCP listening");
    // A client that never finishes its headers must not hold a connection (and its memory) forever.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(sidecar.config.header_read_timeout_seconds.max(1)));
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let sidecar = sidecar.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, sidecar.clone()));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

pub(crate) fn json(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, header("application/json"));
    r
}

/// A refusal before any message is read: the status says it, the body is a JSON-RPC error that
/// says why.
pub(crate) fn refused(status: u16, code: i64, message: &str) -> Response<Body> {
    json(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), jsonrpc::error_response(None, code, message))
}

/// `Host`, `Origin` and `Content-Type`, each at most once, by the sidecar's transport rules.
fn check_transport(sc: &Sidecar, req: &Request<Incoming>, is_post: bool) -> Result<(), tollgate_core::access::TransportRefusal> {
    let headers = req.headers();
    let one = |name: hyper::header::HeaderName, what: &'static str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (_, Some(_)) => Err(tollgate_core::access::TransportRefusal::Repeated(what)),
            (first, None) => Ok(first.and_then(|v| v.to_str().ok())),
        }
    };
    let host = one(hyper::header::HOST, "Host")?.or_else(|| req.uri().authority().map(|a| a.as_str()));
    sc.transport.check(is_post, host, one(hyper::header::ORIGIN, "Origin")?, one(CONTENT_TYPE, "Content-Type")?)
}

async fn handle(req: Request<Incoming>, sc: Arc<Sidecar>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let server_name = match path.strip_prefix("/mcp/") {
        Some(name) => Some(name.to_owned()),
        None if path == "/mcp" => None,
        None => return Ok(json(StatusCode::NOT_FOUND, jsonrpc::error_response(None, -32601, "not an MCP endpoint: use /mcp or /mcp/<server>"))),
    };
    // Transport first: a page in a browser must not reach the agent's tools (DNS rebinding).
    let is_post = req.method() == Method::POST;
    let transport = check_transport(&sc, &req, is_post);
    if let Err(r) = transport {
        tracing::info!(refusal = %r, "request refused at the transport");
        return Ok(refused(r.http_status(), -32600, &r.to_string()));
    }
    // Then the agent's rights, for every method: nothing reaches a server it may not use.
    let snapshot = sc.snapshot.load_full();
    let agent = match snapshot.agent_access(&sc.config.agent, &sc.config.namespace) {
        Ok(a) => a,
        Err(r) => return Ok(refused(r.http_status(), -32600, &r.to_string())),
    };
    let server = match &server_name {
        None => None,
        Some(name) => match tollgate_core::access::server_access(agent, name, snapshot.servers.contains_key(name)) {
            Ok(()) => snapshot.servers.get(name).cloned(),
            Err(r) => return Ok(refused(r.http_status(), -32600, &r.to_string())),
        },
    };
    let (parts, body) = req.into_parts();
    let bytes = if is_post {
        match Limited::new(body, sc.config.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let msg = format!("request body refused: {e} (the limit is {} bytes)", sc.config.max_body);
                return Ok(json(StatusCode::PAYLOAD_TOO_LARGE, jsonrpc::error_response(None, -32600, &msg)));
            }
        }
    } else {
        Bytes::new()
    };
    // What is decided here must be what the upstream runs: bodies parsers read differently go nowhere.
    if is_post && let Err(a) = tollgate_core::strict::check(&bytes) {
        let code = if matches!(a, tollgate_core::strict::Ambiguity::Json(_)) { -32700 } else { -32600 };
        return Ok(json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, code, &a.to_string())));
    }
    let Some(server) = server else {
        return Ok(crate::aggregate::handle(&sc, &snapshot, parts.method, &parts.headers, bytes).await);
    };
    if !is_post {
        // GET (the server's stream, resumable with Last-Event-ID) and DELETE (end of session).
        return Ok(forward(&sc, &server, parts.method, &parts.headers, Bytes::new(), None).await);
    }
    let message = match jsonrpc::parse(&bytes) {
        Ok(m) => m,
        Err(e) => return Ok(json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, e.code(), &e.to_string()))),
    };
    Ok(match message {
        Message::Single(env) => single(&sc, &snapshot, &server, &parts.headers, &env, &bytes).await,
        Message::Batch(elements) => batch(&sc, &snapshot, &server, &parts.headers, &elements, &bytes).await,
    })
}

/// Whether the firewall decides this message itself rather than passing it through.
fn decided_here(env: &Envelope<'_>) -> bool {
    // A `tools/call` without an id is decided too: refused, never forwarded unseen.
    env.method() == Some("tools/call") || (env.is_request() && env.method() == Some("tools/list"))
}

async fn single(sc: &Arc<Sidecar>, snapshot: &Snapshot, server: &Server, headers: &HeaderMap, env: &Envelope<'_>, bytes: &Bytes) -> Response<Body> {
    match env.method() {
        Some("tools/call") if env.id.is_none() => refuse_idless(sc, server, env),
        Some("tools/call") => tools_call(sc, snapshot, server, headers, env, bytes).await,
        Some("tools/list") if env.is_request() => tools_list(sc, snapshot, server, headers, env, bytes.clone()).await,
        _ => forward(sc, server, Method::POST, headers, bytes.clone(), env.id).await,
    }
}

/// A batch: `tools/call` and `tools/list` decided one by one, everything else forwarded upstream
/// as one batch of the elements' bytes as sent.
async fn batch(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    elements: &[jsonrpc::Element<'_>],
    bytes: &Bytes,
) -> Response<Body> {
    if !elements.iter().any(|e| e.envelope.as_ref().is_some_and(decided_here)) {
        return forward(sc, server, Method::POST, headers, bytes.clone(), None).await;
    }
    let mut parts: Vec<futures::future::BoxFuture<'_, Response<Body>>> = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for element in elements {
        match &element.envelope {
            None => parts.push(crate::batch::invalid_element()),
            Some(env) if decided_here(env) => {
                let raw = Bytes::copy_from_slice(element.raw.get().as_bytes());
                parts.push(Box::pin(async move { single(sc, snapshot, server, headers, env, &raw).await }));
            }
            Some(_) => rest.push(element.raw.get()),
        }
    }
    if !rest.is_empty() {
        let body = Bytes::from(format!("[{}]", rest.join(",")));
        parts.push(Box::pin(forward(sc, server, Method::POST, headers, body, None)));
    }
    crate::batch::answer(headers, parts).await
}

/// Passes a request through and streams the answer back unchanged.
async fn forward(sc: &Sidecar, server: &Server, method: Method, headers: &HeaderMap, body: Bytes, id: Option<&RawValue>) -> Response<Body> {
    match sc.upstream.send(server, method, headers, body).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut out = Response::new(streamed(body));
            *out.status_mut() = parts.status;
            copy_response_headers(&parts.headers, out.headers_mut(), true);
            out
        }
        Err(e) => json(StatusCode::BAD_GATEWAY, jsonrpc::error_response(id, -32603, &e.to_string())),
    }
}

/// Forwards `tools/list` and rewrites its answer: hidden tools dropped, justification added.
async fn tools_list(sc: &Sidecar, snapshot: &Snapshot, server: &Server, headers: &HeaderMap, env: &Envelope<'_>, body: Bytes) -> Response<Body> {
    if let Some(reason) = snapshot.unavailable(&sc.config.agent, &sc.config.namespace) {
        return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &reason));
    }
    let (parts, bytes) = match sc.upstream.call(server, Method::POST, headers, body).await {
        Ok(r) => r,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32603, &e.to_string())),
    };
    let sse = is_event_stream(&parts.headers);
    let rewrite = |message: &str| -> Option<String> {
        let mut v: Value = serde_json::from_str(message).ok()?;
        let result = v.get_mut("result")?;
        rewrite_listing(sc, snapshot, &server.name, result);
        serde_json::to_string(&v).ok()
    };
    let new_body = if sse {
        let mut parser = tollgate_core::sse::Parser::default();
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::new();
        // A trailing blank line ends the last event even if the server omitted it.
        for ev in parser.push(&text).unwrap_or_default().into_iter().chain(parser.push("\n\n").unwrap_or_default()) {
            match rewrite(&ev.data) {
                Some(json) if !ev.data.is_empty() => out.push_str(&tollgate_core::sse::replace_data(&ev, &json)),
                _ => {
                    out.push_str(&ev.raw);
                    out.push_str("\n\n");
                }
            }
        }
        Bytes::from(out)
    } else {
        match std::str::from_utf8(&bytes).ok().and_then(rewrite) {
            Some(json) => Bytes::from(json),
            None => bytes,
        }
    };
    let mut out = Response::new(full(new_body));
    *out.status_mut() = parts.status;
    copy_response_headers(&parts.headers, out.headers_mut(), false);
    out
}

fn rewrite_listing(sc: &Sidecar, snapshot: &Snapshot, server: &str, result: &mut Value) {
    let Some(agent) = &snapshot.agent else { return };
    let refs = snapshot.policy_refs();
    policy::rewrite_tools_list(result, |tool| {
        policy::visible(&refs, agent, server, tool, sc.config.cluster_default).then(|| policy::justification_mode(&refs, server, tool))
    });
    crate::approvals::add_builtin_tools(result);
}

/// A `tools/call` without an id (or with `"id": null`): as a notification it would run with no
/// answer to anyone; refused with a JSON-RPC error, and audited.
pub(crate) fn refuse_idless(sc: &Arc<Sidecar>, server: &Server, env: &Envelope<'_>) -> Response<Body> {
    let tool = jsonrpc::tool_call_params(env.params).map(|c| c.name).unwrap_or_default();
    let message = "a tools/call must carry an id: without one it is never forwarded";
    let decision = Decision::refused(policy::DecidedBy::InvalidRequest, message);
    let ctx = CallContext {
        sc,
        server,
        tool: &tool,
        arguments: &Value::Null,
        justification: None,
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    ctx.audit(RecordKind::Decision, None, false, None, None);
    ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, None);
    sc.metrics.tool_call("deny", "invalid_request");
    json(StatusCode::BAD_REQUEST, jsonrpc::error_response(None, -32600, message))
}

/// A `tools/call`: decided, then denied, forwarded, or held for approval.
pub(crate) async fn tools_call(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    raw: &Bytes,
) -> Response<Body> {
    let started = Instant::now();
    let call = match jsonrpc::tool_call_params(env.params) {
        Ok(c) => c,
        Err(e) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &e)),
    };
    let span = tracing::info_span!("tools_call", server = %server.name, tool = %call.name);
    tracing::Instrument::instrument(decide_and_act(sc, snapshot, server, headers, env, raw, call, started), span).await
}

#[allow(clippy::too_many_arguments)]
async fn decide_and_act(
    sc: &Arc<Sidecar>,
    snapshot: &Snapshot,
    server: &Server,
    headers: &HeaderMap,
    env: &Envelope<'_>,
    raw: &Bytes,
    call: jsonrpc::ToolCallParams<'_>,
    started: Instant,
) -> Response<Body> {
    if let Some(resp) = crate::approvals::builtin(sc, snapshot, server, headers, env, &call).await {
        return resp;
    }
    if let Some(reason) = snapshot.unavailable(&sc.config.agent, &sc.config.namespace) {
        sc.metrics.tool_call("deny", "not_loaded");
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("Access denied: {reason}"), true));
    }
    let Some(agent) = snapshot.agent.as_ref() else {
        return json(StatusCode::OK, jsonrpc::tool_text_result(env.id, "Access denied: no agent", true));
    };
    let arguments: Value = match call.arguments.map(|a| serde_json::from_str(a.get())) {
        None => Value::Object(Default::default()),
        Some(Ok(v)) => v,
        Some(Err(e)) => return json(StatusCode::OK, jsonrpc::error_response(env.id, -32602, &format!("invalid arguments: {e}"))),
    };
    let refs = snapshot.policy_refs();
    let mode = policy::justification_mode(&refs, &server.name, &call.name);
    let split = policy::split_justification(arguments, mode);
    let workflows = |w: &str| snapshot.workflows.contains_key(w);
    let args = Args::value(&split.arguments);
    let decided =
        policy::Call { agent, server: &server.name, tool: &call.name, args: &args, justification: split.justification.as_deref(), now: jiff::Timestamp::now() };
    let decision = policy::decide(&refs, &decided, &workflows, sc.config.cluster_default);
    let ctx = CallContext {
        sc,
        server,
        tool: &call.name,
        arguments: &split.arguments,
        justification: split.justification.as_deref(),
        decision: &decision,
        correlation: format!("{:016x}", rand::random::<u64>()),
        facts: Default::default(),
    };
    if decision.action != Action::RequireApproval {
        // A held call's decision record names its request: `hold` writes it.
        ctx.audit(RecordKind::Decision, None, false, None, None);
    }
    tracing::debug!(action = ?decision.action, by = %decision.decided_by, correlation = ctx.correlation, "tools/call decided");

    // What goes upstream: the call without its justification.
    let forward_body = if mode.is_some() {
        match env.params.map(|p| jsonrpc::with_arguments(env.id, p, &split.arguments)) {
            Some(Ok(b)) => Bytes::from(b),
            _ => raw.clone(),
        }
    } else {
        raw.clone()
    };
    match decision.action {
        Action::Deny => {
            sc.metrics.tool_call("deny", "denied");
            ctx.audit(RecordKind::Outcome, Some(Outcome::Denied), true, None, Some(started));
            json(StatusCode::OK, jsonrpc::tool_text_result(env.id, &format!("Access denied: {}", decision.deny_message()), true))
        }
        Action::Allow => {
            sc.metrics.tool_call("allow", "forwarded");
            let resp = call_upstream(sc, server, headers, forward_body, env.id).await;
            let outcome = if resp.status() == StatusCode::OK { Outcome::Forwarded } else { Outcome::UpstreamError };
            ctx.audit(RecordKind::Outcome, Some(outcome), outcome != Outcome::Forwarded, None, Some(started));
            resp
        }
        Action::RequireApproval => {
            let progress = call.meta.as_ref().and_then(|m| m.progress_token.clone());
            crate::approvals::hold(&ctx, headers, env.id.map(|i| i.get().to_owned()), forward_body, progress).await
        }
    }
}

/// Forwards an allowed call; a down, slow, huge or broken answer is an `isError` result naming
/// the server.
pub(crate) async fn call_upstream(sc: &Sidecar, server: &Server, headers: &HeaderMap, body: Bytes, id: Option<&RawValue>) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + server.timeout;
    match sc.upstream.send(server, Method::POST, headers, body).await {
        Ok(resp) => crate::answer::relay(resp, server, id, sc.upstream.max_answer, deadline).await,
        Err(e) => crate::answer::upstream_error(id, &e),
    }
}

/// One call's facts, for audit records and approval requests.
pub(crate) struct CallContext<'a> {
    pub sc: &'a Arc<Sidecar>,
    pub server: &'a Server,
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub justification: Option<&'a str>,
    pub decision: &'a Decision,
    pub correlation: String,
    /// Digest and redacted arguments, computed once for all of the call's records.
    pub facts: std::sync::OnceLock<(String, RawJson)>,
}

impl CallContext<'_> {
    /// The arguments' digest, computed once for the call's records and its approval request.
    pub fn digest(&self) -> &str {
        &self.facts().0
    }

    fn facts(&self) -> &(String, RawJson) {
        self.facts.get_or_init(|| (tollgate_core::digest::arguments_digest(self.arguments), RawJson::of(&tollgate_core::redact::Redacted(self.arguments))))
    }

    pub fn audit(&self, kind: RecordKind, outcome: Option<Outcome>, is_error: bool, request: Option<&str>, started: Option<Instant>) {
        self.sc.audit.emit(&self.record(kind, outcome, is_error, request, started));
    }

    /// The record `audit` writes; a held call keeps one to fill in when it ends.
    pub fn record(&self, kind: RecordKind, outcome: Option<Outcome>, is_error: bool, request: Option<&str>, started: Option<Instant>) -> AuditRecord {
        let (policy, rule) = match &self.decision.decided_by {
            policy::DecidedBy::Rule { policy, rule, .. } => (Some(policy.to_string()), Some(rule.clone())),
            other => (Some(other.to_string()), None),
        };
        AuditRecord {
            time: jiff::Timestamp::now().to_string(),
            kind,
            correlation_id: self.correlation.clone(),
            agent: AgentRef {
                namespace: self.sc.config.namespace.clone(),
                name: self.sc.config.agent.clone(),
                pod: Some(self.sc.config.pod.clone()).filter(|p| !p.is_empty()),
                service_account: self.sc.snapshot.load().agent.as_ref().map(|a| a.service_account.clone()).unwrap_or_default(),
            },
            server: self.server.name.clone(),
            tool: self.tool.to_owned(),
            arguments_digest: self.facts().0.clone(),
            arguments: self.facts().1.clone(),
            justification: self.justification.map(|j| tollgate_core::redact::redact_str(j).into_owned()),
            decision: AuditDecision::from(self.decision.action),
            policy,
            rule,
            approval_request: request.map(str::to_owned),
            approvers: Vec::new(),
            outcome,
            is_error,
            duration_ms: started.map(|s| s.elapsed().as_secs_f64() * 1000.0),
            error: self.decision.error.clone(),
        }
    }
}
