//! Spend in status, from the ledger: every `Budget`'s `spentUSD`, `remainingUSD`, `state` and
//! `periodStart`, and every agent's `spendUSD` (this calendar month, UTC), refreshed every few
//! seconds; an Event when a budget crosses its soft or hard limit. Only changes are written.

use crate::state::GatewayState;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{Budget, BudgetState, Enforcement, ManagedAgent};
use tollgate_core::model::spend;

const MANAGER: &str = "tollgate-gateway";

pub async fn run(gw: Arc<GatewayState>) {
    let mut written: HashMap<String, serde_json::Value> = HashMap::new();
    let mut states: HashMap<String, BudgetState> = HashMap::new();
    let mut shadows = crate::shadow_status::Written::new();
    // Old rate-limit windows are forgotten once a minute, not on every refresh.
    let mut forgotten_before = 0;
    let every = Duration::from_secs(gw.config.status_interval_seconds.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = refresh(&gw, &mut written, &mut states).await {
            tracing::warn!(error = %e, "could not refresh spend in status");
        }
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
        if let Err(e) = crate::shadow_status::refresh(&gw, &params, &mut shadows).await {
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

async fn refresh(gw: &GatewayState, written: &mut HashMap<String, serde_json::Value>, states: &mut HashMap<String, BudgetState>) -> anyhow::Result<()> {
    let index = gw.index.load_full();
    let now = Timestamp::now();
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
    for (ns, budgets) in &index.budgets {
        for (name, b) in budgets {
            let start = spend::period_start(b.period, now);
            let key = format!("{ns}/{name}");
            let spent = gw.ledger.spent(&key, start.as_microsecond()).await?;
            let hard = spend::usd_to_micros(b.hard_limit_usd);
            let state = spend::state(spent, b.soft_limit_usd.map(spend::usd_to_micros), hard);
            let audited = b.enforcement == Some(Enforcement::Audit);
            let mut message = format!("{:.6} of {:.2} USD spent since {start}", spend::micros_to_usd(spent), b.hard_limit_usd);
            if audited {
                message.push_str(" (enforcement: Audit: no call is refused; the calls it would refuse are recorded)");
            }
            let status = serde_json::json!({
                "enforcement": if audited { Enforcement::Audit } else { Enforcement::Enforce },
                "spentUSD": spend::micros_to_usd(spent),
                "remainingUSD": spend::micros_to_usd((hard - spent).max(0)),
                "state": state,
                "periodStart": Time(start),
                "conditions": [Condition {
                    type_: "Ready".into(), status: "True".into(), reason: format!("{state:?}"), message,
                    observed_generation: None, last_transition_time: Time(start),
                }],
            });
            if written.get(&key) == Some(&status) {
                continue;
            }
            let api = Api::<Budget>::namespaced(gw.client.clone(), ns);
            api.patch_status(name, &params, &Patch::Merge(serde_json::json!({"status": status}))).await?;
            written.insert(key.clone(), status);
            let before = states.insert(key.clone(), state);
            if before.is_some_and(|b| b != state) && state != BudgetState::Ok {
                let (reason, note) = match state {
                    BudgetState::HardExceeded if audited => (
                        "HardLimitReached",
                        format!(
                            "budget {name} reached its hard limit of {:.2} USD: calls it counts would be refused; it is in Audit, so they are served and recorded",
                            b.hard_limit_usd
                        ),
                    ),
                    BudgetState::HardExceeded => (
                        "HardLimitReached",
                        format!(
                            "budget {name} reached its hard limit of {:.2} USD: calls it counts are refused until {}",
                            b.hard_limit_usd, "the period rolls over"
                        ),
                    ),
                    _ => (
                        "SoftLimitReached",
                        format!("budget {name} passed its soft limit of {:.2} USD: calls are served with a warning", b.soft_limit_usd.unwrap_or_default()),
                    ),
                };
                if let Ok(budget) = api.get(name).await {
                    tollgate_runtime::events::publish(&gw.client, "tollgate-gateway", &budget.object_ref(&()), EventType::Warning, reason, &note, "Account")
                        .await;
                }
            }
        }
    }
    let month = spend::period_start(tollgate_api::BudgetPeriod::Monthly, now).as_microsecond();
    for agent in index.agents.values() {
        let key = format!("agent:{}/{}", agent.namespace, agent.name);
        let spent = spend::micros_to_usd(gw.ledger.agent_spend(&agent.namespace, &agent.name, month).await?);
        let mut status = serde_json::json!({"spendUSD": spent});
        if let Some(conditions) = audit_condition(gw, agent, now).await? {
            status["conditions"] = serde_json::json!(conditions);
        } else if written.get(&key) == Some(&status) {
            continue;
        }
        Api::<ManagedAgent>::namespaced(gw.client.clone(), &agent.namespace)
            .patch_status(&agent.name, &params, &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
        status.as_object_mut().map(|o| o.remove("conditions"));
        written.insert(key, status);
    }
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
