//! The database's side of allowances (`allowance.rs`): a lease granted in a group's
//! transaction, drawn down as the recorder writes the calls it served, handed back when idle or
//! at shutdown, and charged when its gateway died (docs/design.md §3.4). Each moves the same
//! amount between `budget_leases` and `budget_spend.leased_micros`, so the latter is always the
//! sum of the former.
//!
//! Lock order, in every transaction that touches them: the `budget_spend` rows first, sorted by
//! budget and period (`lock_in`), then `budget_leases` rows, then `ledger_head` (the ledger's
//! row numbers, `record_in`), then `audit_head`; two replicas'
//! transactions then never wait on each other in a circle. SQLite's ledger is written by one connection
//! of one gateway: its transactions never overlap, and `lock_in` does nothing there.

use std::collections::BTreeSet;

use super::db::{Arg, Cell, Db, Kind, Sql};
use super::types::Period;
use super::{Ledger, LedgerError, Row, add_in, transaction};

/// `size` leased to `instance` from `period` (whose row the caller's transaction holds locked).
pub(crate) async fn grant_in(db: &mut impl Db, instance: &str, period: &Period, size: i64) -> Result<(), LedgerError> {
    let sql = Sql::written(
        "INSERT INTO budget_leases (instance, budget, period_start_us, amount_micros) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (instance, budget, period_start_us) DO UPDATE SET amount_micros = budget_leases.amount_micros + excluded.amount_micros",
    );
    db.execute(sql, &[Arg::Text(instance), Arg::Text(&period.0), Arg::Int(period.1), Arg::Int(size)]).await?;
    add_in(db, period, 0, size).await
}

/// The `budget_spend` rows of `periods` locked, in their sorted order, before anything else of
/// the transaction's.
pub(crate) async fn lock_in(db: &mut impl Db, periods: &BTreeSet<Period>) -> Result<(), LedgerError> {
    // SQLite's writes are one connection's: its transactions never overlap, and no order is kept.
    if db.sqlite() {
        return Ok(());
    }
    for (budget, period_start_us) in periods {
        let sql = Sql::written("UPDATE budget_spend SET spent_micros = spent_micros WHERE budget = $1 AND period_start_us = $2");
        db.execute(sql, &[Arg::Text(budget), Arg::Int(*period_start_us)]).await?;
    }
    Ok(())
}

/// `amount` taken off `instance`'s lease of `period` (calls it served, or what is left of it
/// handed back); whether the lease was still held. One no longer held was charged when this
/// gateway was taken for dead, or handed back whole at its stop: the caller then charges what
/// the calls took to the budget directly (counted twice at worst, never not at all). A lease
/// left at nothing goes.
pub(crate) async fn take_off_in(db: &mut impl Db, instance: &str, period: &Period, amount: i64) -> Result<bool, LedgerError> {
    let sql = Sql::written("UPDATE budget_leases SET amount_micros = amount_micros - $4 WHERE instance = $1 AND budget = $2 AND period_start_us = $3");
    let held = db.execute(sql, &[Arg::Text(instance), Arg::Text(&period.0), Arg::Int(period.1), Arg::Int(amount)]).await? == 1;
    if !held {
        tracing::warn!(budget = period.0, "an allowance no longer held: what its calls took is charged to the budget directly");
    }
    Ok(held)
}

/// Leases taken off to nothing, removed.
pub(crate) async fn forget_spent_in(db: &mut impl Db, instance: &str, period: &Period) -> Result<(), LedgerError> {
    let sql = Sql::written("DELETE FROM budget_leases WHERE instance = $1 AND budget = $2 AND period_start_us = $3 AND amount_micros <= 0");
    db.execute(sql, &[Arg::Text(instance), Arg::Text(&period.0), Arg::Int(period.1)]).await?;
    Ok(())
}

/// Leases as (instance, budget, period start), read by `sql` with `args`.
async fn leases_in(db: &mut impl Db, sql: Sql, args: &[Arg<'_>]) -> Result<Vec<(String, String, i64)>, LedgerError> {
    let mut cells = db.fetch(sql, args, &[Kind::Text, Kind::Text, Kind::Int]).await?.into_iter();
    let mut out = Vec::new();
    while let (Some(instance), Some(budget), Some(start)) = (cells.next(), cells.next(), cells.next()) {
        out.push((instance.text()?, budget.text()?, start.int()?));
    }
    Ok(out)
}

/// The leases of `instances` (all of one, or every dead one), taken out of the table whole:
/// what each held. The spend rows are locked first, in order.
async fn take_all_in(db: &mut impl Db, leases: Vec<(String, String, i64)>) -> Result<Vec<(String, Period, i64)>, LedgerError> {
    let periods: BTreeSet<Period> = leases.iter().map(|(_, budget, start)| (budget.clone(), *start)).collect();
    lock_in(db, &periods).await?;
    let mut out = Vec::with_capacity(leases.len());
    for (instance, budget, start) in leases {
        let sql = Sql::written("DELETE FROM budget_leases WHERE instance = $1 AND budget = $2 AND period_start_us = $3 RETURNING amount_micros");
        let amount = db.fetch(sql, &[Arg::Text(&instance), Arg::Text(&budget), Arg::Int(start)], &[Kind::Int]).await?;
        if let Some(Cell::Int(amount)) = amount.first() {
            out.push((instance, (budget, start), *amount));
        }
    }
    Ok(out)
}

impl Ledger {
    /// Every allowance of `instance` handed back (a gateway stopping, once its calls are written).
    pub async fn give_back_leases(&self, instance: &str) -> Result<(), LedgerError> {
        let instance = instance.to_owned();
        transaction!(self, |db| async {
            let sql = Sql::written("SELECT instance, budget, period_start_us FROM budget_leases WHERE instance = $1");
            let leases = leases_in(db, sql, &[Arg::Text(&instance)]).await?;
            for (_, period, left) in take_all_in(db, leases).await? {
                add_in(db, &period, 0, -left).await?;
            }
            Ok::<_, LedgerError>(())
        })
        .await
    }

    /// The allowances of every instance not seen since `cutoff_us`, charged: the calls such a
    /// gateway served last may not be written, and a call uncounted could take a budget past
    /// its limit. Each is a ledger row of its own (no agent, status interrupted) with an audit
    /// record, so what a budget holds is still what the ledger charged. How many.
    pub async fn charge_dead_leases(&self, cutoff_us: i64) -> Result<usize, LedgerError> {
        transaction!(self, |db| async {
            let sql = Sql::written(
                "SELECT instance, budget, period_start_us FROM budget_leases WHERE instance NOT IN (SELECT instance FROM gateway_instances WHERE seen_us >= $1)",
            );
            let leases = leases_in(db, sql, &[Arg::Int(cutoff_us)]).await?;
            if leases.is_empty() {
                return Ok::<_, LedgerError>(0);
            }
            let dead = take_all_in(db, leases).await?;
            charge_in(db, &dead).await?;
            Ok(dead.len())
        })
        .await
    }
}

/// Each dead allowance charged whole: its budget's spend, a ledger row and an audit record.
async fn charge_in(db: &mut impl Db, dead: &[(String, Period, i64)]) -> Result<(), LedgerError> {
    let now = jiff::Timestamp::now();
    let mut records = Vec::new();
    for (instance, period, amount) in dead {
        add_in(db, period, *amount, -amount).await?;
        let budget = &period.0;
        let namespace = budget.split_once('/').map_or(budget.as_str(), |(ns, _)| ns).to_owned();
        let row = Row { time_us: now.as_microsecond(), namespace: namespace.clone(), cost: *amount, status: super::INTERRUPTED, ..Row::default() };
        super::record_in(db, &[&row]).await?;
        records.push(crate::audit_store::Prepared::new(
            &crate::audit_store::Source { namespace: namespace.clone(), service_account: String::new(), shipped: false },
            serde_json::json!({
                "kind": "model_call",
                "time": now.to_string(),
                "agent": {"namespace": namespace},
                "decision": "error",
                "status": super::INTERRUPTED,
                "budget": budget,
                "reason": format!("interrupted: gateway {instance} stopped holding an allowance of budget {budget}; charged whole, as the calls it served last may be in it"),
                "costUSD": tollgate_core::model::spend::micros_to_usd(*amount),
            }),
        ));
    }
    crate::audit_store::append_in(db, records.iter()).await
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
