//! Budget reservations. A call far from its budgets' limits is taken from this gateway's
//! allowances in memory (`ledger/allowance.rs`), with nothing on its answer's path; the others
//! are group-committed: each statement is a hand-off to the database's thread, so what queues
//! while one group is written goes in the next, in one transaction
//! ([`Ledger::reserve_and_lease`]), with the leases and refills asked for meanwhile. Allowances
//! no call used for a while go back to their budgets through the recorder, after the calls
//! they served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::ledger::allowance::{Allowances, leasable};
use crate::ledger::{Claim, InFlight, LeaseAsk, Ledger, LedgerError, Period, Reservation};
use crate::recorder::Entry;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Reservation, LedgerError>>;

enum Ask {
    Reserve(Vec<Claim>, InFlight, Reply),
    Refill(LeaseAsk),
}

/// Asks in a group at most.
const MAX_GROUP: usize = 256;
/// An allowance no call used for this long goes back.
const IDLE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Reserver {
    asks: mpsc::Sender<Ask>,
    allowances: Arc<Mutex<Allowances>>,
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Reserver {
    /// The group writer, leasing for `instance`, and the task that hands idle allowances back
    /// through `recorder`.
    pub fn spawn(ledger: Ledger, instance: String, recorder: mpsc::Sender<Entry>) -> Reserver {
        let (asks, rx) = mpsc::channel::<Ask>(4 * MAX_GROUP);
        let allowances = Arc::new(Mutex::new(Allowances::default()));
        tokio::spawn(write_groups(ledger, instance.clone(), rx, allowances.clone()));
        tokio::spawn(give_back_idle(instance, recorder, allowances.clone()));
        Reserver { asks, allowances }
    }

    /// The gateway is stopping: nothing more is taken in memory (every call goes to the
    /// database), so its leases can go back whole.
    pub fn close(&self) {
        self.allowances.lock().unwrap_or_else(PoisonError::into_inner).close();
    }

    /// `call.amount` taken from every budget of `claims`, or from none (see [`Ledger::reserve`]).
    pub async fn reserve(&self, claims: Vec<Claim>, call: &InFlight) -> Result<Reservation, LedgerError> {
        if claims.is_empty() {
            return Ok(crate::ledger::unregistered(call));
        }
        let taken = self.allowances.lock().unwrap_or_else(PoisonError::into_inner).take(&claims, call.amount, now_us());
        if let Some(taken) = taken {
            for period in taken.refill {
                let Some(claim) = claims.iter().find(|c| (&c.budget, c.period_start_us) == (&period.0, period.1)) else { continue };
                // A full queue: the group writer is busy, and the next call that misses asks again.
                if self.asks.try_send(Ask::Refill(LeaseAsk { claim: claim.clone(), amount: call.amount })).is_err() {
                    self.allowances.lock().unwrap_or_else(PoisonError::into_inner).refused(&period);
                }
            }
            return Ok(Reservation { id: call.id, claims, amount: call.amount, spent: taken.spent, leased: true, ..Reservation::default() });
        }
        let (reply, answer) = oneshot::channel();
        let gone = || LedgerError::Unavailable("the reservation writer has stopped".into());
        self.asks.send(Ask::Reserve(claims, call.clone(), reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Groups of asks, each in one transaction; leases for the periods a reserved call could have
/// been served from had this gateway held an allowance.
async fn write_groups(ledger: Ledger, instance: String, mut rx: mpsc::Receiver<Ask>, allowances: Arc<Mutex<Allowances>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        let mut leases: BTreeMap<Period, LeaseAsk> = BTreeMap::new();
        {
            let held = allowances.lock().unwrap_or_else(PoisonError::into_inner);
            for ask in group.drain(..) {
                match ask {
                    Ask::Reserve(claims, call, reply) => {
                        for c in claims.iter().filter(|c| leasable(c)) {
                            let period = (c.budget.clone(), c.period_start_us);
                            if held.wants_lease(&period, c.hard_limit) {
                                leases.entry(period).or_insert_with(|| LeaseAsk { claim: c.clone(), amount: call.amount });
                            }
                        }
                        requests.push((claims, call));
                        replies.push(reply);
                    }
                    Ask::Refill(ask) => {
                        leases.entry((ask.claim.budget.clone(), ask.claim.period_start_us)).or_insert(ask);
                    }
                }
            }
        }
        let asked: Vec<LeaseAsk> = leases.into_values().collect();
        let (outcome, granted) = match ledger.reserve_and_lease(requests, &asked, &instance).await {
            Ok((answers, granted)) => (Ok(answers), granted),
            Err(e) => (Err(e), Vec::new()),
        };
        let mut held = allowances.lock().unwrap_or_else(PoisonError::into_inner);
        for ask in &asked {
            let period = (ask.claim.budget.clone(), ask.claim.period_start_us);
            match granted.iter().find(|g| g.period == period) {
                Some(g) => held.grant(period, ask.claim.hard_limit, g.size, g.held, now_us()),
                None => held.refused(&period),
            }
        }
        drop(held);
        answer(outcome, replies);
    }
}

fn answer(outcome: Result<Vec<Result<Reservation, LedgerError>>, LedgerError>, replies: Vec<Reply>) {
    match outcome {
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

/// Allowances idle for [`IDLE`] handed back, behind the calls they served in the recorder's
/// queue (so those are drawn from the lease before what is left of it goes back).
async fn give_back_idle(instance: String, recorder: mpsc::Sender<Entry>, allowances: Arc<Mutex<Allowances>>) {
    let mut tick = tokio::time::interval(IDLE / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let idle_since = now_us() - i64::try_from(IDLE.as_micros()).unwrap_or(i64::MAX);
        let idle = allowances.lock().unwrap_or_else(PoisonError::into_inner).take_idle(idle_since);
        if !idle.is_empty() && recorder.send(Entry::GiveBack(instance.clone(), idle)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::tests::{call, ledger};

    #[tokio::test]
    async fn the_first_call_is_written_and_leases_the_next_ones_are_taken_in_memory() {
        let (l, _dir) = ledger().await;
        let (recorder, mut written) = mpsc::channel(16);
        let reserver = Reserver::spawn(l.clone(), "test".into(), recorder);
        let far = Claim::budget("ns/b".into(), 0, 1_000_000_000, false);
        let first = reserver.reserve(vec![far.clone()], &call(100)).await.unwrap();
        assert!(first.registered && !first.leased, "no allowance yet: the exact path");
        let second = reserver.reserve(vec![far.clone()], &call(100)).await.unwrap();
        assert!(second.leased && !second.registered, "taken from the allowance the first call leased");
        assert_eq!(second.spent, [("ns/b".to_owned(), 200)]);
        // An audited budget is never taken in memory.
        let audited = Claim { audit: true, ..far };
        assert!(!reserver.reserve(vec![audited], &call(100)).await.unwrap().leased);
        assert!(written.try_recv().is_err(), "nothing idle yet");
    }
}
