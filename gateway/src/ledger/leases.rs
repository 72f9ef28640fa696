//! The database's side of allowances (`allowance.rs`): a lease granted in a group's
//! transaction, drawn down as the recorder writes the calls it served, handed back when idle or
//! at shutdown, and charged when its gateway died (docs/design.md §3.4). Each moves the same
//! amount between `budget_leases` and `budget_spend.leased_micros`, so the latter is always the
//! sum of the former.

use std::collections::BTreeMap;

use super::types::Period;
use super::{Ledger, LedgerError, Row, Tx, add_in};

/// `size` leased to `instance` from `period` (whose row the caller's transaction holds locked).
pub(crate) async fn grant_in(tx: &mut Tx, instance: &str, period: &Period, size: i64) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO budget_leases (instance, budget, period_start_us, amount_micros) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (instance, budget, period_start_us) DO UPDATE SET amount_micros = budget_leases.amount_micros + excluded.amount_micros",
    )
    .bind(instance)
    .bind(&period.0)
    .bind(period.1)
    .bind(size)
    .execute(&mut **tx)
    .await?;
    add_in(tx, period, 0, size).await
}

/// Calls served from `instance`'s allowances, by period: what they took moves from leased to
/// spent. From an allowance no longer held (handed back, or charged when this gateway was taken
/// for dead) they are charged to spent alone: counted twice at worst, never not at all.
pub(crate) async fn draw_all_in(tx: &mut Tx, instance: &str, drawn: &BTreeMap<Period, i64>) -> Result<(), LedgerError> {
    for (period, amount) in drawn {
        let held = sqlx::query("UPDATE budget_leases SET amount_micros = amount_micros - $4 WHERE instance = $1 AND budget = $2 AND period_start_us = $3")
            .bind(instance)
            .bind(&period.0)
            .bind(period.1)
            .bind(amount)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1;
        if !held {
            tracing::warn!(budget = period.0, "calls served from an allowance no longer held: charged to the budget directly");
        }
        add_in(tx, period, *amount, if held { -amount } else { 0 }).await?;
    }
    Ok(())
}

/// `instance`'s allowance for `period` handed back: what is left of it is headroom again.
pub(crate) async fn give_back_in(tx: &mut Tx, instance: &str, period: &Period) -> Result<(), LedgerError> {
    let left: Option<i64> =
        sqlx::query_scalar("DELETE FROM budget_leases WHERE instance = $1 AND budget = $2 AND period_start_us = $3 RETURNING amount_micros")
            .bind(instance)
            .bind(&period.0)
            .bind(period.1)
            .fetch_optional(&mut **tx)
            .await?;
    match left {
        Some(left) => add_in(tx, period, 0, -left).await,
        None => Ok(()),
    }
}

impl Ledger {
    /// Every allowance of `instance` handed back (a gateway stopping, once its calls are written).
    pub async fn give_back_leases(&self, instance: &str) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await?;
        let periods: Vec<(String, i64)> =
            sqlx::query_as("SELECT budget, period_start_us FROM budget_leases WHERE instance = $1 ORDER BY budget, period_start_us")
                .bind(instance)
                .fetch_all(&mut *tx)
                .await?;
        for period in &periods {
            give_back_in(&mut tx, instance, period).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The allowances of every instance not seen since `cutoff_us`, charged: the calls such a
    /// gateway served last may not be written, and a call uncounted could take a budget past
    /// its limit. Each is a ledger row of its own (no agent, status interrupted) with an audit
    /// record, so what a budget holds is still what the ledger charged. How many.
    pub async fn charge_dead_leases(&self, cutoff_us: i64) -> Result<usize, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let dead: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "DELETE FROM budget_leases WHERE instance NOT IN (SELECT instance FROM gateway_instances WHERE seen_us >= $1) \
             RETURNING instance, budget, period_start_us, amount_micros",
        )
        .bind(cutoff_us)
        .fetch_all(&mut *tx)
        .await?;
        let now = jiff::Timestamp::now();
        let mut records = Vec::new();
        for (instance, budget, period_start_us, amount) in &dead {
            add_in(&mut tx, &(budget.clone(), *period_start_us), *amount, -amount).await?;
            let namespace = budget.split_once('/').map_or(budget.as_str(), |(ns, _)| ns).to_owned();
            let row = Row { time_us: now.as_microsecond(), namespace: namespace.clone(), cost: *amount, status: super::INTERRUPTED, ..Row::default() };
            super::record_in(&mut tx, &[&row]).await?;
            records.push(crate::audit_store::Prepared::new(
                &crate::audit_store::Source { namespace, service_account: String::new(), shipped: false },
                serde_json::json!({
                    "kind": "model_call",
                    "time": now.to_string(),
                    "agent": {"namespace": budget.split_once('/').map_or("", |(ns, _)| ns)},
                    "decision": "error",
                    "status": super::INTERRUPTED,
                    "budget": budget,
                    "reason": format!("interrupted: gateway {instance} stopped holding an allowance of budget {budget}; charged whole, as the calls it served last may be in it"),
                    "costUSD": tollgate_core::model::spend::micros_to_usd(*amount),
                }),
            ));
        }
        crate::audit_store::append_in(&mut tx, records.iter()).await?;
        tx.commit().await?;
        Ok(dead.len())
    }
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
