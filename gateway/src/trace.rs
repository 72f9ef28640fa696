//! The span of a model call, as the OpenTelemetry GenAI conventions name it, with Tollgate's
//! decision and cost (docs/operations.md, "Tracing"). It continues the agent's `traceparent`,
//! is the provider's parent, and ends when the call is settled (after the last event of a
//! stream). Without tracing configured it is a plain span at debug level, for the logs. No span
//! carries prompts, answers or keys.

use hyper::header::HeaderMap;
use tollgate_core::model::spend::Usage;
use tollgate_core::model::{Api, Refusal};
use tollgate_runtime::otel;
use tracing::Span;
use tracing::field::Empty;

/// The span of one request to a model endpoint; `operation` is the GenAI operation it is.
pub(crate) fn model_call(api: Api, endpoint: &dyn std::fmt::Debug, operation: &'static str, headers: &HeaderMap) -> Span {
    if !otel::enabled() {
        // Without tracing the span only gives the call's log lines their context: at debug
        // level, made only when debug logging is on (the lines logged about a call name its
        // agent and model themselves). At info the JSON log layer formatted its fields on every
        // call, and the call entered and left it on every poll (docs/performance-history.md).
        return tracing::debug_span!("model_call", api = ?api, endpoint = ?endpoint, agent = Empty, model = Empty);
    }
    let span = tracing::info_span!(
        "model_call",
        otel.name = operation,
        otel.kind = "server",
        otel.status_code = Empty,
        "gen_ai.operation.name" = operation,
        "gen_ai.provider.name" = provider_name(api),
        "gen_ai.request.model" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "tollgate.agent" = Empty,
        "tollgate.provider" = Empty,
        "tollgate.decision" = Empty,
        "tollgate.cost_usd" = Empty,
    );
    otel::continue_trace(&span, headers, &[]);
    span
}

/// The API family as the GenAI conventions name providers.
fn provider_name(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "openai",
        Api::Anthropic => "anthropic",
    }
}

pub(crate) fn agent(span: &Span, namespace: &str, name: &str) {
    if span.is_disabled() {
        return;
    }
    let who = format!("{namespace}/{name}");
    span.record(if otel::enabled() { "tollgate.agent" } else { "agent" }, who.as_str());
}

/// The model asked for: the span is named `<operation> <model>` from here on.
pub(crate) fn model(span: &Span, operation: &str, requested: &str) {
    if span.is_disabled() {
        return;
    }
    if !otel::enabled() {
        span.record("model", requested);
        return;
    }
    let requested = tollgate_core::trace::attribute(requested);
    span.record("gen_ai.request.model", requested.as_ref());
    otel::rename(span, format!("{operation} {requested}"));
}

/// A refusal by the gateway: the call never reached a provider (or the provider failed).
pub(crate) fn refused(span: &Span, r: &Refusal) {
    if !otel::enabled() {
        return;
    }
    span.record("tollgate.decision", "deny");
    span.record("http.response.status_code", i64::from(r.status()));
    span.record("error.type", r.kind());
    span.record("otel.status_code", "ERROR");
}

/// The settled call: what the provider reported and what it cost.
pub(crate) fn settled(span: &Span, provider: &str, status: u16, usage: Option<&Usage>, cost_micros: i64) {
    if !otel::enabled() {
        return;
    }
    span.record("tollgate.decision", "allow");
    span.record("tollgate.provider", provider);
    span.record("http.response.status_code", i64::from(status));
    if let Some(u) = usage {
        // As integers: a u64 would be exported as text.
        span.record("gen_ai.usage.input_tokens", i64::try_from(u.input).unwrap_or(i64::MAX));
        span.record("gen_ai.usage.output_tokens", i64::try_from(u.output).unwrap_or(i64::MAX));
    }
    span.record("tollgate.cost_usd", tollgate_core::model::spend::micros_to_usd(cost_micros));
    if status == 0 || status >= 500 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", if status == 0 { "no_answer".to_owned() } else { status.to_string() });
    }
}
