//! Rate limits on tool calls (docs/design.md §3.1): a rule may cap the calls it matches, per pod
//! (each sidecar counts its own), as a token bucket. The arithmetic is here, pure; the buckets
//! live in the sidecar (`sidecar/src/limits.rs`).

use super::id::PolicyId;
use tollgate_api::{RateLimit, RateLimitScope};

/// A rule's limit, compiled: `calls` per `period_secs` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub calls: u32,
    pub period_secs: u64,
    pub burst: u32,
    pub per: RateLimitScope,
}

impl Limit {
    /// The limit as written; an unreadable `period` is the field's error message.
    pub fn compile(l: &RateLimit) -> Result<Limit, String> {
        let period_secs = parse_period(&l.period)?;
        Ok(Limit { calls: l.calls.max(1), period_secs, burst: l.burst.unwrap_or(l.calls).max(1), per: l.per.unwrap_or(RateLimitScope::Tool) })
    }

    fn per_second(&self) -> f64 {
        f64::from(self.calls) / self.period_secs as f64
    }

    /// As people write it: `5 calls per 1m (burst 10) for each tool`.
    pub fn describe(&self) -> String {
        let per = match self.per {
            RateLimitScope::Agent => "for the agent's pod",
            RateLimitScope::Server => "for each server",
            RateLimitScope::Tool => "for each tool",
        };
        format!("{} calls per {}s (burst {}) {per}", self.calls, self.period_secs, self.burst)
    }
}

/// `30s`, `5m`, `1h`: a whole number of seconds, minutes or hours, at most a day.
fn parse_period(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a period such as 30s, 5m or 1h (at most 24h)");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(bad()),
    };
    if secs == 0 || secs > 86_400 { Err(bad()) } else { Ok(secs) }
}

/// A limit a decision is subject to, and whose rule it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub policy: PolicyId,
    pub rule: String,
    pub limit: Limit,
}

impl Applied {
    /// The bucket a call counts in: this rule's, for the server, the tool or neither. The tool's
    /// name is the agent's to choose and unbounded: past [`MAX_KEY_NAME`] it is keyed by its
    /// digest, so ten thousand buckets stay small whatever the names.
    pub fn key(&self, server: &str, tool: &str) -> String {
        let what = match self.limit.per {
            RateLimitScope::Agent => String::new(),
            RateLimitScope::Server => server.to_owned(),
            RateLimitScope::Tool => format!("{server}/{tool}"),
        };
        let what = if what.len() > MAX_KEY_NAME {
            use sha2::Digest;
            crate::sha256_text::sha256_text(&sha2::Sha256::digest(what.as_bytes()))
        } else {
            what
        };
        format!("{}|{}|{what}", self.policy, self.rule)
    }
}

/// The longest server/tool name a bucket key holds as it is.
pub const MAX_KEY_NAME: usize = 256;

/// A token bucket: tokens left as of `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    /// A bucket that is full at `now_ms`.
    pub fn full(limit: &Limit, now_ms: u64) -> Bucket {
        Bucket { tokens: f64::from(limit.burst), at_ms: now_ms }
    }

    fn refilled(&self, limit: &Limit, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.tokens + elapsed * limit.per_second()).min(f64::from(limit.burst))
    }

    /// Whether a call may take a token at `now_ms`; if not, the whole seconds until one is back.
    pub fn check(&self, limit: &Limit, now_ms: u64) -> Result<(), u64> {
        let tokens = self.refilled(limit, now_ms);
        if tokens >= 1.0 { Ok(()) } else { Err(((1.0 - tokens) / limit.per_second()).ceil().max(1.0) as u64) }
    }

    /// Takes a token (callers [`Bucket::check`] first; a bucket never goes below empty).
    pub fn take(&mut self, limit: &Limit, now_ms: u64) {
        self.tokens = (self.refilled(limit, now_ms) - 1.0).max(0.0);
        self.at_ms = now_ms;
    }

    /// Full again: it holds nothing worth keeping.
    pub fn is_full(&self, limit: &Limit, now_ms: u64) -> bool {
        self.refilled(limit, now_ms) >= f64::from(limit.burst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limit(calls: u32, period: &str, burst: Option<u32>) -> Limit {
        Limit::compile(&RateLimit { calls, period: period.into(), burst, per: None }).unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = limit(60, "1m", Some(3));
        let mut b = Bucket::full(&l, 0);
        for _ in 0..3 {
            assert_eq!(b.check(&l, 0), Ok(()));
            b.take(&l, 0);
        }
        assert_eq!(b.check(&l, 0), Err(1), "one a second");
        assert_eq!(b.check(&l, 999), Err(1));
        assert_eq!(b.check(&l, 1000), Ok(()));
        b.take(&l, 1000);
        assert!(!b.is_full(&l, 2000));
        assert!(b.is_full(&l, 4000));
        let slow = limit(2, "1h", None);
        let mut b = Bucket::full(&slow, 0);
        b.take(&slow, 0);
        b.take(&slow, 0);
        assert_eq!(b.check(&slow, 0), Err(1800), "says when to retry");
    }

    #[test]
    fn a_long_tool_name_is_keyed_by_its_digest() {
        let applied = |per| Applied {
            policy: PolicyId { kind: tollgate_api::PolicyKind::ToolPolicy, namespace: Some("ns".into()), name: "p".into() },
            rule: "spec.tools[0].rules[0]".into(),
            limit: Limit::compile(&RateLimit { calls: 1, period: "1m".into(), burst: None, per: Some(per) }).unwrap(),
        };
        let long = "x".repeat(1 << 20);
        let key = applied(RateLimitScope::Tool).key("s", &long);
        assert!(key.len() < 200 && key.ends_with(&format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("s/{long}"))))), "{key}");
        assert_ne!(key, applied(RateLimitScope::Tool).key("s", &format!("{long}y")), "other names, other buckets");
        assert!(applied(RateLimitScope::Tool).key("s", "echo").ends_with("|s/echo"));
        assert!(applied(RateLimitScope::Agent).key("s", &long).ends_with('|'));
    }

    #[test]
    fn periods_are_read_strictly() {
        assert_eq!(parse_period("30s"), Ok(30));
        assert_eq!(parse_period("5m"), Ok(300));
        assert_eq!(parse_period("24h"), Ok(86_400));
        for bad in ["", "s", "0s", "1d", "25h", "-1m", "1.5m", "m5", "99999999999999999999s"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
