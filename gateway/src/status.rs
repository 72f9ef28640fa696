//! Spend in status, from the ledger: every `Budget`'s `spentUSD`, `remainingUSD`, `state` and
//! `periodStart`, and every agent's `spendUSD` (this calendar month, UTC), refreshed every few
//! seconds; an Event when a budget crosses its soft or hard limit. Only changes are written.

use crate::index::Index;
use crate::state::GatewayState;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{Budget, BudgetSpec, BudgetState, BudgetStatus, Enforcement, ManagedAgent};
use tollgate_core::model::spend;

const MANAGER: &str = "tollgate-gateway";

/// Every status write of the gateway, under its own field manager.
fn params() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() }
}

pub async fn run(gw: Arc<GatewayState>) {
    let mut shadows = crate::shadow_status::Written::new();
    // Old rate-limit windows are forgotten once a minute, not on every refresh.
    let mut forgotten_before = 0;
    let every = Duration::from_secs(gw.config.status_interval_seconds.max(1));
    loop {
        tokio::time::sleep(every).await;
        refresh(&gw).await;
        if let Err(e) = crate::shadow_status::refresh(&gw, &params(), &mut shadows).await {
            tracing::warn!(error = %e, "could not count would-be decisions into status");
        }
        let minutes_ago = tollgate_core::model::call::rate_window(Timestamp::now()) - 120_000_000;
        if minutes_ago != forgotten_before {
            match gw.ledger.forget_rate_windows(minutes_ago).await {
                Ok(()) => forgotten_before = minutes_ago,
                Err(e) => tracing::warn!(error = %e, "could not forget old rate-limit windows"),
            }
        }
    }
}

/// One object that cannot be written (deleted meanwhile, say) does not hold the others back.
async fn refresh(gw: &GatewayState) {
    let index = gw.index.load_full();
    let now = Timestamp::now();
    for (ns, budgets) in index.budgets.iter() {
        for (name, b) in budgets {
            if let Err(e) = refresh_budget(gw, &index, ns, name, b, now).await {
                tracing::warn!(budget = %format!("{ns}/{name}"), error = %e, "could not refresh a budget's spend in status");
            }
        }
    }
    let month = spend::period_start(tollgate_api::BudgetPeriod::Monthly, now).as_microsecond();
    for agent in index.agents.values() {
        if let Err(e) = refresh_agent(gw, agent, month, now).await {
            tracing::warn!(agent = %format!("{}/{}", agent.namespace, agent.name), error = %e, "could not refresh an agent's spend in status");
        }
    }
}

/// A budget's figures as the ledger has them, written when the object holds others. Compared
/// with what the object holds rather than with what this gateway last wrote: a replica that read
/// the ledger a moment earlier may have written after us, and at the limit the figure would
/// not change again to put it right.
async fn refresh_budget(gw: &GatewayState, index: &Index, ns: &str, name: &str, b: &BudgetSpec, now: Timestamp) -> anyhow::Result<()> {
    let start = spend::period_start(b.period, now);
    let key = format!("{ns}/{name}");
    let spent = gw.ledger.spent(&key, start.as_microsecond()).await?;
    let figures = figures(spent, b, start);
    let state = figures.state.unwrap_or_default();
    let audited = figures.enforcement == Some(Enforcement::Audit);
    let observed = index.budget_status.get(&key);
    if observed.is_some_and(|o| same_figures(o, &figures)) {
        return Ok(());
    }
    // A figure for this very period that this ledger has no row for was counted by another
    // ledger (the Gateway this one took over from, or this one before its volume was lost): it
    // is the floor this ledger's first call in the period starts from, so it is never written
    // over before that call. A figure of an earlier period gives way to this one's.
    let others = observed.is_some_and(|o| o.spent_usd.is_some_and(|s| s > 0.0) && o.period_start.as_ref().map(|t| t.0) == Some(start));
    if others && !gw.ledger.knows_period(&key, start.as_microsecond()).await? {
        tracing::debug!(budget = %key, "budget status kept: another ledger counted this period, and this one starts from it");
        return Ok(());
    }
    let api = Api::<Budget>::namespaced(gw.client.clone(), ns);
    api.patch_status(name, &params(), &Patch::Merge(serde_json::json!({"status": figures}))).await?;
    let before = observed.and_then(|o| o.state);
    if before.is_some_and(|b| b != state) && state != BudgetState::Ok {
        let note = limit_note(name, b, state, audited);
        if let Ok(budget) = api.get(name).await {
            let reason = if state == BudgetState::HardExceeded { "HardLimitReached" } else { "SoftLimitReached" };
            tollgate_runtime::events::publish(&gw.client, "tollgate-gateway", &budget.object_ref(&()), EventType::Warning, reason, &note, "Account").await;
        }
    }
    Ok(())
}

/// What a budget's status says of `spent` in the period from `start`.
fn figures(spent: i64, b: &BudgetSpec, start: Timestamp) -> BudgetStatus {
    let hard = spend::usd_to_micros(b.hard_limit_usd);
    let state = spend::state(spent, b.soft_limit_usd.map(spend::usd_to_micros), hard);
    let audited = b.enforcement == Some(Enforcement::Audit);
    let mut message = format!("{:.6} of {:.2} USD spent since {start}", spend::micros_to_usd(spent), b.hard_limit_usd);
    if audited {
        message.push_str(" (enforcement: Audit: no call is refused; the calls it would refuse are recorded)");
    }
    BudgetStatus {
        enforcement: Some(if audited { Enforcement::Audit } else { Enforcement::Enforce }),
        spent_usd: Some(spend::micros_to_usd(spent)),
        remaining_usd: Some(spend::micros_to_usd((hard - spent).max(0))),
        state: Some(state),
        period_start: Some(Time(start)),
        conditions: vec![tollgate_api::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: format!("{state:?}"),
            message,
            observed_generation: None,
            last_transition_time: Time(start),
        }],
        ..BudgetStatus::default()
    }
}

/// The figures the gateway writes, as the object holds them (not `shadow`, written elsewhere).
fn same_figures(observed: &BudgetStatus, figures: &BudgetStatus) -> bool {
    let ready = |s: &BudgetStatus| s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.reason.clone(), c.message.clone()));
    observed.spent_usd == figures.spent_usd
        && observed.remaining_usd == figures.remaining_usd
        && observed.state == figures.state
        && observed.enforcement == figures.enforcement
        && observed.period_start == figures.period_start
        && ready(observed) == ready(figures)
}

fn limit_note(name: &str, b: &BudgetSpec, state: BudgetState, audited: bool) -> String {
    match state {
        BudgetState::HardExceeded if audited => format!(
            "budget {name} reached its hard limit of {:.2} USD: calls it counts would be refused; it is in Audit, so they are served and recorded",
            b.hard_limit_usd
        ),
        BudgetState::HardExceeded => {
            format!("budget {name} reached its hard limit of {:.2} USD: calls it counts are refused until the period rolls over", b.hard_limit_usd)
        }
        _ => format!("budget {name} passed its soft limit of {:.2} USD: calls are served with a warning", b.soft_limit_usd.unwrap_or_default()),
    }
}

/// An agent's spend this month and its `AuditComplete` condition, written when the object holds
/// others (the same rule as a budget's).
async fn refresh_agent(gw: &GatewayState, agent: &crate::index::Agent, month: i64, now: Timestamp) -> anyhow::Result<()> {
    let spent = spend::micros_to_usd(gw.ledger.agent_spend(&agent.namespace, &agent.name, month).await?);
    let mut status = serde_json::json!({});
    if agent.spend_usd != Some(spent) && (agent.spend_usd.is_none() || gw.ledger.knows_agent(&agent.namespace, &agent.name).await?) {
        status["spendUSD"] = serde_json::json!(spent);
    }
    if let Some(conditions) = audit_condition(gw, agent, now).await? {
        status["conditions"] = serde_json::json!(conditions);
    }
    if status.as_object().is_none_or(|o| o.is_empty()) {
        return Ok(());
    }
    Api::<ManagedAgent>::namespaced(gw.client.clone(), &agent.namespace)
        .patch_status(&agent.name, &params(), &Patch::Merge(serde_json::json!({"status": status})))
        .await?;
    Ok(())
}

/// How long back an agent's `AuditComplete` condition looks for records cut or lost.
const AUDIT_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The agent's conditions with `AuditComplete` as the store says it is, when that differs from
/// what the object holds (the whole list: a merge patch replaces it).
async fn audit_condition(gw: &GatewayState, agent: &crate::index::Agent, now: Timestamp) -> anyhow::Result<Option<Vec<Condition>>> {
    let since = now.checked_sub(AUDIT_WINDOW)?.as_microsecond();
    let (cut, lost) = gw.ledger.audit_gaps(&agent.namespace, &agent.name, since).await?;
    let (ok, reason, message) = tollgate_core::audit::bounds::completeness(cut, lost, "in the last 24 hours");
    let status = if ok { "True" } else { "False" };
    let old = agent.conditions.iter().find(|c| c.type_ == AUDIT_COMPLETE);
    if old.is_some_and(|c| c.status == status && c.reason == reason && c.message == message) {
        return Ok(None);
    }
    let mut conditions = agent.conditions.clone();
    tollgate_core::k8s::conditions::set(&mut conditions, tollgate_core::k8s::conditions::condition(AUDIT_COMPLETE, ok, reason, &message, None, now));
    Ok(Some(conditions))
}

const AUDIT_COMPLETE: &str = "AuditComplete";

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures read back from the object as the API server returns them compare equal to what
    /// was written, or every gateway would write every budget on every refresh.
    #[test]
    fn figures_read_back_from_the_object_are_the_same_and_a_changed_one_is_not() -> Result<(), serde_json::Error> {
        let spec: BudgetSpec = serde_json::from_value(serde_json::json!({"period": "Daily", "hardLimitUSD": 0.001, "softLimitUSD": 0.0005}))?;
        let start = spend::period_start(spec.period, Timestamp::now());
        for spent in [0, 1, 20, 499, 500, 999, 1000, 1020, 123_456_789] {
            let written = figures(spent, &spec, start);
            let read: BudgetStatus = serde_json::from_str(&serde_json::to_string(&written)?)?;
            assert!(same_figures(&read, &written), "{spent}: {read:?}");
            assert!(!same_figures(&read, &figures(spent + 1, &spec, start)), "{spent} + 1");
        }
        let audited: BudgetSpec = serde_json::from_value(serde_json::json!({"period": "Daily", "hardLimitUSD": 0.001, "enforcement": "Audit"}))?;
        assert!(!same_figures(&figures(20, &spec, start), &figures(20, &audited, start)));
        Ok(())
    }
}
