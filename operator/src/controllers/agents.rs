//! The `ManagedAgent` controller (DESIGN §3.6): the RBAC its sidecar needs (a RoleBinding owned by
//! the agent, and its service account among the subjects of the agents' ClusterRoleBinding, which
//! follows the set of agents, deletes included), `Ready` in its status, and its injected pods
//! (`Injected`, and how many run).

use super::lean::{Following, Listeners};
use super::{condition, upsert_condition};
use crate::context::Shared;
use crate::ssa;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, ListParams, PartialObjectMeta, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ManagedAgent, ManagedAgentStatus};
use tollgate_core::k8s::agent_rbac;
use tollgate_core::k8s::inject::AGENT_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The agents' one watch and cache: the controller, the cluster binding and the policies'
/// controllers (which count agents, and recount as they come, change and go) all read it.
pub struct Agents {
    store: (Store<ManagedAgent>, Writer<ManagedAgent>),
    listeners: Listeners<ManagedAgent>,
}

impl Default for Agents {
    fn default() -> Self {
        Self { store: reflector::store(), listeners: Listeners::default() }
    }
}

impl Agents {
    pub fn store(&self) -> Store<ManagedAgent> {
        self.store.0.clone()
    }

    pub fn follow(&mut self) -> Following<ManagedAgent> {
        self.listeners.follow()
    }
}

pub async fn run(shared: Arc<Shared>, agents: Agents) {
    let api = Api::<ManagedAgent>::all(shared.client.clone());
    let changed = Arc::new(tokio::sync::Notify::new());
    let controller = super::lean::controller_heard(api, super::lean::config(), agents.store, agents.listeners.with_notice(changed.clone()));
    let binding = {
        let (shared, agents) = (shared.clone(), controller.store());
        async move {
            loop {
                changed.notified().await;
                cluster_binding(&shared, &agents).await;
            }
        }
    };
    // An injected pod that comes, goes or starts running changes its agent's count.
    // Only its labels are read: a pod's metadata is all that is watched (its spec is large).
    let injected = Api::<PartialObjectMeta<Pod>>::all(shared.client.clone());
    let controller = controller
        .watches(injected, super::lean::config().labels(AGENT_LABEL), |pod: PartialObjectMeta<Pod>| {
            let agent = pod.labels().get(AGENT_LABEL).cloned().unwrap_or_default();
            Some(ObjectRef::<ManagedAgent>::new(&agent).within(&pod.namespace().unwrap_or_default()))
        })
        .run(reconcile, error_policy, shared)
        .for_each(|_| futures::future::ready(()));
    futures::join!(binding, controller);
}

/// Every agent's service account may read what is cluster-wide (ClusterToolPolicies, its
/// namespace's labels); an agent deleted leaves the subjects with the next event.
async fn cluster_binding(shared: &Shared, agents: &Store<ManagedAgent>) {
    let all = agents.state();
    let wanted = agent_rbac::cluster_binding(all.iter().map(|a| (a.metadata.namespace.as_deref().unwrap_or_default(), a.spec.service_account_name.as_str())));
    let api = Api::<ClusterRoleBinding>::all(shared.client.clone());
    match api.patch(agent_rbac::AGENTS_CLUSTER_BINDING, &ssa::params(), &ssa::body(&wanted)).await {
        Ok(_) => tracing::debug!(agents = all.len(), "agents' cluster role binding in step"),
        Err(e) => tracing::warn!(error = %e, "could not keep the agents' cluster role binding"),
    }
}

fn error_policy(_: Arc<ManagedAgent>, error: &Error, shared: Arc<Shared>) -> Action {
    shared.metrics.reconcile("managedagent", false);
    tracing::warn!(%error, "agent reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(agent = %a.name_any(), namespace = a.namespace().unwrap_or_default()))]
async fn reconcile(a: Arc<ManagedAgent>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = a.namespace().unwrap_or_default();
    let name = a.name_any();
    let sa = &a.spec.service_account_name;
    let wanted = agent_rbac::role_binding(&ns, &name, a.metadata.uid.as_deref().unwrap_or_default(), sa);
    let bindings = Api::<RoleBinding>::namespaced(shared.client.clone(), &ns);
    let bound = bindings.patch(wanted.metadata.name.as_deref().unwrap_or_default(), &ssa::params(), &ssa::body(&wanted)).await;
    let (ready, reason, message) = match &bound {
        Ok(_) => (true, "Bound", format!("service account {ns}/{sa} may watch the agent's policies and create its approval requests")),
        Err(e) => (false, "RBACFailed", format!("could not bind service account {ns}/{sa} to ClusterRole {}: {e}", agent_rbac::AGENT_ROLE)),
    };
    let old = a.status.clone().unwrap_or_default();
    let generation = a.meta().generation;
    let pods = Api::<Pod>::namespaced(shared.client.clone(), &ns).list(&ListParams::default().labels(&format!("{AGENT_LABEL}={name}"))).await?.items;
    let running = pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
    let (injected, why, said) = match pods.len() {
        0 => (false, "NoPods", "no pod of this agent has been injected yet".to_owned()),
        n => (true, "Injected", format!("{n} pods injected with the sidecar, {running} running")),
    };
    let credentials = match super::agent_keys::ensure(&shared.client, &a).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "could not mint the agent's gateway key");
            old.credentials.clone()
        }
    };
    let mut status = ManagedAgentStatus { observed_generation: generation, pods: i32::try_from(running).ok(), credentials, ..old.clone() };
    let now = Timestamp::now();
    super::upsert_condition(&mut status.conditions, condition("Ready", ready, reason, &message, generation, now));
    super::upsert_condition(&mut status.conditions, condition("Injected", injected, why, &said, generation, now));
    // Whether the app containers can act as the agent themselves (keepServiceAccountToken).
    let keep_token = a.spec.injection.as_ref().is_some_and(|i| i.keep_service_account_token);
    let (isolated, isolated_why, isolated_said) = tollgate_core::k8s::pod_guard::isolation(keep_token);
    upsert_condition(&mut status.conditions, condition("Isolated", isolated, isolated_why, isolated_said, generation, Timestamp::now()));
    if status != old {
        Api::<ManagedAgent>::namespaced(shared.client.clone(), &ns)
            .patch_status(&name, &crate::ssa::write_params(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
    }
    shared.metrics.reconcile("managedagent", bound.is_ok());
    bound?;
    Ok(Action::requeue(Duration::from_secs(600)))
}
