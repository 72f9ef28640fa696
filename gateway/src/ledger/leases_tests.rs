#![allow(clippy::unwrap_used)]
use super::*;
use crate::ledger::tests::{call, ledger};
use crate::ledger::{Claim, INTERRUPTED, LeaseAsk, Ledger, Reservation, Row};
use crate::recorder::{Opened, Unit, settle_many};

const LIMIT: i64 = 1_000_000_000;

fn claim() -> Claim {
    Claim::budget("ns/b".into(), 0, LIMIT, false)
}

fn period() -> Period {
    ("ns/b".into(), 0)
}

/// What the period has spent and what gateways hold of it; the sum of its leases' rows.
async fn held(l: &Ledger) -> (i64, i64, i64) {
    let (spent, leased): (i64, i64) =
        sqlx::query_as("SELECT spent_micros, leased_micros FROM budget_spend WHERE budget = 'ns/b'").fetch_one(&l.pool).await.unwrap();
    let rows: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(amount_micros) AS BIGINT) FROM budget_leases WHERE budget = 'ns/b'").fetch_one(&l.pool).await.unwrap();
    (spent, leased, rows.unwrap_or(0))
}

async fn lease(l: &Ledger, instance: &str) -> Vec<crate::ledger::Granted> {
    let mut first = call(100);
    first.instance = instance.into();
    let (answers, granted) = l.reserve_and_lease(vec![(vec![claim()], first)], &[LeaseAsk { claim: claim(), amount: 100 }], instance).await.unwrap();
    assert!(answers[0].is_ok());
    granted
}

fn leased_call(amount: i64) -> (Opened, Reservation) {
    let c = call(amount);
    let r = Reservation { id: c.id, claims: vec![claim()], amount, leased: true, ..Reservation::default() };
    (Opened { call: c, drawn: vec![period()] }, r)
}

#[tokio::test]
async fn an_allowance_is_drawn_by_the_calls_it_served_and_what_is_left_goes_back() {
    let (l, _dir) = ledger().await;
    let granted = lease(&l, "test").await;
    assert_eq!(granted, [crate::ledger::Granted { period: period(), size: 25_600, held: 25_700 }], "256 calls' worth");
    assert_eq!(held(&l).await, (100, 25_600, 25_600));
    // Two calls served from it: one settled in the batch that opens it, one still running.
    let (quick, quick_r) = leased_call(100);
    let (slow, slow_r) = leased_call(100);
    settle_many(&l, &Unit { opened: vec![quick, slow], calls: vec![(quick_r, 60, Some(Row::default()))], ..Unit::default() }).await.unwrap();
    assert_eq!(held(&l).await, (100 + 60 + 100, 25_400, 25_400), "drawn: 200; the quick one settled at 60");
    settle_many(&l, &Unit { calls: vec![(slow_r, 70, Some(Row::default()))], ..Unit::default() }).await.unwrap();
    assert_eq!(held(&l).await, (230, 25_400, 25_400));
    assert_eq!(l.spent("ns/b", 0).await.unwrap(), 230, "a budget's spend leaves out what gateways hold");
    settle_many(&l, &Unit { given_back: vec![("test".into(), period(), 25_400)], ..Unit::default() }).await.unwrap();
    assert_eq!(held(&l).await, (230, 0, 0), "handed back: headroom again");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM budget_leases").fetch_one(&l.pool).await.unwrap();
    assert_eq!(rows, 0, "a lease taken off to nothing goes");
    // A call that drew from an allowance no longer held is charged all the same.
    let (late, _) = leased_call(5);
    settle_many(&l, &Unit { opened: vec![late], ..Unit::default() }).await.unwrap();
    assert_eq!(held(&l).await, (235, 0, 0));
}

#[tokio::test]
async fn near_its_limit_a_budget_leases_nothing() {
    let (l, _dir) = ledger().await;
    let near = Claim::budget("ns/b".into(), 0, 1_000, false);
    let (answers, granted) = l.reserve_and_lease(vec![(vec![near.clone()], call(20))], &[LeaseAsk { claim: near, amount: 20 }], "test").await.unwrap();
    assert!(answers[0].is_ok());
    assert!(granted.is_empty(), "1,000 micro-USD is fewer than 8 calls' worth of a sixteenth");
    assert_eq!(held(&l).await, (20, 0, 0));
}

#[tokio::test]
async fn a_stopped_gateway_hands_back_and_a_dead_ones_allowance_is_charged_once() {
    let (l, _dir) = ledger().await;
    l.heartbeat("stopping").await.unwrap();
    l.heartbeat("dead").await.unwrap();
    lease(&l, "stopping").await;
    lease(&l, "dead").await;
    assert_eq!(held(&l).await, (200, 51_200, 51_200));
    l.give_back_leases("stopping").await.unwrap();
    assert_eq!(held(&l).await, (200, 25_600, 25_600));
    let now = jiff::Timestamp::now().as_microsecond();
    assert_eq!(l.charge_dead_leases(now - 60_000_000).await.unwrap(), 0, "seen recently: not dead");
    l.forget("dead").await.unwrap();
    assert_eq!(l.charge_dead_leases(now).await.unwrap(), 1);
    assert_eq!(l.charge_dead_leases(now).await.unwrap(), 0, "charged once");
    assert_eq!(held(&l).await, (200 + 25_600, 0, 0), "charged whole: its last calls may be in it");
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT agent, cost_micros, status FROM ledger WHERE namespace = 'ns'").fetch_all(&l.pool).await.unwrap();
    assert_eq!(rows, [(String::new(), 25_600, i64::from(INTERRUPTED))], "a ledger row says so");
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE record LIKE '%allowance of budget ns/b%'").fetch_one(&l.pool).await.unwrap();
    assert_eq!(audit, 1);
}

#[tokio::test]
async fn a_lease_granted_again_while_the_last_one_goes_back_stays() {
    let (l, _dir) = ledger().await;
    lease(&l, "test").await;
    // Idle: memory takes it out with all 25,600 left, and the recorder has yet to write that
    // when a call leases again.
    lease(&l, "test").await;
    assert_eq!(held(&l).await, (200, 51_200, 51_200));
    settle_many(&l, &Unit { given_back: vec![("test".into(), period(), 25_600)], ..Unit::default() }).await.unwrap();
    assert_eq!(held(&l).await, (200, 25_600, 25_600), "only what was left of the first goes back");
}
