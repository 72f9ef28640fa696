//! Allowances handed back whole (a gateway stopping) and charged whole (a gateway taken for
//! dead): the sweeps over `budget_leases` (`leases.rs` holds what every transaction shares).

use std::collections::BTreeSet;

use super::db::{Arg, Cell, Db, Kind, Sql};
use super::leases::lock_in;
use super::types::{LedgerError, Period, Row};
use super::writes::add_in;
use super::{Ledger, transaction};

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
        let row = Row { time_us: now.as_microsecond(), namespace: namespace.clone(), cost: *amount, status: super::types::INTERRUPTED, ..Row::default() };
        super::writes::record_in(db, &[&row]).await?;
        records.push(crate::audit_store::Prepared::new(
            &crate::audit_store::Source { namespace: namespace.clone(), service_account: String::new(), shipped: false },
            serde_json::json!({
                "kind": "model_call",
                "time": now.to_string(),
                "agent": {"namespace": namespace},
                "decision": "error",
                "status": super::types::INTERRUPTED,
                "budget": budget,
                "reason": format!("interrupted: gateway {instance} stopped holding an allowance of budget {budget}; charged whole, as the calls it served last may be in it"),
                "costUSD": tollgate_core::model::spend::micros_to_usd(*amount),
            }),
        ));
    }
    crate::audit_store::append_in(db, records.iter()).await
}
