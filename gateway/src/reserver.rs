//! Budget reservations, group-committed: a call's reservation is on its answer's path, and each
//! statement is a hand-off to the database's thread, so what queues while one group is written
//! goes in the next, in one transaction ([`Ledger::reserve_many`]). Alone, a call is written at
//! once; under load, the transaction's own statements are paid once a group.

use crate::ledger::{Claim, InFlight, Ledger, LedgerError, Reservation};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Reservation, LedgerError>>;

/// Reservations in a group at most.
const MAX_GROUP: usize = 256;

#[derive(Clone)]
pub struct Reserver(mpsc::Sender<(Vec<Claim>, InFlight, Reply)>);

impl Reserver {
    pub fn spawn(ledger: Ledger) -> Reserver {
        let (tx, mut rx) = mpsc::channel::<(Vec<Claim>, InFlight, Reply)>(4 * MAX_GROUP);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let (requests, replies): (Vec<_>, Vec<_>) = group.drain(..).map(|(claims, call, reply)| ((claims, call), reply)).unzip();
                match ledger.reserve_many(requests).await {
                    Ok(answers) => {
                        for (answer, reply) in answers.into_iter().zip(replies) {
                            let _ = reply.send(answer);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, calls = replies.len(), "could not write a group of budget reservations");
                        for reply in replies {
                            let _ = reply.send(Err(LedgerError::Unavailable(e.to_string())));
                        }
                    }
                }
            }
        });
        Reserver(tx)
    }

    /// `call.amount` taken from every budget of `claims`, or from none (see [`Ledger::reserve`]).
    pub async fn reserve(&self, claims: Vec<Claim>, call: &InFlight) -> Result<Reservation, LedgerError> {
        if claims.is_empty() {
            return Ok(crate::ledger::unregistered(call));
        }
        let (reply, answer) = oneshot::channel();
        let gone = || LedgerError::Unavailable("the reservation writer has stopped".into());
        self.0.send((claims, call.clone(), reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
