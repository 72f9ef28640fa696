//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written for a while is retried; one the database refuses is
//! written a call (or a record) at a time, so one bad value never holds up the rest. The queue
//! is bounded, and a full queue makes the caller wait rather than lose a row.

use crate::audit_store::Prepared;
use crate::ledger::db::Db;
use crate::ledger::{InFlight, Ledger, LedgerError, Period, Reservation, Row, transaction};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::model::spend::Micros;

pub struct Settled {
    pub reservation: Reservation,
    pub cost: Micros,
    pub row: Row,
    pub audit: Prepared,
}

/// A call opened without a statement of its own: one that counts against no budget, or one
/// served from this gateway's allowances (`drawn`: the periods it took its amount from).
#[derive(Clone)]
pub struct Opened {
    pub call: InFlight,
    pub drawn: Vec<Period>,
}

/// What is written: a call opened (not yet in `inflight`), a settled call, a refused one (an
/// audit record only: nothing was spent), a reservation its call never took (settled as not
/// sent, without a ledger row or an audit record: nothing went to a provider), allowances
/// handed back (after the calls they served); or a request to say when everything sent before
/// it is written.
pub enum Entry {
    Opened(Box<Opened>),
    Call(Box<Settled>),
    Abandoned(Box<Reservation>),
    Refusal(Box<Prepared>),
    /// What was left of each allowance, as memory had it when it was taken out.
    GiveBack(String, Vec<(Period, i64)>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Waits until everything sent to `recorder` before now is written.
pub async fn flush(recorder: &tokio::sync::mpsc::Sender<Entry>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if recorder.send(Entry::Flush(tx)).await.is_ok() {
        let _ = rx.await;
    }
}

const QUEUE: usize = 4096;
const MAX_BATCH: usize = 512;
/// How long a batch waits for company: a settled call is in the ledger this much later, and its
/// answer never waits for it.
const LINGER: Duration = Duration::from_millis(4);

pub fn spawn(ledger: Ledger) -> tokio::sync::mpsc::Sender<Entry> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // Under load, what arrives meanwhile shares the transaction: a transaction is a
            // hand-off to the database's thread (on PostgreSQL, each statement a round trip),
            // and its own costs are paid once a batch.
            if !batch.iter().any(|e| matches!(e, Entry::Flush(_))) {
                tokio::time::sleep(LINGER).await;
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
            }
            let (units, flushed) = units(batch.drain(..));
            if !units.is_empty() {
                write(&ledger, units.into()).await;
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    });
    tx
}

/// What is written together: a call's opening and its settlement, one refusal, or allowances
/// handed back.
#[derive(Default, Clone)]
pub(crate) struct Unit {
    pub opened: Vec<Opened>,
    /// With its ledger row, but for a reservation its call never took.
    pub calls: Vec<(Reservation, Micros, Option<Row>)>,
    pub audit: Vec<Prepared>,
    /// By gateway instance: the period and what was left of the allowance.
    pub given_back: Vec<(String, Period, i64)>,
}

type Flushed = Vec<tokio::sync::oneshot::Sender<()>>;

/// The batch's entries as units (moved, not copied), and who waits for them to be written.
fn units(batch: impl Iterator<Item = Entry>) -> (Vec<Unit>, Flushed) {
    let mut out: Vec<Unit> = Vec::new();
    let mut flushed = Vec::new();
    // Units holding only a call's opening, by the call's id.
    let mut opening: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for e in batch {
        match e {
            Entry::Opened(c) => {
                opening.insert(c.call.id, out.len());
                out.push(Unit { opened: vec![*c], ..Unit::default() });
            }
            Entry::Call(s) => {
                let Settled { reservation, cost, row, audit } = *s;
                // Settled in the batch it was opened in: one unit, so the pair is never split.
                match opening.remove(&reservation.id).and_then(|i| out.get_mut(i)) {
                    Some(u) => {
                        u.calls.push((reservation, cost, Some(row)));
                        u.audit.push(audit);
                    }
                    None => out.push(Unit { calls: vec![(reservation, cost, Some(row))], audit: vec![audit], ..Unit::default() }),
                }
            }
            Entry::Abandoned(reservation) => {
                // Its money and token claims go back; a request-rate claim keeps its request
                // (the agent made it), as every settlement does.
                let mut reservation = *reservation;
                reservation.tokens_used = Some(0);
                out.push(Unit { calls: vec![(reservation, 0, None)], ..Unit::default() });
            }
            Entry::Refusal(record) => out.push(Unit { audit: vec![*record], ..Unit::default() }),
            Entry::GiveBack(instance, periods) => {
                out.push(Unit { given_back: periods.into_iter().map(|(p, left)| (instance.clone(), p, left)).collect(), ..Unit::default() });
            }
            Entry::Flush(done) => flushed.push(done),
        }
    }
    (out, flushed)
}

/// A failure that trying again cannot mend: the database refused what it was given (a value out
/// of range, a character it cannot store), not a connection that failed.
fn permanent(e: &LedgerError) -> bool {
    match e {
        // PostgreSQL's deadlock and serialisation failures, SQLite's busy and locked: the same
        // transaction goes through when tried again.
        LedgerError::Db(sqlx::Error::Database(d)) => !matches!(d.code().as_deref(), Some("40P01" | "40001" | "5" | "6" | "517" | "262")),
        LedgerError::Db(sqlx::Error::Encode(_)) => true,
        // On the SQLite writer's own connection: a value the database refused; busy and locked
        // are tried again, as is a fault of the statements themselves (loudly, as sqlx's were).
        LedgerError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => !matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked),
        // A transaction that made the writer panic would again.
        LedgerError::Failed(_) => true,
        _ => false,
    }
}

/// Writes the units in one transaction; when the database refuses it, each unit alone, so one
/// bad unit never holds up the others. A unit refused for a value in it is written again
/// without its audit records, then as its calls' openings and allowances alone (loudly): what
/// counts against a budget is never dropped. A database that is away is waited for: nothing is
/// dropped for that.
async fn write(ledger: &Ledger, units: Arc<[Unit]>) {
    if write_retrying(ledger, &units).await.is_ok() {
        return;
    }
    for u in units.iter() {
        if units.len() > 1 && write_retrying(ledger, &Arc::from([u.clone()])).await.is_ok() {
            continue;
        }
        let bare = Unit { opened: u.opened.clone(), calls: u.calls.clone(), audit: Vec::new(), given_back: u.given_back.clone() };
        if write_retrying(ledger, &Arc::from([bare.clone()])).await.is_err() {
            let bare = Unit { calls: Vec::new(), ..bare };
            let _ = write_retrying(ledger, &Arc::from([bare])).await;
        }
    }
}

/// Writes units together, retrying while the database is away; the error they are refused
/// with, if they are.
async fn write_retrying(ledger: &Ledger, units: &Arc<[Unit]>) -> Result<(), ()> {
    let mut wait = Duration::from_millis(50);
    let calls: usize = units.iter().map(|u| u.calls.len()).sum();
    loop {
        let batch = units.clone();
        match transaction!(ledger, |db| settle_units_in(db, &batch)).await {
            Ok(()) => return Ok(()),
            Err(e) if permanent(&e) => {
                let records: usize = units.iter().map(|u| u.audit.len()).sum();
                tracing::error!(error = %e, calls, records, "the ledger refused what was written");
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, calls, "could not write settled calls; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes units in one transaction: calls opened (their `inflight` rows, and what those served
/// from allowances took, drawn from the leases), each settled call's reservation replaced by its
/// cost, their ledger rows and audit records appended to the chain, then allowances handed back
/// (after the calls they served). One write per batch, not five per call, is what lets a
/// gateway on one CPU keep up. Calls opened since the last batch go first: a call settled in
/// this batch may have been opened in it.
async fn settle_units_in(db: &mut impl Db, units: &[Unit]) -> Result<(), LedgerError> {
    let opened = || units.iter().flat_map(|u| &u.opened);
    let calls = || units.iter().flat_map(|u| &u.calls);
    // A call opened and settled within one batch never needs its in-flight row: most calls,
    // under load.
    let settled: HashSet<i64> = calls().map(|(r, ..)| r.id).collect();
    let passing: HashSet<i64> = opened().map(|o| o.call.id).filter(|id| settled.contains(id)).collect();
    let still_open: Vec<&InFlight> = opened().map(|o| &o.call).filter(|c| !passing.contains(&c.id)).collect();
    crate::ledger::open_all_in(db, &still_open).await?;
    let to_settle: Vec<(&Reservation, Micros)> = calls().map(|(r, cost, _)| (r, *cost)).collect();
    let (taken, mut spend) = crate::ledger::settle_all_in(db, &to_settle, &passing).await?;
    let drawn = drawn_by_instance(opened());
    let given_back: Vec<&(String, Period, i64)> = units.iter().flat_map(|u| &u.given_back).collect();
    // Spend rows first, in order; then the leases; then the chain's head (leases.rs).
    let periods: BTreeSet<Period> = spend.keys().chain(drawn.keys().map(|(_, p)| p)).chain(given_back.iter().map(|(_, p, _)| p)).cloned().collect();
    crate::ledger::leases::lock_in(db, &periods).await?;
    for ((instance, period), amount) in &drawn {
        let held = crate::ledger::leases::take_off_in(db, instance, period, *amount).await?;
        let d = spend.entry(period.clone()).or_default();
        d.0 += amount;
        d.1 -= if held { *amount } else { 0 };
    }
    for (instance, period, left) in given_back {
        if crate::ledger::leases::take_off_in(db, instance, period, *left).await? {
            spend.entry(period.clone()).or_default().1 -= left;
        }
        crate::ledger::leases::forget_spent_in(db, instance, period).await?;
    }
    crate::ledger::add_all_in(db, &spend).await?;
    let rows: Vec<&Row> = calls().filter(|(r, ..)| taken.contains(&r.id)).filter_map(|(.., row)| row.as_ref()).collect();
    crate::ledger::record_in(db, &rows).await?;
    let audit: Vec<&Prepared> = units.iter().flat_map(|u| &u.audit).collect();
    crate::audit_store::append_in(db, audit.into_iter()).await
}

/// What the opened calls took from allowances, by instance and period.
fn drawn_by_instance<'a>(opened: impl Iterator<Item = &'a Opened>) -> BTreeMap<(String, Period), i64> {
    let mut out: BTreeMap<(String, Period), i64> = BTreeMap::new();
    for o in opened {
        for period in &o.drawn {
            *out.entry((o.call.instance.clone(), period.clone())).or_insert(0) += o.call.amount;
        }
    }
    out
}

/// [`settle_units_in`] of one unit, in a transaction of its own.
#[cfg(test)]
pub(crate) async fn settle_many(ledger: &Ledger, u: &Unit) -> Result<(), LedgerError> {
    let units: Arc<[Unit]> = Arc::from([u.clone()]);
    transaction!(ledger, |db| settle_units_in(db, &units)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit_store::Source;
    use crate::ledger::tests::{call, ledger};

    #[tokio::test]
    async fn a_batch_whose_records_are_refused_still_counts_its_calls() {
        let (l, _dir) = ledger().await;
        // The chain's next number is taken already: the database refuses the batch's records.
        sqlx::query(
            "INSERT INTO audit (seq, prev, hash, time_us, namespace, service_account, agent, tool, decision, record, cut, lost, shadow_of, shadow_would) \
             VALUES (1, '', '', 0, '', '', '', '', '', '{}', 0, 0, '', '')",
        )
        .execute(&l.pool)
        .await
        .unwrap();
        let c = call(5);
        let settled = Reservation { id: c.id, amount: 5, ..Reservation::default() };
        let row = Row { namespace: "ns".into(), agent: "coder".into(), cost: 5, status: 200, ..Row::default() };
        let source = Source { namespace: "ns".into(), service_account: "coder".into(), shipped: false };
        let record = Prepared::new(&source, serde_json::json!({"kind": "model_call"}));
        let unit = Unit { opened: vec![Opened { call: c, drawn: Vec::new() }], calls: vec![(settled, 5, Some(row))], audit: vec![record], ..Unit::default() };
        write(&l, Arc::from([unit])).await;
        assert_eq!(l.calls("ns", "coder").await.unwrap().len(), 1, "the call's ledger row is written without its record");
    }
}
