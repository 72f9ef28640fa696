//! Calls of a gateway that died: each gateway process is an instance with a heartbeat in the
//! ledger; the calls in flight of an instance whose heartbeat is stale are settled by whichever
//! gateway sees them first, as interrupted, at their reserved estimate (what their budgets
//! already hold: a provider bills what it ran, and the actual usage died with the stream).
//! Each is settled once: deleting its `inflight` row decides who settles it, in the transaction
//! that writes its ledger row and its audit record.

use crate::audit_store::Source;
use crate::ledger::db::{Arg, Db, Sql};
use crate::ledger::{INTERRUPTED, LedgerError, Row, transaction};
use crate::state::GatewayState;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::model::spend;

impl crate::ledger::Ledger {
    /// Says `instance` is alive now.
    pub async fn heartbeat(&self, instance: &str) -> Result<(), LedgerError> {
        let (instance, now) = (instance.to_owned(), jiff::Timestamp::now().as_microsecond());
        let sql =
            Sql::written("INSERT INTO gateway_instances (instance, seen_us) VALUES ($1, $2) ON CONFLICT (instance) DO UPDATE SET seen_us = excluded.seen_us");
        transaction!(self, |db| db.execute(sql, &[Arg::Text(&instance), Arg::Int(now)])).await?;
        Ok(())
    }

    /// A stopped instance: its heartbeat goes, so what it left in flight is settled at once.
    pub async fn forget(&self, instance: &str) -> Result<(), LedgerError> {
        let instance = instance.to_owned();
        let sql = Sql::written("DELETE FROM gateway_instances WHERE instance = $1");
        transaction!(self, |db| db.execute(sql, &[Arg::Text(&instance)])).await?;
        Ok(())
    }

    /// Settles, as interrupted, the calls of every instance not seen since `cutoff_us`; how many.
    pub async fn reclaim(&self, cutoff_us: i64) -> Result<usize, LedgerError> {
        let rows: Vec<Abandoned> = sqlx::query_as(
            "SELECT id, started_us, namespace, agent, service_account, pod, provider, model, amount_micros FROM inflight \
             WHERE started_us < $1 AND instance NOT IN (SELECT instance FROM gateway_instances WHERE seen_us >= $1)",
        )
        .bind(cutoff_us)
        .fetch_all(&self.pool)
        .await?;
        let mut settled = 0;
        for abandoned in rows {
            if transaction!(self, |db| reclaim_in(db, abandoned)).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }
}

type Abandoned = (i64, i64, String, String, String, String, String, String, i64);

/// Settles one call left in flight, unless another gateway settled it first: whether this one did.
async fn reclaim_in(db: &mut impl Db, abandoned: Abandoned) -> Result<bool, LedgerError> {
    let (id, started_us, namespace, agent, service_account, pod, provider, model, amount) = abandoned;
    if db.execute(Sql::written("DELETE FROM inflight WHERE id = $1"), &[Arg::Int(id)]).await? != 1 {
        // Another gateway settled it first.
        return Ok(false);
    }
    let now = jiff::Timestamp::now().as_microsecond();
    let row = Row {
        time_us: now,
        namespace: namespace.clone(),
        agent: agent.clone(),
        pod: pod.clone(),
        provider: provider.clone(),
        model: model.clone(),
        usage: spend::Usage::default(),
        cost: amount,
        latency_ms: (now - started_us) / 1000,
        status: INTERRUPTED,
    };
    crate::ledger::record_in(db, &[&row]).await?;
    let record = json!({
        "kind": "model_call",
        "time": jiff::Timestamp::now().to_string(),
        "agent": {"namespace": namespace, "name": agent, "pod": pod, "serviceAccount": service_account},
        "tool": model,
        "provider": provider,
        "decision": "error",
        "status": INTERRUPTED,
        "reason": "interrupted: the gateway serving the call stopped before it was settled; charged its reserved estimate",
        "costUSD": spend::micros_to_usd(amount),
    });
    let record = crate::audit_store::Prepared::new(&Source { namespace, service_account, shipped: false }, record);
    crate::audit_store::append_in(db, std::iter::once(&record)).await?;
    Ok(true)
}

/// This instance's heartbeat, and the settling of dead instances' calls, until the gateway stops.
pub async fn run(gw: Arc<GatewayState>) {
    let lease = Duration::from_secs(gw.config.instance_lease_seconds.max(2));
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = gw.ledger.heartbeat(&gw.instance).await {
            tracing::warn!(error = %e, "could not write this gateway's heartbeat");
        }
        let cutoff = jiff::Timestamp::now().as_microsecond() - i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        match gw.ledger.reclaim(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(calls = n, "settled calls a stopped gateway left in flight, at their reserved estimate");
                for _ in 0..n {
                    gw.metrics.tool_call("error", "model_interrupted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not settle calls left in flight by stopped gateways"),
        }
        match gw.ledger.charge_dead_leases(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(allowances = n, "charged the budget allowances stopped gateways held, whole"),
            Err(e) => tracing::warn!(error = %e, "could not charge the budget allowances of stopped gateways"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::ledger::tests::{call, ledger};
    use crate::ledger::{Claim, INTERRUPTED, InFlight};

    /// A call of agent `ns/coder` served by `instance`.
    fn coder_call(instance: &str, amount: i64) -> InFlight {
        InFlight { instance: instance.into(), namespace: "ns".into(), agent: "coder".into(), ..call(amount) }
    }

    #[tokio::test]
    async fn a_dead_instances_calls_are_settled_once_at_their_estimate() {
        let (l, _dir) = ledger().await;
        let claim = Claim::budget("ns/b".into(), 0, 1000, false);
        let dead = coder_call("dead", 40);
        let mut alive = call(7);
        alive.instance = "alive".into();
        l.heartbeat("dead").await.unwrap();
        l.reserve(vec![claim.clone()], &dead).await.unwrap();
        l.heartbeat("alive").await.unwrap();
        l.reserve(vec![claim.clone()], &alive).await.unwrap();
        let now = jiff::Timestamp::now().as_microsecond();
        // Both seen recently: nothing is taken.
        assert_eq!(l.reclaim(now - 60_000_000).await.unwrap(), 0);
        let cutoff = jiff::Timestamp::now().as_microsecond();
        l.heartbeat("alive").await.unwrap();
        l.forget("dead").await.unwrap();
        assert_eq!(l.reclaim(cutoff).await.unwrap(), 1, "only the dead instance's call");
        assert_eq!(l.reclaim(cutoff).await.unwrap(), 0, "settled once");
        assert_eq!(l.spent("ns/b", 0).await.unwrap(), 47, "the budget keeps the estimate, not twice");
        let calls = l.calls("ns", "coder").await.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].3, calls[0].4), (40, i64::from(INTERRUPTED)));
    }

    #[tokio::test]
    async fn a_call_opened_and_settled_in_one_batch_leaves_its_row_and_nothing_in_flight() {
        let (l, _dir) = ledger().await;
        let (quick, slow) = (call(3), call(5));
        let settled = crate::ledger::Reservation { id: quick.id, amount: 3, ..Default::default() };
        let row = crate::ledger::Row { namespace: "ns".into(), agent: "coder".into(), cost: 2, status: 200, ..Default::default() };
        crate::recorder::settle_many(
            &l,
            &crate::recorder::Unit {
                opened: [quick, slow.clone()].into_iter().map(|call| crate::recorder::Opened { call, drawn: Vec::new() }).collect(),
                calls: vec![(settled, 2, Some(row))],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(l.calls("ns", "coder").await.unwrap().len(), 1);
        let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM inflight").fetch_all(&l.pool).await.unwrap();
        assert_eq!(ids, [(slow.id,)], "only the call still running is in flight");
    }

    #[tokio::test]
    async fn a_call_settled_as_interrupted_is_not_settled_again_by_a_gateway_that_was_only_slow() {
        let (l, _dir) = ledger().await;
        let claim = Claim::budget("ns/b".into(), 0, 1000, false);
        let slow = coder_call("slow", 40);
        let reservation = l.reserve(vec![claim], &slow).await.unwrap();
        // Its heartbeat went stale: another gateway settles the call at its estimate.
        assert_eq!(l.reclaim(jiff::Timestamp::now().as_microsecond() + 1).await.unwrap(), 1);
        // The slow gateway finishes the call after all.
        let row = crate::ledger::Row { namespace: "ns".into(), agent: "coder".into(), cost: 7, status: 200, ..Default::default() };
        crate::recorder::settle_many(&l, &crate::recorder::Unit { opened: Vec::new(), calls: vec![(reservation, 7, Some(row))], ..Default::default() })
            .await
            .unwrap();
        assert_eq!(l.calls("ns", "coder").await.unwrap().len(), 1, "one ledger row, not two");
        assert_eq!(l.spent("ns/b", 0).await.unwrap(), 40, "the budget holds what the ledger charged");
    }
}
