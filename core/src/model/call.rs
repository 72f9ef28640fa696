//! One model call decided (DESIGN §3.4): whether the agent may make it, what the provider is sent,
//! which budgets it claims and for how much; and, once it has ended, what it cost. Pure: the
//! gateway (`gateway/src/forward.rs`) reads the body, reserves the claims in the ledger, calls the
//! provider and settles, and decides nothing itself.
//!
//! The order of the checks is the order of the refusals an agent can meet: a suspended agent or a
//! beta it may not use before its body is read; then the model, the hosted tools, and what a
//! budget cannot count.

use crate::model::request::{self, Operation};
use crate::model::spend::{self, Micros, Usage};
use crate::model::{self, Api, Refusal, Resolved};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tollgate_api::{BudgetSpec, Enforcement, ManagedAgentSpec, ModelAccess, ModelProviderSpec, Pricing, ProviderType};

/// Headers that turn on a provider's beta features: passed on only from the allow-list.
pub const BETA_HEADERS: [&str; 2] = ["anthropic-beta", "openai-beta"];

/// The agent a call's key proved.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a ManagedAgentSpec,
}

/// Before the body is read: a suspended agent and a beta not on the allow-list are refused.
/// `betas` are the request's beta headers as (name, value).
pub fn admit_headers<'h>(caller: &Caller<'_>, betas: impl IntoIterator<Item = (&'h str, &'h str)>, allowed_betas: &[String]) -> Result<(), Refusal> {
    if caller.spec.suspended {
        return Err(Refusal::Suspended { agent: caller.name.to_owned(), namespace: caller.namespace.to_owned() });
    }
    for (header, value) in betas {
        request::check_betas(header, value, allowed_betas)?;
    }
    Ok(())
}

/// A budget a call counts against, as the ledger reserves it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetClaim {
    /// `<namespace>/<name>`: the ledger's key.
    pub budget: String,
    pub name: String,
    pub period_start_us: i64,
    pub hard_limit: Micros,
    pub soft_limit: Option<Micros>,
    /// As written, for the warning.
    pub soft_limit_usd: Option<f64>,
    /// `enforcement: Audit`: counted, never refusing.
    pub audit: bool,
}

/// An admitted call: where it goes, what is sent, and what it claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission<'a> {
    pub model: Resolved<'a>,
    /// The provider's URL for the operation.
    pub url: String,
    /// The body the provider is sent: its own model name, the output limit written in, usage
    /// asked for in a stream.
    pub body: Vec<u8>,
    /// Whether the usage the gateway asked for must be taken out of the stream again.
    pub strip_usage: bool,
    /// The provider-hosted tools the call uses (each allowed to the agent).
    pub hosted: Vec<String>,
    /// What the call may cost at most, reserved against every claim.
    pub estimate: Micros,
    pub claims: Vec<BudgetClaim>,
    /// The rate limits it counts against (its agent's, its budgets').
    pub rates: Vec<RateClaim>,
}

/// A rate limit a call counts against: requests or tokens in the current minute's window, of
/// an agent or of a budget's agents together (docs/design.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateClaim {
    /// `rate:<requests|tokens>:<owner>`: the ledger's key.
    pub key: String,
    /// `ManagedAgent ns/name` or `Budget ns/name`.
    pub owner: String,
    pub tokens: bool,
    pub window_start_us: i64,
    pub limit: i64,
    /// One request, or the call's tokens at most.
    pub amount: i64,
    pub audit: bool,
}

/// The start of the minute `now` falls in, in µs.
pub fn rate_window(now: Timestamp) -> i64 {
    let us = now.as_microsecond();
    us - us.rem_euclid(60_000_000)
}

/// Whole seconds from `now` to the end of the window that began at `window_start_us` (at least 1).
pub fn retry_after_secs(window_start_us: i64, now: Timestamp) -> u64 {
    let left = window_start_us + 60_000_000 - now.as_microsecond();
    u64::try_from((left + 999_999) / 1_000_000).unwrap_or(1).max(1)
}

/// The rate claims of `limit` (of `owner`, audited when `audit`): one for requests, one for
/// tokens, as it sets them. `tokens` is the call's bound.
fn rate_claims(owner: &str, limit: &tollgate_api::ModelRateLimit, audit: bool, tokens: u64, now: Timestamp) -> Vec<RateClaim> {
    let audit = audit || limit.enforcement == Some(Enforcement::Audit);
    let window_start_us = rate_window(now);
    let claim = |kind: &str, limit: i64, amount: i64| RateClaim {
        key: format!("rate:{kind}:{owner}"),
        owner: owner.to_owned(),
        tokens: kind == "tokens",
        window_start_us,
        limit,
        amount,
        audit,
    };
    let mut out = Vec::new();
    if let Some(rpm) = limit.requests_per_minute {
        out.push(claim("requests", i64::from(rpm), 1));
    }
    if let Some(tpm) = limit.tokens_per_minute {
        out.push(claim("tokens", i64::try_from(tpm).unwrap_or(i64::MAX), i64::try_from(tokens).unwrap_or(i64::MAX)));
    }
    out
}

/// What a call is decided against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub providers: &'a [(String, ModelProviderSpec)],
    pub budgets: &'a [(String, BudgetSpec)],
    pub now: Timestamp,
}

/// The call `body` (already parsed; its model is `requested`) on `op`, from `caller`: admitted,
/// or refused saying why.
pub fn admit<'a>(
    caller: &Caller<'_>,
    api: Api,
    op: Operation,
    requested: &str,
    mut body: Map<String, Value>,
    cx: &Context<'a>,
) -> Result<Admission<'a>, Refusal> {
    let none = ModelAccess::default();
    let access = caller.spec.models.as_ref().unwrap_or(&none);
    let model = model::resolve(requested, api, cx.providers).ok_or_else(|| Refusal::UnknownModel(requested.to_owned()))?;
    if !model::allowed(&access.allowed, requested, model.model) {
        return Err(Refusal::ModelNotAllowed { agent: caller.name.to_owned(), model: requested.to_owned() });
    }
    // Before anything is reserved: nothing the provider would run itself unless allowed.
    let hosted = request::check(op, &body, caller.name, &access.hosted_tools)?;
    let output = spend::bound_output(&mut body, limit_field(op, model.spec.r#type), model.max_output);
    let strip_usage = as_provider_sees_it(&mut body, op, model.model);
    // Images the provider fetches count at their bound as input.
    let provided = request::provider_input(&body);
    // Written straight into bytes: `Value`'s `Display` goes through a formatter a piece at a time.
    let sent = serde_json::to_vec(&body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let images = usize::try_from(request::IMAGE_TOKENS).unwrap_or(usize::MAX).saturating_mul(provided.images);
    let estimate = model.pricing.map_or(0, |p| spend::estimate(p, sent.len().saturating_add(images), output));
    let claims = claims(caller, &model, &provided, cx)?;
    let tokens = u64::try_from(sent.len().saturating_add(images)).unwrap_or(u64::MAX).saturating_add(output);
    let rates = rates(caller, &model, tokens, cx);
    let url = format!("{}{}", model.spec.base_url.trim_end_matches('/'), provider_path(op));
    Ok(Admission { model, url, body: sent, strip_usage, hosted, estimate, claims, rates })
}

/// The agent's own rate limit and those of the budgets that count the call.
fn rates(caller: &Caller<'_>, model: &Resolved<'_>, tokens: u64, cx: &Context<'_>) -> Vec<RateClaim> {
    let mut out = Vec::new();
    if let Some(limit) = caller.spec.models.as_ref().and_then(|m| m.rate_limit.as_ref()) {
        out.extend(rate_claims(&format!("ManagedAgent {}/{}", caller.namespace, caller.name), limit, false, tokens, cx.now));
    }
    let names = model.names();
    for (name, b) in cx.budgets.iter().filter(|(_, b)| spend::budget_applies(b, caller.labels, &names)) {
        if let Some(limit) = &b.rate_limit {
            let audit = b.enforcement == Some(Enforcement::Audit);
            out.extend(rate_claims(&format!("Budget {}/{name}", caller.namespace), limit, audit, tokens, cx.now));
        }
    }
    out
}

/// Every budget of the agent's namespace that counts any name of the model. Where one applies,
/// a model without a price, and input the provider adds that cannot be bounded, are refused:
/// the budget could not count them.
fn claims(caller: &Caller<'_>, model: &Resolved<'_>, provided: &request::ProviderInput, cx: &Context<'_>) -> Result<Vec<BudgetClaim>, Refusal> {
    let names = model.names();
    let budgets: Vec<&(String, BudgetSpec)> = cx.budgets.iter().filter(|(_, b)| spend::budget_applies(b, caller.labels, &names)).collect();
    // Only an enforced budget refuses what it cannot count; an audited one counts what it can.
    if let Some((name, _)) = budgets.iter().find(|(_, b)| b.enforcement != Some(Enforcement::Audit)) {
        if model.pricing.is_none() {
            return Err(Refusal::Unpriced { model: model.model.to_owned(), provider: model.provider.to_owned(), budget: name.clone() });
        }
        let uncountable = provided.stored_context.map(|f| format!("{f:?}")).or_else(|| (provided.files > 0).then(|| "a file read by id or URL".to_owned()));
        if let Some(what) = uncountable {
            return Err(Refusal::Uncountable { what, budget: name.clone() });
        }
    }
    Ok(budgets
        .into_iter()
        .map(|(name, b)| BudgetClaim {
            budget: format!("{}/{name}", caller.namespace),
            name: name.clone(),
            period_start_us: spend::period_start(b.period, cx.now).as_microsecond(),
            hard_limit: spend::usd_to_micros(b.hard_limit_usd),
            soft_limit: b.soft_limit_usd.map(spend::usd_to_micros),
            soft_limit_usd: b.soft_limit_usd,
            audit: b.enforcement == Some(Enforcement::Audit),
        })
        .collect())
}

/// The record of an audited budget or rate limit that would have refused a call: it held `spent`
/// of its `limit` before the call. `key` is the ledger's: a budget's `namespace/name`, or a rate
/// limit's `rate:<requests|tokens>:<owner>`.
pub fn would_refuse(key: &str, spent: Micros, limit: Micros) -> crate::audit::ShadowRecord {
    let (policy, message) = match key.strip_prefix("rate:").and_then(|r| r.split_once(':')) {
        Some((kind, owner)) => (owner.to_owned(), format!("{owner} would have been rate limited: {spent} of {limit} {kind} this minute (enforcement: Audit)")),
        None => {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            let message = format!(
                "budget {name} would have refused the call: {:.6} of {:.2} USD spent (enforcement: Audit)",
                spend::micros_to_usd(spent),
                spend::micros_to_usd(limit)
            );
            (format!("Budget {namespace}/{name}"), message)
        }
    };
    crate::audit::ShadowRecord { would: crate::audit::AuditDecision::Deny, policy: Some(policy), rule: None, message: Some(message) }
}

/// The warning an admitted call carries once a budget it claims has passed its soft limit
/// (`spent`: each claim's spend with this call's reservation, as the ledger answered).
pub fn soft_limit_warning(claims: &[BudgetClaim], spent: &[(String, Micros)]) -> Option<String> {
    claims.iter().rev().find_map(|c| {
        let held = spent.iter().find(|(budget, _)| *budget == c.budget).map_or(0, |(_, s)| *s);
        let passed = c.soft_limit.is_some() && spend::state(held, c.soft_limit, c.hard_limit) != tollgate_api::BudgetState::Ok;
        passed.then(|| format!("budget {} passed its soft limit of {:.2} USD", c.name, c.soft_limit_usd.unwrap_or_default()))
    })
}

/// The output limit field each operation's provider reads (an OpenAI-compatible server may not
/// know `max_completion_tokens`).
pub fn limit_field(op: Operation, kind: ProviderType) -> &'static str {
    match (op, kind) {
        (Operation::ChatCompletions, ProviderType::Openai) => "max_completion_tokens",
        (Operation::Responses, _) => "max_output_tokens",
        _ => "max_tokens",
    }
}

pub fn provider_path(op: Operation) -> &'static str {
    match op {
        Operation::ChatCompletions => "/chat/completions",
        Operation::Responses => "/responses",
        Operation::Messages => "/v1/messages",
    }
}

/// The request as the provider must see it: its own model name, and usage asked for in a
/// stream. Whether the usage must be taken out again (the client did not ask for it).
fn as_provider_sees_it(body: &mut Map<String, Value>, op: Operation, model: &str) -> bool {
    body.insert("model".into(), json!(model));
    let streaming = body.get("stream").and_then(Value::as_bool) == Some(true);
    let asked = body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    if op == Operation::ChatCompletions && streaming && !asked {
        body.insert("stream_options".into(), json!({"include_usage": true}));
        return true;
    }
    false
}

/// How a call ended, as far as its cost goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The provider answered and said what it used (an error answer uses nothing).
    Used(Usage),
    /// Nothing reached the provider (no credential, no connection): nothing ran.
    NotSent,
    /// The provider may have run it all, and nobody knows how much: a timeout, a stream cut
    /// short (its usage so far is only its beginning), an answer without usage.
    Unknown,
}

/// What a call cost: its usage at the model's price; nothing when nothing was sent or the model
/// has no price; its whole reservation when the usage is unknown, since a provider bills what
/// it ran.
pub fn cost(ending: Ending, pricing: Option<&Pricing>, reserved: Micros) -> Micros {
    match (ending, pricing) {
        (Ending::Used(u), Some(p)) => spend::cost(p, &u),
        (Ending::Used(_) | Ending::NotSent, _) => 0,
        (Ending::Unknown, _) => reserved,
    }
}

/// A model call's audit record, beside the tool call's (`crate::audit::AuditRecord`): stored in
/// the same hash-chained audit store under the identity the agent's key proved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelCallRecord {
    pub kind: &'static str,
    pub time: String,
    pub agent: ModelCallAgent,
    /// The model, as requested (a refusal) or as sent (a settled call).
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `allow`, `error` or `deny`.
    pub decision: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    #[serde(rename = "costUSD", skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosted_tools: Vec<String>,
    /// What an audited budget would have done (refused the call), as a tool call's record says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::audit::ShadowRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelCallAgent {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// What the client said its pod is (`x-tollgate-pod`): a claim, never proved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_claimed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

pub const RECORD_KIND: &str = "model_call";

/// A settled call's decision word: a 2xx is `allow`, anything else an `error`.
pub fn settled_decision(status: u16) -> &'static str {
    if (200..300).contains(&status) { "allow" } else { "error" }
}

impl ModelCallRecord {
    /// The record of a call refused before it reached a provider.
    pub fn refused(agent: ModelCallAgent, model: Option<String>, refusal: &Refusal, now: Timestamp) -> ModelCallRecord {
        ModelCallRecord {
            kind: RECORD_KIND,
            time: now.to_string(),
            agent,
            tool: model.unwrap_or_default(),
            provider: None,
            decision: "deny",
            status: refusal.status(),
            reason: Some(refusal.to_string()),
            tokens: None,
            cost_usd: None,
            duration_ms: None,
            hosted_tools: Vec::new(),
            shadow: None,
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
