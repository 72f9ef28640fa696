//! The `ApprovalRequest` controller: runs the phase machine of `tollgate-core` and writes what it
//! returns to status, with an Event per transition and a requeue at the next deadline.

use crate::context::Shared;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PartialObjectMeta, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ApprovalRequest, ApprovalRequestStatus, ApprovalWorkflow, Phase};
use tollgate_core::approval::{self, Observed, Workflow, step};

use super::condition;

/// Set by a sidecar on the requests of its previous instance (DESIGN §3.2: never run blindly).
pub use tollgate_core::approval::request_authz::CANCEL_ANNOTATION;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request has no namespace")]
    NoNamespace,
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(shared: Arc<Shared>) {
    let requests: Api<ApprovalRequest> = Api::all(shared.client.clone());
    let controller = super::lean::controller(requests, super::lean::config());
    let store = controller.store();
    // A workflow's edit (quorum, approvers, timeout) or deletion is applied to its pending
    // requests at once, not at their next deadline. Its name is all the mapping reads.
    controller
        .watches(
            Api::<PartialObjectMeta<ApprovalWorkflow>>::all(shared.client.clone()),
            super::lean::config(),
            move |w: PartialObjectMeta<ApprovalWorkflow>| {
                let (ns, name) = (w.namespace(), w.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|r| r.namespace() == ns && r.spec.workflow == name && !r.status.as_ref().and_then(|s| s.phase).unwrap_or_default().is_final())
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, shared)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<ApprovalRequest>, error: &Error, shared: Arc<Shared>) -> Action {
    shared.metrics.reconcile("approvalrequest", false);
    tracing::warn!(%error, "approval reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[tracing::instrument(skip_all, fields(request = %ar.name_any(), namespace = ar.namespace().unwrap_or_default()))]
async fn reconcile(ar: Arc<ApprovalRequest>, shared: Arc<Shared>) -> Result<Action, Error> {
    // The held call's trace shows what the operator did about it (notifications, expiry).
    if let Some(tp) = ar.annotations().get(tollgate_core::approval::held_request::TRACEPARENT_ANNOTATION) {
        tollgate_runtime::otel::link_to(&tracing::Span::current(), tp);
    }
    let ns = ar.namespace().ok_or(Error::NoNamespace)?;
    let requests: Api<ApprovalRequest> = Api::namespaced(shared.client.clone(), &ns);
    let workflows: Api<ApprovalWorkflow> = Api::namespaced(shared.client.clone(), &ns);
    let old = ar.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    let workflow = workflows.get_opt(&ar.spec.workflow).await?;
    let cancel = ar.annotations().get(CANCEL_ANNOTATION).map(String::as_str);
    if let Some(end) = approval::ended_early(old.phase.unwrap_or_default(), &ar.spec.workflow, &ns, workflow.is_some(), cancel) {
        if let Some(end) = end {
            let mut status = old.clone();
            status.phase = Some(Phase::Cancelled);
            status.resolved_at = Some(Time(now));
            set_condition(&mut status, condition("Resolved", true, end.reason, &end.message, ar.meta().generation, now));
            write(&requests, &ar, &status).await?;
            let kind = if end.warning { EventType::Warning } else { EventType::Normal };
            publish(&shared, &ar, kind, end.reason, &end.message).await;
        }
        shared.metrics.reconcile("approvalrequest", true);
        return Ok(Action::await_change());
    }
    let Some(workflow) = workflow else { return Ok(Action::await_change()) };

    let rules = Workflow::from_spec(&ar.spec.workflow, &workflow.spec);
    let observed = Observed {
        requested_at: ar.spec.requested_at.0,
        phase: old.phase.unwrap_or_default(),
        decisions: &old.decisions,
        escalated_at: old.escalated_at.as_ref().map(|t| t.0),
        resolved_at: old.resolved_at.as_ref().map(|t| t.0),
    };
    let next = step(&rules, &observed, now);

    let mut status = old.clone();
    status.phase = Some(next.phase);
    status.approvals = Some(next.approvals_text());
    status.expires_at = Some(Time(next.expires_at));
    status.escalated_at = next.escalated_at.map(Time);
    status.resolved_at = next.resolved_at.map(Time);
    status.observed_generation = ar.meta().generation;
    let (resolved, reason, message) = approval::resolved_condition(&next);
    set_condition(&mut status, condition("Resolved", resolved, reason, &message, ar.meta().generation, now));
    if let Some(c) = notified(&old.notifications, ar.meta().generation, now) {
        set_condition(&mut status, c);
    }

    if status != old {
        write(&requests, &ar, &status).await?;
    }
    let mut told = (*ar).clone();
    told.status = Some(status);
    shared.notifier.poke(&told, &workflow);
    shared.ai_reader.poke(&told, &workflow);
    if let Some(t) = &next.transition {
        let (reason, note) = approval::transition_event(t);
        tracing::info!(reason, note, "approval request transition");
        publish(&shared, &ar, EventType::Normal, reason, &note).await;
    }
    shared.metrics.reconcile("approvalrequest", true);
    Ok(match next.requeue_at {
        // A little past the deadline, so the step at wake-up sees it passed.
        Some(at) => Action::requeue(duration_until(now, at) + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

fn duration_until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Writes the operator's fields of status. Decisions are left out: they belong to the people who
/// append them, and a merge patch of a list would replace it. The resourceVersion makes a write
/// based on a stale read fail (and requeue) instead of clobbering.
async fn write(api: &Api<ApprovalRequest>, ar: &ApprovalRequest, status: &ApprovalRequestStatus) -> Result<(), Error> {
    let mut body = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.remove("decisions");
        // The notifier's, written by it alone.
        map.remove("notifications");
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": ar.resource_version()},
        "status": body,
    });
    api.patch_status(&ar.name_any(), &crate::ssa::write_params(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// `Notified`: whether every target of the workflow was told (or is still being tried), from
/// the notifier's records; none while nothing was sent.
fn notified(records: &[tollgate_api::NotificationRecord], generation: Option<i64>, now: Timestamp) -> Option<Condition> {
    let (ok, reason, message) = tollgate_core::approval::notify::delivery(records)?;
    Some(condition("Notified", ok, reason, &message, generation, now))
}

pub(crate) fn set_condition(status: &mut ApprovalRequestStatus, c: Condition) {
    super::upsert_condition(&mut status.conditions, c);
}

async fn publish(shared: &Shared, ar: &ApprovalRequest, type_: EventType, reason: &str, note: &str) {
    crate::events::publish_event(&shared.client, &ar.object_ref(&()), type_, reason, note, "Reconcile").await;
}
