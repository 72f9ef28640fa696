//! The injection webhook (DESIGN §3.6): on Pod CREATE in a labelled namespace, the pod's agent
//! is found among the namespace's `ManagedAgent`s and the pod answered with the patch that makes it
//! run as `tollgate_core::k8s::inject` decides. Anything that cannot be read fails closed.

use crate::context::Shared;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tollgate_api::{ManagedAgent, McpServer};
use tollgate_core::k8s::inject::{self, Candidate, PodReview};

#[tracing::instrument(skip_all, fields(namespace = req.namespace.as_deref().unwrap_or(""), pod = %req.name))]
pub async fn review_pod(req: &AdmissionRequest<DynamicObject>, shared: &Shared) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let Some(object) = req.object.as_ref() else { return response };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return response.deny(format!("unreadable pod: {e}")),
    };
    let ns = req.namespace.clone().unwrap_or_default();
    let lp = ListParams::default();
    // Both read at once, each a consistent list (a cache could miss an agent created just
    // before its pod, which would then run uninjected): the pod waits for the slower, not both.
    let (agents_api, servers_api) = (Api::<ManagedAgent>::namespaced(shared.client.clone(), &ns), Api::<McpServer>::namespaced(shared.client.clone(), &ns));
    let (agents, servers) = tokio::join!(agents_api.list(&lp), servers_api.list(&lp));
    let agents = match agents {
        Ok(l) => l.items,
        Err(e) => return response.deny(format!("cannot read the ManagedAgents of namespace {ns} to inject the pod: {e}")),
    };
    if agents.is_empty() {
        return response;
    }
    let servers = match servers {
        Ok(l) => l.items,
        Err(e) => return response.deny(format!("cannot read the MCPServers of namespace {ns} to inject the pod: {e}")),
    };
    let names: Vec<String> = agents.iter().map(|a| a.name_any()).collect();
    let candidates: Vec<Candidate<'_>> = agents
        .iter()
        .zip(&names)
        .map(|(a, name)| Candidate {
            name,
            spec: &a.spec,
            mounts: inject::mounts(&a.spec, servers.iter().map(|s| (s.metadata.name.as_deref().unwrap_or_default(), &s.spec))),
        })
        .collect();
    let pod_name = pod.metadata.name.clone().or(pod.metadata.generate_name.clone().map(|g| format!("{g}…"))).unwrap_or_default();
    // The Gateway that serves, with the CA its certificate is issued by.
    let target = shared.serving.target();
    let ca = shared.gateway_ca.pem(&shared.client, target.ca_secret.as_deref()).await;
    let settings = inject::Settings { gateway_url: target.url, gateway_ca: ca.as_ref().ok().cloned().flatten(), ..shared.injection.clone() };
    match inject::review(&pod, &candidates, &settings) {
        // Without it the agent could not verify the gateway it is sent to: refused, to be retried.
        PodReview::Inject { .. } if ca.is_err() => {
            let why = ca.err().unwrap_or_default();
            response.deny(format!("cannot inject the pod: the model gateway's CA is unavailable ({why})"))
        }
        PodReview::NotAnAgent => response,
        PodReview::Refused(why) => {
            tracing::info!(pod = pod_name, why, "pod refused");
            response.deny(why)
        }
        PodReview::OptedOut { agent } => {
            if !req.dry_run {
                skipped_event(shared, &agents, &agent, &pod_name).await;
            }
            response
        }
        PodReview::Inject { agent, pod: injected } => {
            let (before, after) = match (serde_json::to_value(&pod), serde_json::to_value(&injected)) {
                (Ok(b), Ok(a)) => (b, a),
                _ => return response.deny("the injected pod could not be rendered"),
            };
            tracing::info!(pod = pod_name, agent, "sidecar injected");
            match response.with_patch(json_patch::diff(&before, &after)) {
                Ok(r) => r,
                Err(e) => AdmissionResponse::from(req).deny(format!("the injection patch could not be written: {e}")),
            }
        }
    }
}

/// The skip is visible where people look for their agent: an Event on the `ManagedAgent`.
async fn skipped_event(shared: &Shared, agents: &[ManagedAgent], agent: &str, pod: &str) {
    let Some(object) = agents.iter().find(|a| a.name_any() == agent) else { return };
    let note = format!("pod {pod} opted out with {}=false: it runs without the Tollgate sidecar", inject::OPT_OUT_ANNOTATION);
    crate::events::publish_event(&shared.client, &object.object_ref(&()), EventType::Normal, "InjectionSkipped", &note, "Inject").await;
}

/// An update of a pod, or an ephemeral container added to it: refused when it would undo the
/// pod's injection (`tollgate_core::k8s::pod_guard::review_update`). Pure: both pods are in the review.
#[tracing::instrument(skip_all, fields(namespace = req.namespace.as_deref().unwrap_or(""), pod = %req.name, subresource = req.sub_resource.as_deref().unwrap_or(""), user = req.user_info.username.as_deref().unwrap_or("")))]
pub fn review_pod_update(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let read = |o: Option<&DynamicObject>| -> Result<Pod, String> {
        let o = o.ok_or("the review has no pod")?;
        serde_json::to_value(o).and_then(serde_json::from_value).map_err(|e| format!("unreadable pod: {e}"))
    };
    let (old, new) = match (read(req.old_object.as_ref()), read(req.object.as_ref())) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return response.deny(e),
    };
    match tollgate_core::k8s::pod_guard::review_update(&old, &new) {
        None => response,
        Some(why) => {
            tracing::info!(why, "pod update refused");
            response.deny(format!("pod {} is a Tollgate agent pod: {why}", req.name))
        }
    }
}
