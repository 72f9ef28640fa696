//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written for a while is retried; one the database refuses is
//! written a call (or a record) at a time, so one bad value never holds up the rest. The queue
//! is bounded, and a full queue makes the caller wait rather than lose a row.

use crate::audit_store::Prepared;
use crate::ledger::{InFlight, Ledger, LedgerError, Period, Reservation, Row};
use std::collections::{BTreeMap, HashSet};
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
/// audit record only: nothing was spent), allowances handed back (after the calls they served);
/// or a request to say when everything sent before it is written.
pub enum Entry {
    Opened(Box<Opened>),
    Call(Box<Settled>),
    Refusal(Box<Prepared>),
    GiveBack(String, Vec<Period>),
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
            // Under load, what arrives meanwhile shares the transaction: each statement is a
            // hand-off to the database's thread, and a transaction's own are paid once a batch.
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
                write(&ledger, &units).await;
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
#[derive(Default)]
pub(crate) struct Unit {
    pub opened: Vec<Opened>,
    pub calls: Vec<(Reservation, Micros, Row)>,
    pub audit: Vec<Prepared>,
    /// By gateway instance.
    pub given_back: Vec<(String, Period)>,
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
                        u.calls.push((reservation, cost, row));
                        u.audit.push(audit);
                    }
                    None => out.push(Unit { calls: vec![(reservation, cost, row)], audit: vec![audit], ..Unit::default() }),
                }
            }
            Entry::Refusal(record) => out.push(Unit { audit: vec![*record], ..Unit::default() }),
            Entry::GiveBack(instance, periods) => {
                out.push(Unit { given_back: periods.into_iter().map(|p| (instance.clone(), p)).collect(), ..Unit::default() });
            }
            Entry::Flush(done) => flushed.push(done),
        }
    }
    (out, flushed)
}

/// A failure that trying again cannot mend: the database refused what it was given (a value out
/// of range, a character it cannot store), not a connection that failed.
fn permanent(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Db(sqlx::Error::Database(_) | sqlx::Error::Encode(_)))
}

/// Writes the units in one transaction; when the database refuses it, each unit alone, so one
/// bad unit (which is then dropped, loudly) never holds up the others. A database that is away
/// is waited for: nothing is dropped for that.
async fn write(ledger: &Ledger, units: &[Unit]) {
    if write_retrying(ledger, units).await.is_ok() || units.len() == 1 {
        return;
    }
    for u in units {
        let _ = write_retrying(ledger, std::slice::from_ref(u)).await;
    }
}

/// Writes units together, retrying while the database is away; the error they are refused
/// with, if they are.
async fn write_retrying(ledger: &Ledger, units: &[Unit]) -> Result<(), ()> {
    let mut wait = Duration::from_millis(50);
    let calls: usize = units.iter().map(|u| u.calls.len()).sum();
    loop {
        match settle_units(ledger, units).await {
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
async fn settle_units(ledger: &Ledger, units: &[Unit]) -> Result<(), LedgerError> {
    let opened = || units.iter().flat_map(|u| &u.opened);
    let calls = || units.iter().flat_map(|u| &u.calls);
    let mut tx = ledger.pool.begin().await?;
    // A call opened and settled within one batch never needs its in-flight row: most calls,
    // under load.
    let settled: HashSet<i64> = calls().map(|(r, ..)| r.id).collect();
    let passing: HashSet<i64> = opened().map(|o| o.call.id).filter(|id| settled.contains(id)).collect();
    let still_open: Vec<&InFlight> = opened().map(|o| &o.call).filter(|c| !passing.contains(&c.id)).collect();
    crate::ledger::open_all_in(&mut tx, &still_open).await?;
    for (instance, drawn) in drawn_by_instance(opened()) {
        crate::ledger::leases::draw_all_in(&mut tx, &instance, &drawn).await?;
    }
    let to_settle: Vec<(&Reservation, Micros)> = calls().map(|(r, cost, _)| (r, *cost)).collect();
    let taken = crate::ledger::settle_all_in(&mut tx, &to_settle, &passing).await?;
    let rows: Vec<&Row> = calls().filter(|(r, ..)| taken.contains(&r.id)).map(|(.., row)| row).collect();
    crate::ledger::record_in(&mut tx, &rows).await?;
    let audit: Vec<&Prepared> = units.iter().flat_map(|u| &u.audit).collect();
    crate::audit_store::append_in(&mut tx, audit.into_iter()).await?;
    for (instance, period) in units.iter().flat_map(|u| &u.given_back) {
        crate::ledger::leases::give_back_in(&mut tx, instance, period).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What the opened calls took from allowances, by instance and period.
fn drawn_by_instance<'a>(opened: impl Iterator<Item = &'a Opened>) -> BTreeMap<String, BTreeMap<Period, i64>> {
    let mut out: BTreeMap<String, BTreeMap<Period, i64>> = BTreeMap::new();
    for o in opened {
        for period in &o.drawn {
            *out.entry(o.call.instance.clone()).or_default().entry(period.clone()).or_insert(0) += o.call.amount;
        }
    }
    out
}

/// [`settle_units`] of one unit.
#[cfg(test)]
pub(crate) async fn settle_many(ledger: &Ledger, u: &Unit) -> Result<(), LedgerError> {
    settle_units(ledger, std::slice::from_ref(u)).await
}
