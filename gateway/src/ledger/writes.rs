//! The ledger's writes that transactions share: budget periods' figures changed, calls'
//! `inflight` rows opened and taken, ledger rows appended; each a few statements a batch,
//! whatever its size.

use std::collections::{BTreeMap, HashSet};

use super::db::{Arg, Db, Sql};
use super::types::{InFlight, LedgerError, Period, Reservation, Row, Unit};
use tollgate_core::model::spend::Micros;

/// Adds to budget periods what each has spent and what gateways hold of it (`(spent, leased)`
/// by period; nothing to do for none), in pieces of the sizes of [`PIECES`]: with many budgets,
/// a batch's periods are many, and one statement each was most of its hand-offs. (The casts:
/// PostgreSQL types a `VALUES` list's parameters as text when it is not told otherwise.)
pub(crate) async fn add_all_in(db: &mut impl Db, changes: &BTreeMap<Period, (i64, i64)>) -> Result<(), LedgerError> {
    let changed: Vec<(&Period, &(i64, i64))> = changes.iter().filter(|(_, (spent, leased))| *spent != 0 || *leased != 0).collect();
    for piece in pieces(&changed) {
        let mut args = Vec::with_capacity(piece.len() * 4);
        for ((budget, period_start_us), (spent, leased)) in piece {
            args.extend([Arg::Text(budget), Arg::Int(*period_start_us), Arg::Int(*spent), Arg::Int(*leased)]);
        }
        let sql = Sql::rows(
            "WITH v (budget, period_start_us, spent, leased) AS (VALUES ($1, $2, $3, $4)) \
             UPDATE budget_spend SET spent_micros = budget_spend.spent_micros + CAST(v.spent AS BIGINT), \
             leased_micros = budget_spend.leased_micros + CAST(v.leased AS BIGINT) \
             FROM v WHERE budget_spend.budget = v.budget AND budget_spend.period_start_us = CAST(v.period_start_us AS BIGINT)",
            piece.len(),
        );
        db.execute(sql, &args).await?;
    }
    Ok(())
}

/// Adds `spent` to what a budget period has spent and `leased` to what gateways hold of it
/// (nothing to do for none): [`add_all_in`] of one period.
pub(crate) async fn add_in(db: &mut impl Db, period: &Period, spent: i64, leased: i64) -> Result<(), LedgerError> {
    add_all_in(db, &BTreeMap::from([(period.clone(), (spent, leased))])).await
}

/// Calls' `inflight` rows, [`ROWS_PER_INSERT`] to a statement (a short chunk repeats its last
/// row, which the conflict clause then skips: one statement of one shape, whatever the group).
pub(crate) async fn open_all_in(db: &mut impl Db, calls: &[&InFlight]) -> Result<(), LedgerError> {
    for chunk in calls.chunks(ROWS_PER_INSERT) {
        let mut args = Vec::with_capacity(ROWS_PER_INSERT * 10);
        for i in 0..ROWS_PER_INSERT {
            let Some(call) = chunk.get(i).or(chunk.last()) else { break };
            args.extend(inflight_args(call));
        }
        let sql = Sql::bare(
            "INSERT INTO inflight (id, instance, started_us, namespace, agent, service_account, pod, provider, model, amount_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), \
             ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20), \
             ($21, $22, $23, $24, $25, $26, $27, $28, $29, $30), \
             ($31, $32, $33, $34, $35, $36, $37, $38, $39, $40), \
             ($41, $42, $43, $44, $45, $46, $47, $48, $49, $50), \
             ($51, $52, $53, $54, $55, $56, $57, $58, $59, $60), \
             ($61, $62, $63, $64, $65, $66, $67, $68, $69, $70), \
             ($71, $72, $73, $74, $75, $76, $77, $78, $79, $80) ON CONFLICT DO NOTHING",
        );
        db.execute(sql, &args).await?;
    }
    Ok(())
}

/// Takes many calls out of `inflight` to settle them: the ids taken (every call but those
/// another gateway already settled as interrupted, this one's heartbeat having gone stale: their
/// ledger rows and their budgets' shares are written already, and are not written twice), and
/// what settling them changes in each budget period, as (spent, leased), for the caller to write
/// with its other changes once it holds the periods' rows in order. The calls `passing` were
/// opened in this same batch and never written in flight: they are taken as they are. One
/// `DELETE … RETURNING` per [`IDS_PER_DELETE`] calls, not one per call.
pub(crate) async fn settle_all_in(
    db: &mut impl Db,
    calls: &[(&Reservation, Micros)],
    passing: &HashSet<i64>,
) -> Result<(HashSet<i64>, BTreeMap<Period, (i64, i64)>), LedgerError> {
    // Id 0: a call never written in flight (a test's), settled as it is.
    let ids: Vec<i64> = calls.iter().map(|(r, _)| r.id).filter(|id| *id != 0 && !passing.contains(id)).collect();
    let mut taken: HashSet<i64> = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_DELETE) {
        // A short chunk repeats its last id: a statement of one shape, whatever the batch.
        let args: Vec<Arg> = (0..IDS_PER_DELETE).map(|i| Arg::Int(chunk.get(i).or(chunk.last()).copied().unwrap_or_default())).collect();
        let sql = Sql::bare("DELETE FROM inflight WHERE id IN ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id");
        taken.extend(db.ints(sql, &args, 1).await?);
    }
    taken.insert(0);
    taken.extend(passing);
    let deltas = settlement_deltas(calls, &taken).into_iter().map(|(period, d)| (period, (d, 0))).collect();
    Ok((taken, deltas))
}

/// Ids one settlement statement takes.
const IDS_PER_DELETE: usize = 16;

/// What settling `calls` changes in each budget period (only those of the calls `taken`): the
/// actual replaces the reserved, in each claim's unit. Ordered by budget and period, the order
/// every transaction locks them in, so two replicas' batches never deadlock; zero changes left out.
pub(super) fn settlement_deltas(calls: &[(&Reservation, Micros)], taken: &HashSet<i64>) -> std::collections::BTreeMap<(String, i64), i64> {
    let mut deltas = std::collections::BTreeMap::new();
    for (r, actual) in calls.iter().filter(|(r, _)| taken.contains(&r.id)) {
        for c in &r.claims {
            let reserved = c.amount.unwrap_or(r.amount);
            let settled = match c.unit {
                Unit::Micros => *actual,
                Unit::Requests => reserved,
                Unit::Tokens => r.tokens_used.unwrap_or(reserved),
            };
            *deltas.entry((c.budget.clone(), c.period_start_us)).or_insert(0) += settled - reserved;
        }
    }
    deltas.retain(|_, d| *d != 0);
    deltas
}

/// Ledger rows, in pieces of the sizes of [`PIECES`]: a batch runs few statements. Their ids
/// are consecutive, taken from `ledger_head` (its row is locked until the transaction ends, as
/// the audit chain's head is, and always before it): every row lands on the last page of the
/// id's index.
pub(crate) async fn record_in(db: &mut impl Db, rows: &[&Row]) -> Result<(), LedgerError> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let head = db.ints(Sql::written("UPDATE ledger_head SET seq = seq + $1 WHERE id = 1 RETURNING seq"), &[Arg::Int(n)], 1).await?;
    let last = one(&head)?;
    let mut ids = (last - n + 1)..;
    for piece in pieces(rows) {
        let mut args = Vec::with_capacity(piece.len() * 13);
        for (row, id) in piece.iter().zip(&mut ids) {
            args.extend(row_args(id, row));
        }
        let sql = Sql::rows(
            "INSERT INTO ledger (id, time_us, namespace, agent, pod, provider, model, input_tokens, cached_input_tokens, output_tokens, cost_micros, latency_ms, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            piece.len(),
        );
        db.execute(sql, &args).await?;
    }
    Ok(())
}

/// The one value a statement that changes one row returns.
pub(crate) fn one(values: &[i64]) -> Result<i64, LedgerError> {
    match values {
        [v] => Ok(*v),
        _ => Err(LedgerError::Unavailable(format!("expected one value from the ledger, read {}", values.len()))),
    }
}

/// `items` in pieces of the sizes of [`PIECES`], each as large as it can be: few statements, of
/// one shape per size (`sql::rows_for_backend` makes each from one row's literal).
pub(crate) fn pieces<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::with_capacity(items.len() / PIECES[0] + PIECES.len());
    for size in PIECES {
        while items.len() >= size {
            let (piece, rest) = items.split_at(size);
            out.push(piece);
            items = rest;
        }
    }
    out
}

/// The sizes a batch's ledger rows and audit records are written in: a batch takes one
/// statement per 64 rows and one per bit of what is left (63 rows: six statements), each a
/// statement prepared once.
pub const PIECES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Rows one multi-row `INSERT` writes.
pub(crate) const ROWS_PER_INSERT: usize = 8;

fn inflight_args(call: &InFlight) -> [Arg<'_>; 10] {
    [
        Arg::Int(call.id),
        Arg::Text(&call.instance),
        Arg::Int(call.started_us),
        Arg::Text(&call.namespace),
        Arg::Text(&call.agent),
        Arg::Text(&call.service_account),
        Arg::Text(&call.pod),
        Arg::Text(&call.provider),
        Arg::Text(&call.model),
        Arg::Int(call.amount),
    ]
}

fn row_args(id: i64, row: &Row) -> [Arg<'_>; 13] {
    let count = |n: u64| Arg::Int(i64::try_from(n).unwrap_or(i64::MAX));
    [
        Arg::Int(id),
        Arg::Int(row.time_us),
        Arg::Text(&row.namespace),
        Arg::Text(&row.agent),
        Arg::Text(&row.pod),
        Arg::Text(&row.provider),
        Arg::Text(&row.model),
        count(row.usage.input),
        count(row.usage.cached_input),
        count(row.usage.output),
        Arg::Int(row.cost),
        Arg::Int(row.latency_ms),
        Arg::Int(i64::from(row.status)),
    ]
}
