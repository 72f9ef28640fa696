//! Leader election on a `coordination.k8s.io` Lease (decisions in `tollgate_core::k8s::lease`): the
//! controllers run on the leader only, every replica serves the webhooks. A leader that cannot
//! renew in time stops leading by ending the process (its pod restarts and rejoins as a
//! follower), so two replicas never run the phase machine at once for long.

use anyhow::{Context, Result};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use tollgate_core::k8s::lease::{LeaseView, Next, next};

pub struct Election {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Election {
    fn lease(&self, base: Option<Lease>, now: Timestamp, transition: bool) -> Lease {
        let mut lease = base.unwrap_or_else(|| Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() }, spec: None });
        let mut spec = lease.spec.take().unwrap_or_default();
        if transition {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = i32::try_from(self.duration.as_secs()).ok();
        spec.renew_time = Some(MicroTime(now));
        lease.spec = Some(LeaseSpec { ..spec });
        lease
    }

    /// One round: `Ok(true)` when this replica holds the Lease afterwards.
    async fn round(&self) -> Result<bool> {
        let current = self.api.get_opt(&self.name).await.context("reading the Lease")?;
        let now = Timestamp::now();
        let view = current.as_ref().map(|l| {
            let spec = l.spec.clone().unwrap_or_default();
            (spec.holder_identity, spec.renew_time.map(|t| t.0), spec.lease_duration_seconds)
        });
        let decision = next(
            &self.identity,
            view.as_ref()
                .map(|(holder, renewed, secs)| LeaseView {
                    holder: holder.as_deref(),
                    renewed: *renewed,
                    duration: SignedDuration::from_secs(i64::from(secs.unwrap_or(15))),
                })
                .as_ref(),
            now,
        );
        let written = match decision {
            Next::Wait { .. } => return Ok(false),
            Next::Create => self.api.create(&PostParams::default(), &self.lease(None, now, true)).await,
            // `replace` carries the resourceVersion read above: of two replicas taking the same
            // expired Lease, the API server lets one win.
            Next::Renew => self.api.replace(&self.name, &PostParams::default(), &self.lease(current, now, false)).await,
            Next::TakeOver { from } => {
                tracing::info!(from = from.as_deref().unwrap_or("nobody"), "taking over the Lease");
                self.api.replace(&self.name, &PostParams::default(), &self.lease(current, now, true)).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e).context("writing the Lease"),
        }
    }

    /// Returns once this replica leads.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.round().await {
                Ok(true) => {
                    tracing::info!(identity = self.identity, lease = self.name, "became the leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "leader election round failed"),
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Renews while leading; returns (an error) once the Lease could not be renewed in time.
    pub async fn keep(&self) -> Result<()> {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.round().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => anyhow::bail!("another replica holds the Lease now"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "renewing the Lease failed"),
            }
            // Stop before the Lease expires, so no two replicas lead at once.
            if last.elapsed() > self.duration * 2 / 3 {
                anyhow::bail!("the Lease could not be renewed for {:?}", last.elapsed());
            }
        }
    }

    /// Gives the Lease up on shutdown, so the next leader need not wait for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
        {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
            }
            let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
        }
    }
}
