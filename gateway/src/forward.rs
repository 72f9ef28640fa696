//! One model call: the agent by its key, the model it may use, its budgets reserved, the
//! provider called with the provider's credential (never the agent's key), the answer passed back
//! (streams event by event) and the call settled in the ledger. Every refusal is in the
//! provider's own error format.

use crate::ledger::{Claim, InFlight, LedgerError, Reservation, Unit};
use crate::settlement::{Settlement, Unsettled};
use crate::state::GatewayState;
use crate::stream;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_core::model::call::{self, Caller, Ending, ModelCallRecord};
use tollgate_core::model::request::Operation;
use tollgate_core::model::spend::{self, Usage};
use tollgate_core::model::{self, Api, Refusal};
use tollgate_mcp_client::transport::{self, Body, full};
use tracing::Instrument;

/// Request headers passed to the provider as they are. (Names made once, not parsed from text
/// at every lookup and insert of every call.)
const FORWARDED: [HeaderName; 4] =
    [HeaderName::from_static("accept"), ANTHROPIC_VERSION, HeaderName::from_static("anthropic-beta"), HeaderName::from_static("openai-beta")];
/// Response headers passed back as they are (a 429's advice on when to retry included).
const RETURNED: [HeaderName; 6] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("retry-after"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("request-id"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
];
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// The client's word for its pod.
const POD: HeaderName = HeaderName::from_static("x-tollgate-pod");
/// Set when a soft limit of a budget that applies is reached: served, with a warning.
pub const BUDGET_WARNING: &str = "x-tollgate-budget-warning";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Models,
    ChatCompletions,
    Responses,
    Messages,
}

impl Endpoint {
    /// The GenAI operation a request to it is (`gen_ai.operation.name`).
    fn operation(self) -> &'static str {
        match self {
            Endpoint::Models => "list_models",
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        }
    }
}

fn refuse(api: Api, r: &Refusal) -> Response<Body> {
    let mut resp = Response::new(full(r.body(api)));
    *resp.status_mut() = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The SDKs wait this long before they retry a 429.
    if let Some(secs) = r.retry_after() {
        resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

pub async fn handle(req: Request<Incoming>, gw: Arc<GatewayState>) -> Response<Body> {
    if req.uri().path().starts_with("/audit/") {
        return crate::audit_api::handle(req, gw).await;
    }
    if req.uri().path() == "/slack/interactions" {
        return crate::slack::handle(req, gw).await;
    }
    let endpoint = match (req.method(), req.uri().path()) {
        (&Method::GET, "/openai/v1/models") => (Api::OpenAi, Endpoint::Models),
        (&Method::POST, "/openai/v1/chat/completions") => (Api::OpenAi, Endpoint::ChatCompletions),
        (&Method::POST, "/openai/v1/responses") => (Api::OpenAi, Endpoint::Responses),
        (&Method::POST, "/anthropic/v1/messages") => (Api::Anthropic, Endpoint::Messages),
        (_, path) => {
            let api = if path.starts_with("/anthropic") { Api::Anthropic } else { Api::OpenAi };
            return refuse(api, &Refusal::BadRequest(format!("{} {path} is not served here", req.method())));
        }
    };
    let (api, endpoint) = endpoint;
    let span = crate::trace::model_call(api, &endpoint, endpoint.operation(), req.headers());
    let mut who = Who::default();
    match call(req, &gw, api, endpoint, &span, &mut who).instrument(span.clone()).await {
        Ok(resp) => resp,
        Err(r) => {
            crate::trace::refused(&span, &r);
            let agent = who.agent.as_ref();
            tracing::info!(
                refusal = %r,
                namespace = agent.map(|a| a.namespace.as_str()),
                agent = agent.map(|a| a.name.as_str()),
                model = who.model.as_deref(),
                "model call refused"
            );
            gw.metrics.tool_call("deny", "model_refused");
            // A refusal of a known agent is a decision like any other: it goes into the audit
            // store. (Without a valid key there is nobody to attribute it to.)
            if let Some(agent) = who.agent {
                let record = ModelCallRecord::refused(crate::settlement::record_agent(&agent, None), who.model, &r, jiff::Timestamp::now());
                let source =
                    crate::audit_store::Source { namespace: agent.namespace.clone(), service_account: agent.spec.service_account_name.clone(), shipped: false };
                if gw.settled.send(crate::recorder::Entry::Refusal(Box::new(crate::audit_store::Prepared::model_call(&source, &record)))).await.is_err() {
                    tracing::error!("the ledger writer has stopped: a refusal was not audited");
                }
            }
            refuse(api, &r)
        }
    }
}

/// Who a call turned out to be from, as far as it got: what a refusal is attributed to.
#[derive(Default)]
struct Who {
    agent: Option<Arc<crate::index::Agent>>,
    model: Option<String>,
}

/// The agent's key, from either SDK's header.
fn presented_key(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers();
    let bearer = h.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let x_api_key = h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
    bearer.or(x_api_key).filter(|k| !k.is_empty()).map(str::to_owned)
}

async fn call(
    req: Request<Incoming>,
    gw: &Arc<GatewayState>,
    api: Api,
    endpoint: Endpoint,
    span: &tracing::Span,
    who: &mut Who,
) -> Result<Response<Body>, Refusal> {
    let index = gw.index.load_full();
    if !index.loaded {
        return Err(Refusal::NotReady);
    }
    let key = presented_key(&req).ok_or(Refusal::NoKey)?;
    let agent = index.agents.get(&tollgate_core::model::keys::hash(&key)).cloned().ok_or(Refusal::BadKey)?;
    who.agent = Some(agent.clone());
    crate::trace::agent(span, &agent.namespace, &agent.name);
    let caller = Caller { name: &agent.name, namespace: &agent.namespace, labels: &agent.labels, spec: &agent.spec };
    let betas = call::BETA_HEADERS.iter().flat_map(|h| req.headers().get_all(*h).iter().map(move |v| (*h, v.to_str().unwrap_or("(not text)"))));
    call::admit_headers(&caller, betas, &gw.config.allowed_betas)?;
    let no_providers = Vec::new();
    let providers = index.providers.get(&agent.namespace).unwrap_or(&no_providers);
    let op = match endpoint {
        Endpoint::Models => return Ok(models_list(providers, &agent.spec.models.clone().unwrap_or_default().allowed)),
        Endpoint::ChatCompletions => Operation::ChatCompletions,
        Endpoint::Responses => Operation::Responses,
        Endpoint::Messages => Operation::Messages,
    };
    // The client's word for its pod, and nothing more: an agent's key proves the agent, not the
    // pod, so this is kept as a claim in the audit record and never in the ledger's pod column.
    let pod: String = req.headers().get(&POD).and_then(|v| v.to_str().ok()).unwrap_or_default().chars().take(253).collect();
    let client_headers = req.headers().clone();
    let bytes = transport::read_request(req.into_body(), gw.config.max_body, Duration::from_secs(gw.config.request_body_seconds))
        .await
        .map_err(|e| Refusal::BadBody { status: e.status().as_u16(), reason: e.to_string() })?;
    let body: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let requested = model::requested_model(&body)?.to_owned();
    crate::trace::model(span, endpoint.operation(), &requested);
    who.model = Some(requested.clone());
    let no_budgets = Vec::new();
    let budgets = index.budgets.get(&agent.namespace).unwrap_or(&no_budgets);
    let cx = call::Context { providers, budgets, now: jiff::Timestamp::now() };
    let admitted = call::admit(&caller, api, op, &requested, body, &cx)?;
    let (reservation, warning) = reserve(gw, &agent, &admitted, &index.budget_status).await?;
    let model = &admitted.model;
    let settle = Settlement::new(Unsettled {
        gw: gw.clone(),
        reservation,
        agent: agent.clone(),
        claimed_pod: pod,
        provider: model.provider.to_owned(),
        model: model.model.to_owned(),
        pricing: model.pricing.cloned(),
        hosted: admitted.hosted,
        status: 0,
        span: span.clone(),
        started: Instant::now(),
    });
    let credentials = model.spec.credentials.clone();
    let sent = Sent { api, url: admitted.url, provider: model.provider.to_owned(), credentials, strip_usage: admitted.strip_usage, warning };
    send(gw, &agent, sent, &client_headers, Bytes::from(admitted.body), settle).await
}

/// The call's claims reserved at once for its estimate, and the call registered as in flight; a
/// soft limit passed comes back as a warning.
async fn reserve(
    gw: &Arc<GatewayState>,
    agent: &Arc<crate::index::Agent>,
    admitted: &call::Admission<'_>,
    statuses: &std::collections::HashMap<String, tollgate_api::BudgetStatus>,
) -> Result<(Reservation, Option<String>), Refusal> {
    let mut claims: Vec<Claim> = admitted
        .claims
        .iter()
        .map(|c| {
            // A period this ledger has no row for (its volume lost, or another Gateway's ledger
            // counted it) starts from its status.
            let status = statuses.get(&c.budget);
            let floor = status.and_then(|s| spend::floor_from_status(s.spent_usd, s.period_start.as_ref().map(|t| t.0), c.period_start_us));
            Claim { floor: floor.unwrap_or(0), ..Claim::budget(c.budget.clone(), c.period_start_us, c.hard_limit, c.audit) }
        })
        .collect();
    claims.extend(admitted.rates.iter().map(|r| Claim {
        budget: r.key.clone(),
        period_start_us: r.window_start_us,
        hard_limit: r.limit,
        audit: r.audit,
        unit: if r.tokens { Unit::Tokens } else { Unit::Requests },
        amount: Some(r.amount),
        floor: 0,
    }));
    let inflight = InFlight {
        id: i64::from_be_bytes(rand::random::<[u8; 8]>()) & i64::MAX,
        instance: gw.instance.clone(),
        started_us: jiff::Timestamp::now().as_microsecond(),
        namespace: agent.namespace.clone(),
        agent: agent.name.clone(),
        service_account: agent.spec.service_account_name.clone(),
        pod: String::new(),
        provider: admitted.model.provider.to_owned(),
        model: admitted.model.model.to_owned(),
        amount: admitted.estimate,
    };
    let reservation = gw.reserver.reserve(claims, &inflight).await.map_err(|e| match e {
        LedgerError::Exhausted { budget, .. } if budget.starts_with("rate:") => match admitted.rates.iter().find(|r| r.key == budget) {
            Some(r) => Refusal::RateLimited {
                owner: r.owner.clone(),
                what: if r.tokens { "tokens" } else { "requests" },
                limit: r.limit,
                retry_after_secs: call::retry_after_secs(r.window_start_us, jiff::Timestamp::now()),
            },
            None => Refusal::Ledger(format!("no rate limit {budget}")),
        },
        LedgerError::Exhausted { budget, spent, limit } => {
            let budget = budget.rsplit('/').next().unwrap_or_default().to_owned();
            Refusal::BudgetExhausted { budget, spent_usd: spend::micros_to_usd(spent), limit_usd: spend::micros_to_usd(limit) }
        }
        other => Refusal::Ledger(other.to_string()),
    })?;
    if !reservation.claims.is_empty() {
        gw.metrics.reservation(if reservation.leased { "memory" } else { "database" });
    }
    for e in &reservation.would_refuse {
        gw.metrics.shadow("model", "deny");
        tracing::info!(
            budget = e.budget,
            spent_micros = e.spent,
            limit_micros = e.limit,
            namespace = agent.namespace,
            agent = agent.name,
            "an audited budget would have refused the call"
        );
    }
    let warning = call::soft_limit_warning(&admitted.claims, &reservation.spent);
    Ok((reservation, warning))
}

/// Where a checked, reserved call goes.
struct Sent {
    api: Api,
    url: String,
    provider: String,
    credentials: Option<tollgate_api::CredentialSource>,
    strip_usage: bool,
    warning: Option<String>,
}

/// Calls the provider with its own credential and passes the answer back (a stream event by
/// event); the call is settled however it ends.
async fn send(
    gw: &Arc<GatewayState>,
    agent: &crate::index::Agent,
    sent: Sent,
    client_headers: &hyper::HeaderMap,
    body: Bytes,
    settle: Settlement,
) -> Result<Response<Body>, Refusal> {
    let credential = match gw.credentials.get(&gw.client, &agent.namespace, sent.credentials.as_ref()).await {
        Ok(c) => c,
        Err(reason) => {
            // Nothing was sent: nothing is charged.
            settle.with_status(502).finish(Ending::NotSent, Duration::ZERO).await;
            return Err(Refusal::Provider { provider: sent.provider, reason });
        }
    };
    let upstream = upstream_request(&sent, client_headers, credential.as_deref(), body)?;
    let started = Instant::now();
    let timeout = Duration::from_secs(gw.config.provider_timeout_seconds.max(1));
    let resp = match tokio::time::timeout(timeout, gw.http.request(upstream)).await {
        Ok(Ok(r)) => r,
        outcome => {
            // A provider never connected to ran nothing; one that took the request and did not
            // answer in time may have run it all.
            let (reason, ending) = match outcome {
                Ok(Err(e)) if e.is_connect() => (format!("unreachable: {}", transport::root_cause(&e)), Ending::NotSent),
                Ok(Err(e)) => (format!("unreachable: {}", transport::root_cause(&e)), Ending::Unknown),
                _ => (format!("no answer within {}s", timeout.as_secs()), Ending::Unknown),
            };
            settle.with_status(502).finish(ending, started.elapsed()).await;
            return Err(Refusal::Provider { provider: sent.provider, reason });
        }
    };
    let status = resp.status();
    let (parts, incoming) = resp.into_parts();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        for name in &RETURNED {
            if let Some(v) = parts.headers.get(name) {
                h.insert(name.clone(), v.clone());
            }
        }
        if let Some(w) = sent.warning.as_deref().and_then(|w| HeaderValue::from_str(w).ok()) {
            h.insert(BUDGET_WARNING, w);
        }
    }
    let settlement = settle.with_status(status.as_u16());
    if status.is_success() && transport::is_event_stream(&parts.headers) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let span = settlement.span();
        gw.settling.spawn(
            async move {
                let end: stream::End = rx.await.unwrap_or_default();
                // Usage seen in a stream that did not finish is only its beginning (Anthropic's
                // `message_start` counts one output token): the provider bills what it ran, so a
                // stream cut short, by the client or the provider, costs its whole reservation.
                let ending = match end.usage.filter(|_| end.finished) {
                    Some(u) => Ending::Used(u),
                    None => Ending::Unknown,
                };
                settlement.finish(ending, started.elapsed()).await;
            }
            .instrument(span),
        );
        return out.body(stream::metered(incoming, sent.api, sent.strip_usage, timeout, tx)).map_err(|e| Refusal::BadRequest(e.to_string()));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let answer = match transport::read_body(incoming, gw.config.max_answer, deadline).await {
        Ok(b) => b,
        Err(e) => {
            settlement.finish(Ending::Unknown, started.elapsed()).await;
            return Err(Refusal::Provider { provider: sent.provider, reason: e.to_string() });
        }
    };
    // Settled just after the answer is on its way, not before: reading the usage and preparing
    // the audit record were a third of what the gateway added to a call's latency. Its place
    // in the recorder's queue is taken first, so a full queue still holds the caller back. The
    // reservation holds the call's estimate until then, so a call meanwhile sees more taken,
    // never less; a stopping gateway waits for `settling` before its last write.
    let latency = started.elapsed();
    let place = gw.settled.clone().reserve_owned().await.ok();
    let (api, read, span) = (sent.api, answer.clone(), settlement.span());
    gw.settling.spawn(
        async move {
            // An error answer ran nothing; a success without usage may have run it all.
            let ending = if status.is_success() { usage_of(api, &read).map_or(Ending::Unknown, Ending::Used) } else { Ending::Used(Usage::default()) };
            drop(read);
            settlement.finish_with(place, ending, latency);
        }
        .instrument(span),
    );
    out.body(full(answer)).map_err(|e| Refusal::BadRequest(e.to_string()))
}

/// The provider's request: the checked body, the provider's credential (never the agent's key),
/// and only the client headers that are safe to pass.
fn upstream_request(sent: &Sent, client_headers: &hyper::HeaderMap, credential: Option<&str>, body: Bytes) -> Result<Request<Body>, Refusal> {
    let mut upstream = Request::builder().method(Method::POST).uri(&sent.url);
    if let Some(h) = upstream.headers_mut() {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for name in &FORWARDED {
            for v in client_headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        // The provider's spans, if it traces, join the call's trace.
        tollgate_runtime::otel::propagate(&tracing::Span::current(), h);
        if sent.api == Api::Anthropic && !h.contains_key(&ANTHROPIC_VERSION) {
            h.insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
        }
        if let Some(c) = credential {
            let (name, value) = match sent.api {
                Api::OpenAi => ("authorization", format!("Bearer {c}")),
                Api::Anthropic => ("x-api-key", c.to_owned()),
            };
            if let Ok(mut v) = HeaderValue::from_str(&value) {
                v.set_sensitive(true);
                h.insert(name, v);
            }
        }
    }
    upstream.body(full(body)).map_err(|e| Refusal::BadRequest(e.to_string()))
}

fn usage_of(api: Api, answer: &Bytes) -> Option<Usage> {
    let answer: UsageOnly = serde_json::from_slice(answer).ok()?;
    match api {
        Api::OpenAi => Usage::from_openai(&answer.usage),
        Api::Anthropic => Usage::from_anthropic(&answer.usage),
    }
}

/// An answer read for its `usage` alone: the completion around it is read past, not built as
/// values (that was a twentieth of the gateway's CPU). An answer with two `usage` blocks is
/// refused here, and its call charged as one whose usage is unknown.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Value,
}

/// The models the agent may use, as OpenAI lists them.
fn models_list(providers: &[(String, tollgate_api::ModelProviderSpec)], allowed: &[String]) -> Response<Body> {
    let mut data = Vec::new();
    for (name, p) in providers.iter().filter(|(_, p)| Api::OpenAi.served_by(p.r#type)) {
        for m in &p.models {
            for id in std::iter::once(&m.name).chain(&m.aliases) {
                if model::allowed(allowed, id, &m.name) {
                    data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": name}));
                }
            }
        }
    }
    let mut resp = Response::new(full(json!({"object": "list", "data": data}).to_string()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_an_answer_and_a_doubled_block_leaves_it_unknown() {
        let answer = Bytes::from_static(br#"{"id":"x","choices":[{"message":{"content":"hi \"there\""}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#);
        assert_eq!(usage_of(Api::OpenAi, &answer), Some(Usage { input: 12, cached_input: 0, output: 3 }));
        let anthropic = Bytes::from_static(br#"{"content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":7,"output_tokens":2}}"#);
        assert_eq!(usage_of(Api::Anthropic, &anthropic), Some(Usage { input: 7, cached_input: 0, output: 2 }));
        // A provider that says two things is believed in neither: the call costs its estimate.
        let doubled = Bytes::from_static(br#"{"usage":{"prompt_tokens":1000},"usage":{"prompt_tokens":1}}"#);
        assert_eq!(usage_of(Api::OpenAi, &doubled), None);
        assert_eq!(usage_of(Api::OpenAi, &Bytes::from_static(b"[1]")), None);
        assert_eq!(usage_of(Api::OpenAi, &Bytes::from_static(br#"{"id":"no usage"}"#)), None);
    }
}
