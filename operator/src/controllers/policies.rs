//! Policy status: `Ready` (or `InvalidExpression` with the field path), the rule count, and how
//! many agents the policy governs. The webhook refuses bad policies at apply; this reports on
//! those that predate it or came in while it was down.

use super::condition;
use super::lean::Following;
use crate::context::Shared;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PartialObjectMeta, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ClusterToolPolicy, ManagedAgent, ToolPolicy, ToolPolicyStatus};
use tollgate_core::policy::{self, CompileError, CompiledPolicy};

/// Agents are watched, so a policy's count follows them; namespace labels (which cluster
/// policies select on) are not, and this recount catches up with them.
const RECOUNT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the agents' watch has stopped")]
    AgentsUnwatched,
    #[error("ManagedAgents not listed within {}s: may the operator list and watch managedagents.tollgate.dev (its ClusterRole)?", AGENTS_LISTED.as_secs())]
    AgentsNotListed,
}

/// How long a count waits for the agents' first listing. A watch refused forever (the
/// operator's RBAC broken) must be an error that says so, not reconciles that wait with it.
const AGENTS_LISTED: Duration = Duration::from_secs(30);

/// What policies count: the agents' cache, and its changes (one stream for each controller).
pub struct Counted {
    pub agents: Store<ManagedAgent>,
    pub namespaced: Following<ManagedAgent>,
    pub cluster: Following<ManagedAgent>,
}

struct Context {
    shared: Arc<Shared>,
    agents: Store<ManagedAgent>,
}

pub async fn run(shared: Arc<Shared>, counted: Counted) {
    let ctx = Arc::new(Context { shared: shared.clone(), agents: counted.agents });
    let namespaced = super::lean::controller(Api::<ToolPolicy>::all(shared.client.clone()), super::lean::config());
    let policies = namespaced.store();
    // An agent that comes, goes or changes its labels changes the count of its namespace's policies.
    let namespaced = namespaced
        .watches_stream(counted.namespaced, move |agent: PartialObjectMeta<ManagedAgent>| {
            let ns = agent.namespace();
            policies.state().into_iter().filter(|p| p.namespace() == ns).map(|p| ObjectRef::from_obj(&*p)).collect::<Vec<_>>()
        })
        .run(reconcile_namespaced, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let cluster = super::lean::controller(Api::<ClusterToolPolicy>::all(shared.client.clone()), super::lean::config());
    let policies = cluster.store();
    let cluster = cluster
        .watches_stream(counted.cluster, move |_: PartialObjectMeta<ManagedAgent>| {
            policies.state().into_iter().map(|p| ObjectRef::from_obj(&*p)).collect::<Vec<_>>()
        })
        .run(reconcile_cluster, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::join!(namespaced, cluster);
}

fn error_policy<K>(_: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.reconcile("toolpolicy", false);
    tracing::warn!(%error, "policy reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(policy = %p.name_any(), namespace = p.namespace().unwrap_or_default()))]
async fn reconcile_namespaced(p: Arc<ToolPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let shared = &ctx.shared;
    let ns = p.namespace().unwrap_or_default();
    let compiled = policy::compile_tool_policy(&ns, &p.name_any(), &p.spec);
    let agents = ctx.agents_in(Some(&ns)).await?;
    let mode = policy::enforcement_summary(p.spec.enforcement, &p.spec.tools);
    let status = status_for(&compiled, mode, &agents, &[], p.status.as_ref(), p.meta().generation);
    if p.status.as_ref() != Some(&status) {
        Api::<ToolPolicy>::namespaced(shared.client.clone(), &ns)
            .patch_status(&p.name_any(), &crate::ssa::write_params(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
    }
    shared.metrics.reconcile("toolpolicy", true);
    Ok(Action::requeue(RECOUNT))
}

#[tracing::instrument(skip_all, fields(policy = %p.name_any()))]
async fn reconcile_cluster(p: Arc<ClusterToolPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let shared = &ctx.shared;
    let compiled = policy::compile_cluster_tool_policy(&p.name_any(), &p.spec);
    let agents = ctx.agents_in(None).await?;
    let namespaces = Api::<Namespace>::all(shared.client.clone()).list(&ListParams::default()).await?;
    let mode = policy::enforcement_summary(p.spec.enforcement, &p.spec.tools);
    let status = status_for(&compiled, mode, &agents, &namespaces.items, p.status.as_ref(), p.meta().generation);
    if p.status.as_ref() != Some(&status) {
        Api::<ClusterToolPolicy>::all(shared.client.clone())
            .patch_status(&p.name_any(), &crate::ssa::write_params(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
    }
    shared.metrics.reconcile("clustertoolpolicy", true);
    Ok(Action::requeue(RECOUNT))
}

impl Context {
    /// The agents of namespace `ns` (all with `None`), from the cache once its first listing is
    /// done: a count from a cache still filling would be wrong and then corrected.
    async fn agents_in(&self, ns: Option<&str>) -> Result<Vec<Arc<ManagedAgent>>, Error> {
        agents_listed(&self.agents, ns, AGENTS_LISTED).await
    }
}

async fn agents_listed(agents: &Store<ManagedAgent>, ns: Option<&str>, wait: Duration) -> Result<Vec<Arc<ManagedAgent>>, Error> {
    match tokio::time::timeout(wait, agents.wait_until_ready()).await {
        Err(_) => return Err(Error::AgentsNotListed),
        Ok(Err(_)) => return Err(Error::AgentsUnwatched),
        Ok(Ok(())) => {}
    }
    Ok(match ns {
        Some(ns) => agents.state().into_iter().filter(|a| a.namespace().as_deref() == Some(ns)).collect(),
        None => agents.state(),
    })
}

fn status_for(
    compiled: &Result<CompiledPolicy, CompileError>,
    mode: tollgate_api::EnforcementSummary,
    agents: &[Arc<ManagedAgent>],
    namespaces: &[Namespace],
    old: Option<&ToolPolicyStatus>,
    generation: Option<i64>,
) -> ToolPolicyStatus {
    let (ready, reason, message, rules, matched) = match compiled {
        Ok(p) => {
            let matched = agents
                .iter()
                .filter(|a| {
                    let ns = a.namespace().unwrap_or_default();
                    let ns_labels = namespaces.iter().find(|n| n.name_any() == ns).map(|n| n.labels().clone()).unwrap_or_default();
                    p.applies_to(&agent_info(a, ns_labels))
                })
                .count();
            (true, "Compiled", format!("{} rules compiled", p.rule_count()), Some(p.rule_count()), Some(matched))
        }
        Err(e) => (false, e.reason(), e.to_string(), None, None),
    };
    let mut conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
    super::upsert_condition(&mut conditions, condition("Ready", ready, reason, &message, generation, Timestamp::now()));
    ToolPolicyStatus {
        observed_generation: generation,
        conditions,
        rules: rules.and_then(|n| i32::try_from(n).ok()),
        matched_agents: matched.and_then(|n| i32::try_from(n).ok()),
        enforcement: Some(mode),
        // The gateway's count, from the audit store: kept as it is.
        shadow: old.and_then(|s| s.shadow.clone()),
    }
}

/// The agent as the core sees it.
pub fn agent_info(a: &ManagedAgent, namespace_labels: std::collections::BTreeMap<String, String>) -> policy::AgentInfo {
    policy::AgentInfo::from_spec(&a.name_any(), &a.namespace().unwrap_or_default(), a.labels().clone(), &a.spec, namespace_labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    #[tokio::test]
    async fn a_count_waits_for_the_agents_first_listing_and_then_says_it_never_came() {
        let (store, mut writer) = reflector::store::<ManagedAgent>();
        let never = agents_listed(&store, None, Duration::from_millis(50)).await;
        assert!(matches!(never, Err(Error::AgentsNotListed)), "{never:?}");
        assert!(never.err().map(|e| e.to_string()).unwrap_or_default().contains("list and watch managedagents"));

        let agent = |name: &str, ns: &str| -> ManagedAgent {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tollgate.dev/v1alpha1", "kind": "ManagedAgent",
                "metadata": {"name": name, "namespace": ns}, "spec": {"selector": {}, "serviceAccountName": "sa"}
            }))
            .expect("an agent")
        };
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(agent("a", "n")));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(agent("b", "m")));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let listed = agents_listed(&store, Some("n"), Duration::from_millis(50)).await.map(|a| a.len());
        assert_eq!(listed.ok(), Some(1));

        drop(writer);
        let (store, writer) = reflector::store::<ManagedAgent>();
        drop(writer);
        assert!(matches!(agents_listed(&store, None, Duration::from_secs(5)).await, Err(Error::AgentsUnwatched)));
    }
}
