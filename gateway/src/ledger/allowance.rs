//! Allowances: spend a gateway leased from a budget period ahead of its calls, so that a call
//! far from its budget's limit is reserved in memory, with no statement on its answer's path
//! (docs/design.md §3.4). The lease is the atomic part: a group transaction moves it from the
//! period's headroom into `budget_spend.leased_micros` under the row's lock, so what all
//! replicas hold and have spent never passes the limit by more than the exact path allows.
//!
//! A lease is a sixteenth of the headroom left and at most [`CALLS_PER_LEASE`] calls of the
//! one that asked, and none is granted unless it covers [`MIN_CALLS_PER_LEASE`] calls: near the
//! limit every call takes the exact path again, so an allowance stranded on one replica strands
//! little, and the race to the last call is decided by the database alone.

use std::collections::HashMap;

use super::types::Period;
use super::types::{Claim, Unit};

/// Calls of the asking call's estimate one lease is for, at most.
pub const CALLS_PER_LEASE: i64 = 256;
/// Calls a lease must cover, or none is granted (the period is near its limit).
pub const MIN_CALLS_PER_LEASE: i64 = 8;
/// The share of the headroom one lease may take.
const HEADROOM_SHARE: i64 = 16;
/// Below this share of its grant an allowance asks for more, while it still serves calls.
const REFILL_BELOW: i64 = 4;

/// Whether a claim may be taken from an allowance: an enforced budget's spend. Rate windows,
/// audited budgets and claims of their own amount always take the exact path.
pub fn leasable(c: &Claim) -> bool {
    c.unit == Unit::Micros && !c.audit && c.amount.is_none()
}

/// What to lease for a period holding `held` (spent and leased, all replicas) of `hard_limit`,
/// for calls like one of `amount`; `None` near the limit.
pub fn lease_size(hard_limit: i64, held: i64, amount: i64) -> Option<i64> {
    let amount = amount.max(1);
    let headroom = hard_limit.saturating_sub(held);
    let size = (headroom / HEADROOM_SHARE).min(amount.saturating_mul(CALLS_PER_LEASE));
    (size >= amount.saturating_mul(MIN_CALLS_PER_LEASE)).then_some(size)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowance {
    left: i64,
    granted: i64,
    /// The hard limit it was leased under: a budget whose limit changed is decided in the
    /// database again until this allowance goes back (a lowered limit takes effect at once).
    limit: i64,
    /// What the period held, all replicas, when this gateway last leased (its lease included).
    held_at_grant: i64,
    used_us: i64,
    /// A refill was asked for and has not come back yet.
    refilling: bool,
}

/// This gateway's allowances, by budget period.
#[derive(Debug, Default)]
pub struct Allowances {
    by_period: HashMap<Period, Allowance>,
    /// The gateway is stopping: nothing more is taken in memory or granted into it.
    closed: bool,
}

/// A call reserved from allowances: what each budget held after it (as far as this gateway
/// knows: its own calls since its last lease, on top of what the period held then), and the
/// periods to ask a refill for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub spent: Vec<(String, i64)>,
    pub refill: Vec<Period>,
}

impl Allowances {
    /// `amount` taken from the allowance of every claim, or from none: every claim must be
    /// leasable and its allowance must cover the whole amount.
    pub fn take(&mut self, claims: &[Claim], amount: i64, now_us: i64) -> Option<Taken> {
        let key = |c: &Claim| (c.budget.clone(), c.period_start_us);
        let covered = claims.iter().all(|c| leasable(c) && self.by_period.get(&key(c)).is_some_and(|a| a.left >= amount && a.limit == c.hard_limit));
        if claims.is_empty() || !covered || self.closed {
            return None;
        }
        let mut taken = Taken { spent: Vec::with_capacity(claims.len()), refill: Vec::new() };
        for c in claims {
            let Some(a) = self.by_period.get_mut(&key(c)) else { continue };
            a.left -= amount;
            a.used_us = now_us;
            taken.spent.push((c.budget.clone(), a.held_at_grant - a.left));
            if !a.refilling && a.left < a.granted / REFILL_BELOW {
                a.refilling = true;
                taken.refill.push(key(c));
            }
        }
        Some(taken)
    }

    /// A lease of `size` granted for `period` under `limit`, which then held `held` (the lease
    /// included).
    pub fn grant(&mut self, period: Period, limit: i64, size: i64, held: i64, now_us: i64) {
        if self.closed {
            return;
        }
        let a = self.by_period.entry(period).or_insert(Allowance { left: 0, granted: 0, limit, held_at_grant: 0, used_us: now_us, refilling: false });
        // Fresh, so not handed back at the next look for idle ones.
        a.used_us = now_us;
        a.left += size;
        a.limit = limit;
        a.granted = a.left;
        a.held_at_grant = held;
        a.refilling = false;
    }

    /// A refill that was not granted (the period is near its limit, or the write failed).
    pub fn refused(&mut self, period: &Period) {
        if let Some(a) = self.by_period.get_mut(period) {
            a.refilling = false;
        }
    }

    /// Whether a lease of `period` under `limit` is worth asking for: not while the gateway holds
    /// one (leases are not stacked), nor once it is stopping.
    pub fn wants_lease(&self, period: &Period, limit: i64) -> bool {
        !self.closed && !self.by_period.get(period).is_some_and(|a| !a.refilling && a.left > 0 && a.limit == limit)
    }

    /// Allowances no call has used since `idle_since_us`, taken out with what was left of each:
    /// they go back to their periods, so a quiet gateway strands nothing (a period that ended
    /// included). What is left, not the whole lease, goes back: a lease granted again meanwhile
    /// stays.
    pub fn take_idle(&mut self, idle_since_us: i64) -> Vec<(Period, i64)> {
        let idle: Vec<Period> = self.by_period.iter().filter(|(_, a)| a.used_us < idle_since_us && !a.refilling).map(|(p, _)| p.clone()).collect();
        idle.into_iter().filter_map(|p| self.by_period.remove(&p).map(|a| (p, a.left))).collect()
    }

    /// The gateway is stopping: every allowance is forgotten here (its lease goes back whole,
    /// once the calls it served are written) and nothing more is taken or granted.
    pub fn close(&mut self) {
        self.closed = true;
        self.by_period.clear();
    }
}

#[cfg(test)]
#[path = "allowance_tests.rs"]
mod tests;
