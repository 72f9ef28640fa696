//! A model call's settlement: its reservation replaced by its cost, its ledger row and its audit
//! record, however the call ends. A call whose handler is dropped before it settles (its client
//! went away while the provider worked, or while the answer was read) settles itself as one
//! whose usage is unknown: the provider bills what it ran, and the call is in the ledger and the
//! audit trail at once, not only when a successor settles this gateway's `inflight` rows.

use crate::ledger::{Reservation, Row};
use crate::recorder::Entry;
use crate::state::GatewayState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::OwnedPermit;
use tollgate_core::model::call::{self, Ending, ModelCallAgent, ModelCallRecord, Tokens};
use tollgate_core::model::spend::{self, Usage};
use tracing::Instrument;

/// The status a call whose client went away before its answer is recorded with (nginx's
/// "client closed request").
const CLIENT_GONE: u16 = 499;

/// A call to be settled: by [`Settlement::finish`] or [`Settlement::finish_with`], or by its
/// drop.
pub(crate) struct Settlement(Option<Unsettled>);

/// What a call's settlement is made of.
pub(crate) struct Unsettled {
    pub gw: Arc<GatewayState>,
    pub reservation: Reservation,
    pub agent: Arc<crate::index::Agent>,
    /// What the client said its pod is (`x-tollgate-pod`): recorded as a claim only.
    pub claimed_pod: String,
    pub provider: String,
    pub model: String,
    pub pricing: Option<tollgate_api::Pricing>,
    /// The provider-hosted tools the call allowed, for its audit record.
    pub hosted: Vec<String>,
    pub status: u16,
    /// The call's span: it ends once the call is settled, a stream's last event included.
    pub span: tracing::Span,
    pub started: Instant,
}

impl Settlement {
    pub fn new(call: Unsettled) -> Settlement {
        Settlement(Some(call))
    }

    pub fn with_status(mut self, status: u16) -> Settlement {
        if let Some(c) = self.0.as_mut() {
            c.status = status;
        }
        self
    }

    /// The call's span, for work done on its behalf after its handler returned.
    pub fn span(&self) -> tracing::Span {
        self.0.as_ref().map_or_else(tracing::Span::none, |c| c.span.clone())
    }

    /// With the usage the provider reported; without it (a stream cut short, an answer without
    /// usage), the call is taken to have cost its whole reservation: a provider bills what it ran.
    pub async fn finish(mut self, ending: Ending, latency: Duration) {
        let Some(c) = self.0.take() else { return };
        c.record(ending, latency).await;
    }

    /// As [`Settlement::finish`], into the place in the recorder's queue taken before the
    /// answer was returned: a full queue still holds the caller back, as it did when the answer
    /// waited for its settlement.
    pub fn finish_with(mut self, place: Option<OwnedPermit<Entry>>, ending: Ending, latency: Duration) {
        let Some(c) = self.0.take() else { return };
        match place {
            Some(place) => {
                place.send(c.entry(ending, latency));
            }
            None => not_recorded(&c.agent),
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        // Outside a runtime (a process ending) there is nothing to settle with; its successor
        // settles the call from its `inflight` row.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if c.status == 0 {
            c.status = CLIENT_GONE;
        }
        let (span, latency) = (c.span.clone(), c.started.elapsed());
        tracing::info!(
            parent: &span,
            namespace = %c.agent.namespace,
            agent = %c.agent.name,
            model = %c.model,
            "the client went away before its answer: settled at its reservation"
        );
        let settling = c.gw.settling.clone();
        settling.spawn_on(async move { c.record(Ending::Unknown, latency).await }.instrument(span), &runtime);
    }
}

/// Said of `agent`'s call: without a tracing exporter no span names it.
fn not_recorded(agent: &crate::index::Agent) {
    tracing::error!(namespace = %agent.namespace, agent = %agent.name, "the ledger writer has stopped: a settled call was not recorded");
}

impl Unsettled {
    /// The call's entry handed to the recorder, waiting for a place in its queue.
    async fn record(self, ending: Ending, latency: Duration) {
        let (gw, agent) = (self.gw.clone(), self.agent.clone());
        if gw.settled.send(self.entry(ending, latency)).await.is_err() {
            not_recorded(&agent);
        }
    }

    /// The recorder's entry for the call, its span and metrics written.
    fn entry(self, ending: Ending, latency: Duration) -> Entry {
        let cost = call::cost(ending, self.pricing.as_ref(), self.reservation.amount);
        let usage = match ending {
            Ending::Used(u) => Some(u),
            Ending::NotSent => Some(Usage::default()),
            Ending::Unknown => None,
        };
        crate::trace::settled(&self.span, &self.provider, self.status, usage.as_ref(), cost);
        let row = Row {
            time_us: jiff::Timestamp::now().as_microsecond(),
            namespace: self.agent.namespace.clone(),
            agent: self.agent.name.clone(),
            pod: String::new(),
            provider: self.provider,
            model: self.model,
            usage: usage.unwrap_or_default(),
            cost,
            latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
            status: self.status,
        };
        // Every call is in the audit store and its span; a line per call at `info` would cost
        // each call a formatted log line (docs/operations.md, "Logs").
        tracing::debug!(
            agent = row.agent,
            model = row.model,
            status = row.status,
            cost_micros = row.cost,
            input = row.usage.input,
            output = row.usage.output,
            "model call settled"
        );
        self.gw.metrics.tool_call(call::settled_decision(row.status), "model_call");
        // Model calls go into the same hash-chained audit store as tool calls, under the identity
        // the agent's key proved.
        let record = ModelCallRecord {
            kind: call::RECORD_KIND,
            time: jiff::Timestamp::now().to_string(),
            agent: record_agent(&self.agent, Some(self.claimed_pod)),
            tool: row.model.clone(),
            provider: Some(row.provider.clone()),
            decision: call::settled_decision(row.status),
            status: row.status,
            reason: None,
            tokens: Some(Tokens { input: row.usage.input, cached_input: row.usage.cached_input, output: row.usage.output }),
            cost_usd: Some(spend::micros_to_usd(row.cost)),
            duration_ms: Some(row.latency_ms),
            hosted_tools: self.hosted,
            // The first audited budget that would have refused it (the record has one shadow).
            shadow: self.reservation.would_refuse.first().map(|e| call::would_refuse(&e.budget, e.spent, e.limit)),
        };
        let source =
            crate::audit_store::Source { namespace: row.namespace.clone(), service_account: self.agent.spec.service_account_name.clone(), shipped: false };
        let mut reservation = self.reservation;
        reservation.tokens_used = usage.map(|u| i64::try_from(u.input.saturating_add(u.output)).unwrap_or(i64::MAX));
        let settled = crate::recorder::Settled { reservation, cost, row, audit: crate::audit_store::Prepared::model_call(&source, &record) };
        Entry::Call(Box::new(settled))
    }
}

/// The agent as its model calls' audit records name it.
pub(crate) fn record_agent(agent: &crate::index::Agent, pod_claimed: Option<String>) -> ModelCallAgent {
    ModelCallAgent { namespace: agent.namespace.clone(), name: agent.name.clone(), service_account: agent.spec.service_account_name.clone(), pod_claimed }
}
