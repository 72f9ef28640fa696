//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written is retried; the queue is bounded, and a full queue
//! makes the caller wait rather than lose a row.

use crate::audit_store::Source;
use crate::ledger::{InFlight, Ledger, Reservation, Row};
use serde_json::Value;
use std::time::Duration;
use tollgate_core::spend::Micros;

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

pub fn spawn(ledger: Ledger) -> tokio::sync::mpsc::Sender<Entry> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let opened: Vec<InFlight> = batch.iter().filter_map(|e| if let Entry::Opened(c) = e { Some((**c).clone()) } else { None }).collect();
            let calls: Vec<(Reservation, Micros, Row)> =
                batch.iter().filter_map(|e| if let Entry::Call(s) = e { Some((s.reservation.clone(), s.cost, s.row.clone())) } else { None }).collect();
            let audit: Vec<(Source, Value)> = batch
                .iter()
                .filter_map(|e| match e {
                    Entry::Call(s) => Some(s.audit.clone()),
                    Entry::Refusal(source, record) => Some((source.clone(), record.clone())),
                    Entry::Opened(_) | Entry::Flush(_) => None,
                })
                .collect();
            let mut wait = Duration::from_millis(50);
            let something = !(opened.is_empty() && calls.is_empty() && audit.is_empty());
            if something {
                loop {
                    match ledger.settle_many(&opened, &calls, audit.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, calls = calls.len(), "could not write settled calls; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
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
