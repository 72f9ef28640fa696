#![allow(clippy::unwrap_used)]
use super::*;

fn budget(name: &str) -> Claim {
    Claim::budget(name.into(), 0, 1_000_000, false)
}

fn period(name: &str) -> Period {
    (name.into(), 0)
}

#[test]
fn leases_are_a_share_of_the_headroom_and_none_near_the_limit() {
    // Far from the limit: 256 calls' worth.
    assert_eq!(lease_size(1_000_000_000, 0, 100), Some(25_600));
    // A sixteenth of the headroom when that is less.
    assert_eq!(lease_size(1_000_000, 600_000, 100), Some(25_000));
    // Fewer than eight calls' worth: the exact path decides every call.
    assert_eq!(lease_size(1_000, 0, 20), None);
    assert_eq!(lease_size(1_000_000, 990_000, 100), None);
    assert_eq!(lease_size(1_000_000, 2_000_000, 100), None, "past the limit");
    assert_eq!(lease_size(i64::MAX, i64::MIN, i64::MAX), None, "no overflow");
}

#[test]
fn a_call_is_taken_from_every_allowance_or_from_none() {
    let mut a = Allowances::default();
    a.grant(period("ns/a"), 1_000_000, 1_000, 5_000, 0);
    // One claim has no allowance: nothing is taken.
    assert_eq!(a.take(&[budget("ns/a"), budget("ns/b")], 100, 1), None);
    a.grant(period("ns/b"), 1_000_000, 150, 9_000, 0);
    let taken = a.take(&[budget("ns/a"), budget("ns/b")], 100, 1).unwrap();
    assert_eq!(taken.spent, [("ns/a".to_owned(), 4_100), ("ns/b".to_owned(), 8_950)]);
    // ns/b has 50 left: a call of 100 is not covered, and takes nothing from ns/a either.
    assert_eq!(a.take(&[budget("ns/a"), budget("ns/b")], 100, 2), None);
    assert_eq!(a.take(&[budget("ns/a")], 900, 2).map(|t| t.spent), Some(vec![("ns/a".to_owned(), 5_000)]));
    assert_eq!(a.take(&[budget("ns/a")], 1, 2), None, "spent to the last micro-USD");
}

#[test]
fn only_enforced_spend_is_leased() {
    let mut a = Allowances::default();
    a.grant(period("ns/a"), 1_000_000, 1_000, 1_000, 0);
    a.grant(period("rate:requests:x"), 1_000_000, 1_000, 1_000, 0);
    let audited = Claim { audit: true, ..budget("ns/a") };
    let rate = Claim { amount: Some(1), unit: Unit::Requests, ..budget("rate:requests:x") };
    assert_eq!(a.take(&[audited], 1, 1), None);
    assert_eq!(a.take(&[rate], 1, 1), None);
    assert_eq!(a.take(&[], 1, 1), None, "no claims: nothing to lease");
}

#[test]
fn a_refill_is_asked_for_once_below_a_quarter() {
    let mut a = Allowances::default();
    a.grant(period("ns/a"), 1_000_000, 1_000, 1_000, 0);
    assert!(a.take(&[budget("ns/a")], 700, 1).unwrap().refill.is_empty());
    assert_eq!(a.take(&[budget("ns/a")], 100, 2).unwrap().refill, [period("ns/a")]);
    assert!(a.take(&[budget("ns/a")], 100, 3).unwrap().refill.is_empty(), "asked once");
    assert!(a.wants_lease(&period("ns/a"), 1_000_000), "a refill under way: a group may ask for it");
    a.grant(period("ns/a"), 1_000_000, 1_000, 3_000, 4);
    assert!(!a.wants_lease(&period("ns/a"), 1_000_000));
    assert_eq!(a.take(&[budget("ns/a")], 1_000, 5).unwrap().spent, [("ns/a".to_owned(), 2_900)]);
    a.refused(&period("ns/a"));
}

#[test]
fn idle_allowances_go_back_and_busy_ones_stay() {
    let mut a = Allowances::default();
    a.grant(period("ns/quiet"), 1_000_000, 1_000, 1_000, 10);
    a.grant(period("ns/busy"), 1_000_000, 1_000, 1_000, 10);
    a.take(&[budget("ns/busy")], 1, 50).unwrap();
    assert_eq!(a.take_idle(40), [(period("ns/quiet"), 1_000)], "with what was left of it");
    assert_eq!(a.take(&[budget("ns/quiet")], 1, 60), None, "gone from memory");
    assert!(a.take_idle(40).is_empty());
}

#[test]
fn a_budget_whose_limit_changed_is_decided_in_the_database_again() {
    let mut a = Allowances::default();
    a.grant(period("ns/a"), 1_000_000, 1_000, 1_000, 0);
    let lowered = Claim::budget("ns/a".into(), 0, 500, false);
    assert_eq!(a.take(&[lowered], 1, 1), None, "a lowered limit takes effect at once");
    assert!(a.wants_lease(&period("ns/a"), 500));
    assert!(a.take(&[budget("ns/a")], 1, 1).is_some());
}

#[test]
fn a_fresh_grant_is_not_idle_and_a_stopping_gateway_takes_nothing_in_memory() {
    let mut a = Allowances::default();
    a.grant(period("ns/a"), 1_000_000, 1_000, 1_000, 10);
    a.take(&[budget("ns/a")], 1_000, 20).unwrap();
    // Spent, then granted again much later: the grant counts as use.
    a.grant(period("ns/a"), 1_000_000, 1_000, 2_000, 5_000);
    assert!(a.take_idle(4_000).is_empty());
    a.close();
    assert_eq!(a.take(&[budget("ns/a")], 1, 5_001), None);
    assert!(!a.wants_lease(&period("ns/b"), 1_000_000), "closed: no lease is asked for");
    a.grant(period("ns/b"), 1_000_000, 1_000, 1_000, 5_002);
    assert!(a.take_idle(i64::MAX).is_empty(), "nothing granted into a closed gateway");
}
