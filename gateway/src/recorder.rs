//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written for a while is retried; one the database refuses is
//! written a call (or a record) at a time, so one bad value never holds up the rest. The queue
//! is bounded, and a full queue makes the caller wait rather than lose a row.

use crate::audit_store::Source;
use crate::ledger::{InFlight, Ledger, LedgerError, Period, Reservation, Row};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tollgate_core::model::spend::Micros;

pub struct Settled {
    pub reservation: Reservation,
    pub cost: Micros,
    pub row: Row,
    pub audit: (Source, Value),
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
    Refusal(Source, Value),
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

/// What is written together: a call's opening and its settlement, one refusal, or allowances
/// handed back.
#[derive(Default, Clone)]
pub(crate) struct Unit {
    pub opened: Vec<Opened>,
    pub calls: Vec<(Reservation, Micros, Row)>,
    pub audit: Vec<(Source, Value)>,
    /// By gateway instance.
    pub given_back: Vec<(String, Period)>,
}

fn units(batch: &[Entry]) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    // Units holding only a call's opening, by the call's id.
    let mut opening: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for e in batch {
        match e {
            Entry::Opened(c) => {
                opening.insert(c.call.id, out.len());
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
            Entry::GiveBack(instance, periods) => {
                out.push(Unit { given_back: periods.iter().map(|p| (instance.clone(), p.clone())).collect(), ..Unit::default() });
            }
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
        whole.given_back.extend(u.given_back.iter().cloned());
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
        match settle_many(ledger, u).await {
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

/// Writes a unit in one transaction: calls opened (their `inflight` rows, and what those served
/// from allowances took, drawn from the leases), each settled call's reservation replaced by its
/// cost, their ledger rows and audit records appended to the chain, then allowances handed back
/// (after the calls they served). One write per batch, not five per call, is what lets a
/// gateway on one CPU keep up. Calls opened since the last batch go first: a call settled in
/// this batch may have been opened in it.
pub(crate) async fn settle_many(ledger: &Ledger, u: &Unit) -> Result<(), LedgerError> {
    let mut tx = ledger.pool.begin().await?;
    // A call opened and settled within one batch never needs its in-flight row: most calls,
    // under load.
    let settled: HashSet<i64> = u.calls.iter().map(|(r, ..)| r.id).collect();
    let passing: HashSet<i64> = u.opened.iter().map(|o| o.call.id).filter(|id| settled.contains(id)).collect();
    let still_open: Vec<&InFlight> = u.opened.iter().map(|o| &o.call).filter(|c| !passing.contains(&c.id)).collect();
    crate::ledger::open_all_in(&mut tx, &still_open).await?;
    for (instance, drawn) in drawn_by_instance(&u.opened) {
        crate::ledger::leases::draw_all_in(&mut tx, &instance, &drawn).await?;
    }
    let to_settle: Vec<(&Reservation, Micros)> = u.calls.iter().map(|(r, cost, _)| (r, *cost)).collect();
    let taken = crate::ledger::settle_all_in(&mut tx, &to_settle, &passing).await?;
    let rows: Vec<&Row> = u.calls.iter().filter(|(r, ..)| taken.contains(&r.id)).map(|(.., row)| row).collect();
    crate::ledger::record_in(&mut tx, &rows).await?;
    crate::audit_store::append_in(&mut tx, u.audit.clone()).await?;
    for (instance, period) in &u.given_back {
        crate::ledger::leases::give_back_in(&mut tx, instance, period).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What the opened calls took from allowances, by instance and period.
fn drawn_by_instance(opened: &[Opened]) -> BTreeMap<String, BTreeMap<Period, i64>> {
    let mut out: BTreeMap<String, BTreeMap<Period, i64>> = BTreeMap::new();
    for o in opened {
        for period in &o.drawn {
            *out.entry(o.call.instance.clone()).or_default().entry(period.clone()).or_insert(0) += o.call.amount;
        }
    }
    out
}
