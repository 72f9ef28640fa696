//! Leader election on a `coordination.k8s.io` Lease, as a decision: given the Lease as read, what
//! this replica does next. The controllers run on the leader only; every replica serves the
//! webhooks. Writes go through the API server's optimistic concurrency (`resourceVersion`), so
//! two replicas that both decide to take an expired Lease cannot both win.

use jiff::{SignedDuration, Timestamp};

/// The Lease's fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView<'a> {
    pub holder: Option<&'a str>,
    pub renewed: Option<Timestamp>,
    pub duration: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// No Lease yet: create it, holding it.
    Create,
    /// Ours: renew it (write `renewTime`).
    Renew,
    /// Nobody's, or its holder stopped renewing: take it over.
    TakeOver { from: Option<String> },
    /// Someone else's and alive: look again at `until` (when it would expire).
    Wait { until: Timestamp },
}

pub fn next(me: &str, lease: Option<&LeaseView<'_>>, now: Timestamp) -> Next {
    let Some(lease) = lease else { return Next::Create };
    match (lease.holder.filter(|h| !h.is_empty()), lease.renewed) {
        (Some(h), _) if h == me => Next::Renew,
        (Some(h), Some(renewed)) => {
            let until = renewed.checked_add(lease.duration).unwrap_or(Timestamp::MAX);
            if now < until { Next::Wait { until } } else { Next::TakeOver { from: Some(h.to_owned()) } }
        }
        (holder, _) => Next::TakeOver { from: holder.map(str::to_owned) },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn who_leads() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let now = t("2026-12-01T10:00:00Z");
        let d = SignedDuration::from_secs(15);
        let lease = |holder: Option<&'static str>, renewed: Option<&str>| LeaseView { holder, renewed: renewed.map(t), duration: d };
        assert_eq!(next("a", None, now), Next::Create);
        assert_eq!(next("a", Some(&lease(Some("a"), Some("2026-12-01T09:00:00Z"))), now), Next::Renew);
        assert_eq!(next("a", Some(&lease(Some("b"), Some("2026-12-01T09:59:50Z"))), now), Next::Wait { until: t("2026-12-01T10:00:05Z") });
        assert_eq!(next("a", Some(&lease(Some("b"), Some("2026-12-01T09:59:45Z"))), now), Next::TakeOver { from: Some("b".into()) });
        assert_eq!(next("a", Some(&lease(None, None)), now), Next::TakeOver { from: None });
        assert_eq!(next("a", Some(&lease(Some(""), Some("2026-12-01T09:59:59Z"))), now), Next::TakeOver { from: None });
        assert_eq!(next("a", Some(&lease(Some("b"), None)), now), Next::TakeOver { from: Some("b".into()) });
    }
}
