//! Budget reservations. A call far from its budgets' limits is taken from this gateway's
//! allowances in memory (`ledger/allowance.rs`), with nothing on its answer's path; the others
//! are group-committed: each transaction is a hand-off to the database's thread, so what queues
//! while one group is written goes in the next, in one transaction
//! ([`Ledger::reserve_and_lease`]), with the leases and refills asked for meanwhile. Allowances
//! no call used for a while go back to their budgets through the recorder, after the calls
//! they served. A reservation written for a call whose client went away before it was answered
//! is settled as not sent ([`Held`]), not left holding its estimate in the budgets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::ledger::allowance::{Allowances, leasable};
use crate::ledger::{Claim, InFlight, LeaseAsk, Ledger, LedgerError, Period, Reservation};
use crate::recorder::{Entry, Opened};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

type Reply = oneshot::Sender<Result<Held, LedgerError>>;

/// A reservation written to the database, on its way to its call: dropped before the call takes
/// it (its client went away while the group was written, so the answer finds no one or is
/// dropped unread), it is settled as a call not sent, its estimate given back and its
/// `inflight` row taken, in the recorder's next batch. Left alone it would hold the estimate in
/// shared budgets until this gateway stopped: an agent timing out on purpose near a limit could
/// hold other agents' share.
pub struct Held {
    reservation: Option<Reservation>,
    recorder: mpsc::Sender<Entry>,
    settling: TaskTracker,
}

impl Held {
    /// The reservation, now the call's to settle.
    pub fn take(mut self) -> Reservation {
        self.reservation.take().unwrap_or_default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else { return };
        let entry = Entry::Abandoned(Box::new(reservation));
        match self.recorder.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(entry)) => {
                // Outside a runtime (a process ending) its successor settles the `inflight` row.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                let recorder = self.recorder.clone();
                self.settling.spawn_on(async move { recorder.send(entry).await.is_ok() }, &runtime);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the ledger writer has stopped: a reservation whose call went away was not given back");
            }
        }
    }
}

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
    recorder: mpsc::Sender<Entry>,
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Reserver {
    /// The group writer, leasing for `instance`, and the task that hands idle allowances back
    /// through `recorder`; a reservation its call never took is given back through `recorder`,
    /// waiting for a place in its queue on `settling`.
    pub fn spawn(ledger: Ledger, instance: String, recorder: mpsc::Sender<Entry>, settling: TaskTracker) -> Reserver {
        let (asks, rx) = mpsc::channel::<Ask>(4 * MAX_GROUP);
        let allowances = Arc::new(Mutex::new(Allowances::default()));
        let to_recorder = recorder.clone();
        let hold = move |reservation| Held { reservation: Some(reservation), recorder: to_recorder.clone(), settling: settling.clone() };
        tokio::spawn(write_groups(ledger, instance.clone(), rx, allowances.clone(), hold));
        tokio::spawn(give_back_idle(instance, recorder.clone(), allowances.clone()));
        Reserver { asks, allowances, recorder }
    }

    /// The gateway is stopping: nothing more is taken in memory (every call goes to the
    /// database), so its leases can go back whole.
    pub fn close(&self) {
        self.allowances.lock().unwrap_or_else(PoisonError::into_inner).close();
    }

    /// `call.amount` taken from every budget of `claims`, or from none (see [`Ledger::reserve`]);
    /// a call not written in flight with its reservation is opened through the recorder.
    pub async fn reserve(&self, claims: Vec<Claim>, call: &InFlight) -> Result<Reservation, LedgerError> {
        // The call's place in the recorder's queue first: between taking an allowance in memory
        // and the `Opened` entry that draws it from its lease there is then nothing to wait for,
        // so a client going away cannot strand what its call took.
        let place = self.recorder.reserve().await.map_err(|_| stopped())?;
        let opened = |drawn| place.send(Entry::Opened(Box::new(Opened { call: call.clone(), drawn })));
        if claims.is_empty() {
            opened(Vec::new());
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
            opened(claims.iter().map(|c| (c.budget.clone(), c.period_start_us)).collect());
            return Ok(Reservation { id: call.id, claims, amount: call.amount, spent: taken.spent, leased: true, ..Reservation::default() });
        }
        drop(opened);
        let (reply, answer) = oneshot::channel();
        self.asks.send(Ask::Reserve(claims, call.clone(), reply)).await.map_err(|_| stopped())?;
        let reservation = answer.await.map_err(|_| stopped())??.take();
        // A call with claims is written in flight with its reservation; should one not be, the
        // recorder opens it, or its settlement would find nothing to take.
        if !reservation.registered {
            let opened = Opened { call: call.clone(), drawn: Vec::new() };
            self.recorder.send(Entry::Opened(Box::new(opened))).await.map_err(|_| stopped())?;
        }
        Ok(reservation)
    }
}

fn stopped() -> LedgerError {
    LedgerError::Unavailable("the ledger writer has stopped".into())
}

/// Groups of asks, each in one transaction; leases for the periods a reserved call could have
/// been served from had this gateway held an allowance.
async fn write_groups(ledger: Ledger, instance: String, mut rx: mpsc::Receiver<Ask>, allowances: Arc<Mutex<Allowances>>, hold: impl Fn(Reservation) -> Held) {
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
        answer(outcome, replies, &hold);
    }
}

/// Each call its answer; a reservation whose call went away is dropped here, given back.
fn answer(outcome: Result<Vec<Result<Reservation, LedgerError>>, LedgerError>, replies: Vec<Reply>, hold: &impl Fn(Reservation) -> Held) {
    match outcome {
        Ok(answers) => {
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = reply.send(answer.map(hold));
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
        let reserver = Reserver::spawn(l.clone(), "test".into(), recorder, TaskTracker::new());
        let far = Claim::budget("ns/b".into(), 0, 1_000_000_000, false);
        let first = reserver.reserve(vec![far.clone()], &call(100)).await.unwrap();
        assert!(first.registered && !first.leased, "no allowance yet: the exact path");
        let second = reserver.reserve(vec![far.clone()], &call(100)).await.unwrap();
        assert!(second.leased && !second.registered, "taken from the allowance the first call leased");
        assert_eq!(second.spent, [("ns/b".to_owned(), 200)]);
        // An audited budget is never taken in memory.
        let audited = Claim { audit: true, ..far };
        assert!(!reserver.reserve(vec![audited], &call(100)).await.unwrap().leased);
        // The leased call is opened through the recorder; nothing is idle yet to hand back.
        assert!(matches!(written.try_recv(), Ok(Entry::Opened(o)) if o.drawn == [("ns/b".to_owned(), 0)]));
        assert!(written.try_recv().is_err(), "nothing idle yet");
    }

    #[tokio::test]
    async fn a_reservation_whose_call_went_away_before_its_answer_is_given_back() {
        use futures::FutureExt;
        let (l, _dir) = ledger().await;
        let recorder = crate::recorder::spawn(l.clone());
        let reserver = Reserver::spawn(l.clone(), "test".into(), recorder.clone(), TaskTracker::new());
        // Audited: never taken in memory, so every call waits for the database.
        let claim = Claim { audit: true, ..Claim::budget("ns/b".into(), 0, 1_000_000_000, false) };
        // Polled once: its ask is queued, then its client goes away before it is answered.
        assert!(reserver.reserve(vec![claim.clone()], &call(100)).now_or_never().is_none());
        // Asks are answered in order: once this one is, the first was written and answered.
        let kept = reserver.reserve(vec![claim], &call(30)).await.unwrap();
        assert!(kept.registered);
        crate::recorder::flush(&recorder).await;
        assert_eq!(l.spent("ns/b", 0).await.unwrap(), 30, "only the call that took its reservation holds an estimate");
        let inflight: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inflight").fetch_one(&l.pool).await.unwrap();
        assert_eq!(inflight, 1, "the call that went away is not in flight");
        assert!(l.calls("ns", "coder").await.unwrap().is_empty() && l.calls("", "").await.unwrap().is_empty(), "nothing was sent: no ledger row");
    }

    #[tokio::test]
    async fn a_call_that_goes_away_while_waiting_for_the_recorder_takes_nothing_from_its_allowance() {
        use futures::FutureExt;
        let (l, _dir) = ledger().await;
        let (recorder, mut written) = mpsc::channel(1);
        let reserver = Reserver::spawn(l.clone(), "test".into(), recorder.clone(), TaskTracker::new());
        let far = Claim::budget("ns/b".into(), 0, 1_000_000_000, false);
        reserver.reserve(vec![far.clone()], &call(100)).await.unwrap();
        // The recorder's queue full: the next call waits for a place, and its client goes away.
        let (done, _) = oneshot::channel();
        recorder.try_send(Entry::Flush(done)).unwrap_or_else(|_| panic!("the queue has room"));
        assert!(reserver.reserve(vec![far.clone()], &call(100)).now_or_never().is_none());
        assert!(matches!(written.recv().await, Some(Entry::Flush(_))));
        let next = reserver.reserve(vec![far], &call(100)).await.unwrap();
        assert!(next.leased);
        assert_eq!(next.spent, [("ns/b".to_owned(), 200)], "the call that went away took nothing from the allowance");
        match written.recv().await {
            Some(Entry::Opened(o)) => assert_eq!(o.drawn, [("ns/b".to_owned(), 0)], "the call's opening draws from the lease"),
            _ => panic!("the leased call is opened through the recorder"),
        }
    }
}
