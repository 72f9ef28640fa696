//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written for a while is retried; one the database refuses is
//! written a call (or a record) at a time, so one bad value never holds up the rest. The queue
//! is bounded, and a full queue makes the caller wait rather than lose a row.

use crate::audit_store::Source;
use crate::ledger::{InFlight, Ledger, LedgerError, Reservation, Row};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tollgate_core::model::spend::Micros;

pub struct Settled {
    pub reservation: Reservation,
    pub cost: Micros,
    pub row: Row,
    pub audit: (Source, Value),
}

/// What is written: a call opened (not counted against a budget, so not yet in `inflight`), a
/// settled call, a refused one (an audit record only: nothing was spent); or a request to say
/// when everything sent before it is written.
pub enum Entry {
    Opened(Box<InFlight>),
    Call(Box<Settled>),
    Refusal(Source, Value),
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
const LINGER: Duration = Duration::from_millis(2);

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
            let units = units(&batch);
            if !units.is_empty() {
                write(&ledger, &units).await;
            }
            for e in batch.drain(..) {
                if let Entry::Flush(done) = e {
                    let _ = done.send(());
                }
            }
        }
    });
    tx
}

/// What is written together: a call's opening and its settlement, or one refusal.
#[derive(Default, Clone)]
struct Unit {
    opened: Vec<InFlight>,
    calls: Vec<(Reservation, Micros, Row)>,
    audit: Vec<(Source, Value)>,
}

fn units(batch: &[Entry]) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    // Units holding only a call's opening, by the call's id.
    let mut opening: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for e in batch {
        match e {
            Entry::Opened(c) => {
                opening.insert(c.id, out.len());
                out.push(Unit { opened: vec![(**c).clone()], ..Unit::default() });
            }
            Entry::Call(s) => {
                let settled = (s.reservation.clone(), s.cost, s.row.clone());
                // Settled in the batch it was opened in: one unit, so the pair is never split.
                match opening.remove(&s.reservation.id).and_then(|i| out.get_mut(i)) {
                    Some(u) => {
                        u.calls.push(settled);
                        u.audit.push(s.audit.clone());
                    }
                    None => out.push(Unit { calls: vec![settled], audit: vec![s.audit.clone()], ..Unit::default() }),
                }
            }
            Entry::Refusal(source, record) => out.push(Unit { audit: vec![(source.clone(), record.clone())], ..Unit::default() }),
            Entry::Flush(_) => {}
        }
    }
    out
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
    let mut whole = Unit::default();
    for u in units {
        whole.opened.extend(u.opened.iter().cloned());
        whole.calls.extend(u.calls.iter().cloned());
        whole.audit.extend(u.audit.iter().cloned());
    }
    if write_one(ledger, &whole).await.is_ok() || units.len() == 1 {
        return;
    }
    for u in units {
        let _ = write_one(ledger, u).await;
    }
}

/// Writes one unit, retrying while the database is away; the error it is refused with, if it is.
async fn write_one(ledger: &Ledger, u: &Unit) -> Result<(), ()> {
    let mut wait = Duration::from_millis(50);
    loop {
        match settle_many(ledger, &u.opened, &u.calls, u.audit.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if permanent(&e) => {
                tracing::error!(error = %e, calls = u.calls.len(), records = u.audit.len(), "the ledger refused what was written");
                return Err(());
            }
            Err(e) => {
                tracing::error!(error = %e, calls = u.calls.len(), "could not write settled calls; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Settles many calls in one transaction: each reservation replaced by its cost, each call's
/// ledger row, and their audit records appended to the chain. One write per batch, not five
/// per call, is what lets a gateway on one CPU keep up.
/// Calls opened since the last batch are written first: a call settled in this batch may
/// have been opened in it.
pub(crate) async fn settle_many(
    ledger: &Ledger,
    opened: &[InFlight],
    calls: &[(Reservation, Micros, Row)],
    audit: Vec<(crate::audit_store::Source, serde_json::Value)>,
) -> Result<(), LedgerError> {
    let mut tx = ledger.pool.begin().await?;
    // A call opened and settled within one batch never needs its in-flight row: most calls,
    // under load. (Such a call counts against no budget: those are opened as they reserve.)
    let settled: HashSet<i64> = calls.iter().map(|(r, ..)| r.id).collect();
    let (passing, still_open): (Vec<&InFlight>, Vec<&InFlight>) = opened.iter().partition(|call| settled.contains(&call.id));
    let passing: HashSet<i64> = passing.iter().map(|call| call.id).collect();
    crate::ledger::open_all_in(&mut tx, &still_open).await?;
    let to_settle: Vec<(&Reservation, Micros)> = calls.iter().filter(|(r, ..)| !passing.contains(&r.id)).map(|(r, cost, _)| (r, *cost)).collect();
    let taken = crate::ledger::settle_all_in(&mut tx, &to_settle).await?;
    let rows: Vec<&Row> = calls.iter().filter(|(r, ..)| passing.contains(&r.id) || taken.contains(&r.id)).map(|(.., row)| row).collect();
    crate::ledger::record_in(&mut tx, &rows).await?;
    crate::audit_store::append_in(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}
