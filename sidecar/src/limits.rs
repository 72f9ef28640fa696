//! The buckets of the rate limits on tool calls (docs/design.md §3.1; the arithmetic is
//! `tollgate_core::policy::limits`). Each sidecar counts its own pod's calls: a limit of N per
//! minute allows an agent with R replicas up to R×N.
//!
//! The keys are partly the agent's choosing (a tool name under a `*` entry), so the table is
//! bounded: at its bound, buckets that are full again are forgotten (they hold nothing), and when
//! none is, a call that needs a new bucket is refused rather than uncounted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tollgate_core::policy::limits::{Applied, Bucket, Limit};
use tollgate_core::policy::{Action, DecidedBy, Decision, Shadow};

const MAX_BUCKETS: usize = 10_000;

pub struct Limiter {
    started: Instant,
    /// Each bucket with the limit it was last counted under (what tells when it is full).
    buckets: Mutex<HashMap<String, (Bucket, Limit)>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { started: Instant::now(), buckets: Mutex::default() }
    }
}

/// A call refused for a spent limit: what the agent reads, and in how many seconds to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub retry_after_secs: u64,
}

impl Limiter {
    /// Counts the call in its limits' buckets. A spent enforced limit turns the decision into a
    /// Deny (`DecidedBy::RateLimited`) and says when to retry; a spent audited one becomes the
    /// decision's shadow. A call is counted in all its buckets or in none.
    pub fn apply(&self, decision: &mut Decision, server: &str, tool: &str) -> Option<Refused> {
        if decision.limits.is_empty() && decision.audited_limits.is_empty() {
            return None;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let refused = take_all(&mut buckets, &decision.limits, server, tool, now);
        if let Some((applied, retry)) = &refused {
            let message = format!("rate limited: at most {} ({}, {}); retry after {retry} s", applied.limit.describe(), applied.policy, applied.rule);
            let decided_by = DecidedBy::RateLimited { policy: applied.policy.clone(), rule: applied.rule.clone() };
            *decision = Decision { action: Action::Deny, decided_by, message: Some(message.clone()), ..decision.clone() };
            decision.limits.clear();
            return Some(Refused { message, retry_after_secs: *retry });
        }
        if let Some((applied, retry)) = take_all(&mut buckets, &decision.audited_limits, server, tool, now)
            && decision.shadow.is_none()
        {
            let message = format!("would be rate limited: at most {} ({}, {}); retry after {retry} s", applied.limit.describe(), applied.policy, applied.rule);
            decision.shadow = Some(Box::new(Shadow {
                action: Action::Deny,
                decided_by: DecidedBy::RateLimited { policy: applied.policy, rule: applied.rule },
                message: Some(message),
            }));
        }
        None
    }
}

/// Takes a token from each limit's bucket, or none when one is spent (that one and the seconds
/// until it has a token again). A bucket that cannot be made (the table is full) counts as spent.
fn take_all(buckets: &mut HashMap<String, (Bucket, Limit)>, limits: &[Applied], server: &str, tool: &str, now: u64) -> Option<(Applied, u64)> {
    let keys: Vec<String> = limits.iter().map(|l| l.key(server, tool)).collect();
    for (applied, key) in limits.iter().zip(&keys) {
        if !buckets.contains_key(key) && !make_room(buckets, now) {
            return Some((applied.clone(), 1));
        }
        let (bucket, limit) = buckets.entry(key.clone()).or_insert_with(|| (Bucket::full(&applied.limit, now), applied.limit));
        // An edited limit applies from this call on, to what the bucket holds.
        *limit = applied.limit;
        if let Err(retry) = bucket.check(limit, now) {
            return Some((applied.clone(), retry));
        }
    }
    for key in &keys {
        if let Some((b, limit)) = buckets.get_mut(key) {
            b.take(limit, now);
        }
    }
    None
}

/// Room for one more bucket: at the bound, buckets full again under their own limit are
/// dropped (they hold nothing a fresh bucket would not).
fn make_room(buckets: &mut HashMap<String, (Bucket, Limit)>, now: u64) -> bool {
    if buckets.len() < MAX_BUCKETS {
        return true;
    }
    buckets.retain(|_, (b, limit)| !b.is_full(limit, now));
    buckets.len() < MAX_BUCKETS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_api::{RateLimit, RateLimitScope};
    use tollgate_core::policy::{PolicyId, PolicyKind};

    fn applied(rule: &str, calls: u32, per: RateLimitScope) -> Applied {
        let limit = Limit::compile(&RateLimit { calls, period: "1h".into(), burst: None, per: Some(per) }).unwrap();
        Applied { policy: PolicyId { kind: PolicyKind::ToolPolicy, namespace: Some("ns".into()), name: "p".into() }, rule: rule.into(), limit }
    }

    /// Over the bound, only buckets that are full under their own limit are forgotten: a flood
    /// of new tool names cannot reset a spent bucket of another limit.
    #[test]
    fn a_flood_of_new_keys_never_resets_a_spent_bucket() {
        let mut buckets = HashMap::new();
        let spent = [applied("r0", 1, RateLimitScope::Agent)];
        assert!(take_all(&mut buckets, &spent, "s", "t", 0).is_none());
        assert!(take_all(&mut buckets, &spent, "s", "t", 0).is_some(), "spent");
        let per_tool = [applied("r1", 5, RateLimitScope::Tool)];
        let mut refused = 0;
        for i in 0..(MAX_BUCKETS + 10) {
            refused += usize::from(take_all(&mut buckets, &per_tool, "s", &format!("tool-{i}"), 0).is_some());
        }
        assert!(refused >= 10, "past the bound with nothing to forget, new keys are refused");
        assert!(take_all(&mut buckets, &spent, "s", "t", 0).is_some(), "still spent");
        // An hour on, the per-tool buckets are full again: forgotten to make room.
        let hour = 3_600_000;
        assert!(take_all(&mut buckets, &per_tool, "s", "fresh", hour).is_none());
    }

    /// A call counts in all its buckets or none.
    #[test]
    fn a_refused_call_takes_from_no_bucket() {
        let mut buckets = HashMap::new();
        let (wide, narrow) = (applied("wide", 10, RateLimitScope::Agent), applied("narrow", 1, RateLimitScope::Tool));
        assert!(take_all(&mut buckets, &[wide.clone(), narrow.clone()], "s", "t", 0).is_none());
        let refused = take_all(&mut buckets, &[wide.clone(), narrow.clone()], "s", "t", 0);
        assert_eq!(refused.map(|(a, _)| a.rule), Some("narrow".to_owned()));
        for _ in 0..9 {
            assert!(take_all(&mut buckets, std::slice::from_ref(&wide), "s", "other", 0).is_none(), "the refused call took nothing from the wide bucket");
        }
        assert!(take_all(&mut buckets, &[wide], "s", "other", 0).is_some());
    }
}
