//! The `ApprovalRequest` objects of held calls: created by the sidecar, and marked for
//! cancellation (the operator then moves them to Cancelled) when their call can no longer run.

use crate::call::CallContext;
use crate::state::Sidecar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tollgate_api::{ApprovalRequest, ApprovalRequestSpec, PolicyRef};
use tollgate_core::approval::held_request;
use tollgate_core::policy::DecidedBy;

/// Set on a request whose call can no longer run; the operator then cancels it.
pub use tollgate_core::approval::request_authz::CANCEL_ANNOTATION;

/// Asks the operator to cancel request `name`, saying why.
pub(super) async fn cancel(sc: &Sidecar, name: &str, why: &str) {
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let patch = json!({"metadata": {"annotations": {CANCEL_ANNOTATION: why}}});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(request = name, why, "marked for cancellation"),
        Err(e) => tracing::warn!(request = name, error = %e, "could not mark for cancellation"),
    }
}

/// Creates the request; its name and UID.
pub(super) async fn create(ctx: &CallContext<'_>, workflow: &str, digest: &str) -> Result<(String, String), String> {
    let sc = ctx.sc;
    let snapshot = sc.snapshot.load();
    let service_account = snapshot.agent.as_ref().map(|a| a.service_account.clone()).unwrap_or_default();
    let (policy, rule) = match &ctx.decision.decided_by {
        DecidedBy::Rule { policy, rule, .. } => {
            (Some(PolicyRef { kind: policy.kind, name: policy.name.clone(), namespace: policy.namespace.clone() }), Some(rule.clone()))
        }
        _ => (None, None),
    };
    let message = ctx.decision.error.clone().map(|e| format!("condition failed (held for safety): {e}")).or(ctx.decision.message.clone());
    let labels = held_request::labels(&sc.config.agent, &ctx.server.name, ctx.tool, &sc.config.pod);
    let name = held_request::request_name(ctx.tool, rand::random::<u32>());
    let request = ApprovalRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            annotations: tollgate_runtime::otel::traceparent(&tracing::Span::current())
                .map(|t| [(held_request::TRACEPARENT_ANNOTATION.to_owned(), t)].into_iter().collect()),
            ..Default::default()
        },
        spec: ApprovalRequestSpec {
            agent: sc.config.agent.clone(),
            service_account,
            pod: Some(sc.config.pod.clone()).filter(|p| !p.is_empty()),
            sidecar_instance: Some(sc.instance.clone()),
            server: ctx.server.name.clone(),
            tool: ctx.tool.to_owned(),
            arguments: Some(tollgate_core::audit::redact::redact(&ctx.arguments.to_value())),
            arguments_digest: digest.to_owned(),
            justification: ctx.justification.map(|j| held_request::bounded(&tollgate_core::audit::redact::redact_str(j), held_request::MAX_JUSTIFICATION)),
            policy,
            rule,
            message: message.map(|m| held_request::bounded(&m, held_request::MAX_MESSAGE)),
            workflow: workflow.to_owned(),
            requested_at: Time(jiff::Timestamp::now()),
        },
        status: None,
    };
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let created = api.create(&PostParams::default(), &request).await.map_err(|e| e.to_string())?;
    let uid = created.metadata.uid.ok_or("the API server returned the request without a UID")?;
    Ok((name, uid))
}

/// Pending requests of an earlier instance of this sidecar can never run (their calls were in
/// its memory); mark them so the operator cancels them.
pub async fn cancel_orphans(sc: &Sidecar) {
    if sc.config.pod.is_empty() {
        return;
    }
    let api: Api<ApprovalRequest> = Api::namespaced(sc.client.clone(), &sc.config.namespace);
    let lp = ListParams::default().labels(&format!("{}={}", held_request::POD_LABEL, held_request::label_value(&sc.config.pod)));
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "could not list earlier approval requests"),
    };
    for ar in list.items {
        if held_request::orphaned(&ar, &sc.instance) {
            cancel(sc, &ar.name_any(), "the sidecar that held this call restarted").await;
        }
    }
}
