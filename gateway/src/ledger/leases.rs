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

use super::db::{Arg, Db, Sql};
use super::types::{LedgerError, Period};
use super::writes::add_in;

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

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
