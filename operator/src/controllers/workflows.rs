//! `ApprovalWorkflow` status: `Ready` when its quorum can be reached (before and after
//! escalation), how many approvers and groups it names, and how many of its requests are still
//! pending (followed as requests come and go).

use super::{condition, upsert_condition};
use crate::context::Shared;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow, Phase};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(shared: Arc<Shared>) {
    let requests = Api::<ApprovalRequest>::all(shared.client.clone());
    super::lean::controller(Api::<ApprovalWorkflow>::all(shared.client.clone()), super::lean::config())
        .watches(requests, super::lean::config(), |ar: ApprovalRequest| {
            let ns = ar.namespace()?;
            Some(ObjectRef::<ApprovalWorkflow>::new(&ar.spec.workflow).within(&ns))
        })
        .run(reconcile, error_policy, shared)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<ApprovalWorkflow>, error: &Error, shared: Arc<Shared>) -> Action {
    shared.metrics.reconcile("approvalworkflow", false);
    tracing::warn!(%error, "workflow reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(workflow = %w.name_any(), namespace = w.namespace().unwrap_or_default()))]
async fn reconcile(w: Arc<ApprovalWorkflow>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = w.namespace().unwrap_or_default();
    let requests = Api::<ApprovalRequest>::namespaced(shared.client.clone(), &ns).list(&ListParams::default()).await?;
    let pending = requests
        .items
        .iter()
        .filter(|r| r.spec.workflow == w.name_any() && r.status.as_ref().and_then(|s| s.phase).unwrap_or_default() == Phase::Pending)
        .count();
    let r = tollgate_core::approval::readiness(&w.spec);
    let old = w.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = w.meta().generation;
    status.observed_generation = generation;
    status.pending = i32::try_from(pending).ok();
    status.approvers = i32::try_from(r.named).ok();
    status.approver_groups = i32::try_from(r.groups).ok();
    upsert_condition(&mut status.conditions, condition("Ready", r.ready, r.reason, &r.message, generation, Timestamp::now()));
    if status != old {
        Api::<ApprovalWorkflow>::namespaced(shared.client.clone(), &ns)
            .patch_status(&w.name_any(), &crate::ssa::write_params(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
    }
    shared.metrics.reconcile("approvalworkflow", true);
    Ok(Action::await_change())
}
