//! The `ApprovalRequest` objects of held calls: created by the sidecar, and marked for
//! cancellation (the operator then moves them to Cancelled) when their call can no longer run.

use crate::call::CallContext;
use crate::state::Sidecar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use tollgate_api::{ApprovalRequest, ApprovalRequestSpec, PolicyRef};
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

fn label_value(s: &str) -> String {
    let v: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn request_name(tool: &str) -> String {
    let base: String =
        tool.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(40).collect::<String>().trim_matches('-').to_owned();
    let base = if base.is_empty() { "call".to_owned() } else { base };
    format!("{base}-{:08x}", rand::random::<u32>())
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
    let mut labels = BTreeMap::new();
    labels.insert("tollgate.dev/agent".to_owned(), label_value(&sc.config.agent));
    labels.insert("tollgate.dev/server".to_owned(), label_value(&ctx.server.name));
    labels.insert("tollgate.dev/tool".to_owned(), label_value(ctx.tool));
    if !sc.config.pod.is_empty() {
        labels.insert("tollgate.dev/pod".to_owned(), label_value(&sc.config.pod));
    }
    let name = request_name(ctx.tool);
    let request = ApprovalRequest {
        metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels), ..Default::default() },
        spec: ApprovalRequestSpec {
            agent: sc.config.agent.clone(),
            service_account,
            pod: Some(sc.config.pod.clone()).filter(|p| !p.is_empty()),
            sidecar_instance: Some(sc.instance.clone()),
            server: ctx.server.name.clone(),
            tool: ctx.tool.to_owned(),
            arguments: Some(tollgate_core::audit::redact::redact(ctx.arguments)),
            arguments_digest: digest.to_owned(),
            justification: ctx.justification.map(|j| tollgate_core::audit::redact::redact_str(j).chars().take(4096).collect()),
            policy,
            rule,
            message: message.map(|m| m.chars().take(2048).collect()),
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
    let lp = ListParams::default().labels(&format!("tollgate.dev/pod={}", label_value(&sc.config.pod)));
    let list = match api.list(&lp).await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "could not list earlier approval requests"),
    };
    for ar in list.items {
        let pending = !ar.status.as_ref().and_then(|s| s.phase).unwrap_or_default().is_final();
        if pending && ar.spec.sidecar_instance.as_deref() != Some(sc.instance.as_str()) {
            cancel(sc, &ar.name_any(), "the sidecar that held this call restarted").await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_valid() {
        let n = request_name("Delete_Repository!!");
        assert!(n.starts_with("delete-repository-"), "{n}");
        assert!(n.len() <= 63);
        assert!(request_name("///").starts_with("call-"));
        assert_eq!(label_value("a/b c"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }
}
