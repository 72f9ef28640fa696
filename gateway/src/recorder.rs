//! Settled calls written in batches, off the answer's path: a call's answer never waits for the
//! ledger, and one transaction per batch (not five writes per call) keeps the gateway's CPU for
//! the calls. A batch that cannot be written is retried; the queue is bounded, and a full queue
//! makes the caller wait rather than lose a row.

use crate::audit_store::Source;
use crate::ledger::{Ledger, Reservation, Row};
use serde_json::Value;
use std::time::Duration;
use tollgate_core::spend::Micros;

pub struct Settled {
    pub reservation: Reservation,
    pub cost: Micros,
    pub row: Row,
    pub audit: (Source, Value),
}

/// What is written: a settled call, or a refused one (an audit record only: nothing was spent).
pub enum Entry {
    Call(Box<Settled>),
    Refusal(Source, Value),
}

const QUEUE: usize = 4096;
const MAX_BATCH: usize = 512;

pub fn spawn(ledger: Ledger) -> tokio::sync::mpsc::Sender<Entry> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let calls: Vec<(Reservation, Micros, Row)> = batch
                .iter()
                .filter_map(|e| match e {
                    Entry::Call(s) => Some((s.reservation.clone(), s.cost, s.row.clone())),
                    Entry::Refusal(..) => None,
                })
                .collect();
            let audit: Vec<(Source, Value)> = batch
                .iter()
                .map(|e| match e {
                    Entry::Call(s) => s.audit.clone(),
                    Entry::Refusal(source, record) => (source.clone(), record.clone()),
                })
                .collect();
            let mut wait = Duration::from_millis(50);
            loop {
                match ledger.settle_many(&calls, audit.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, calls = calls.len(), "could not write settled calls; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
        }
    });
    tx
}
