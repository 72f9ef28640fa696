//! What every call is decided with: the agents (by the hash of their key), the model providers
//! and the budgets of every namespace, rebuilt from watches on every change and swapped at once,
//! so a suspended or deleted agent's key stops working with the next event (well within 2 s).

use anyhow::Result;
use arc_swap::ArcSwap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tollgate_api::{Budget, BudgetSpec, BudgetStatus, ManagedAgent, ManagedAgentSpec, ModelProvider, ModelProviderSpec};
use tollgate_runtime::watch::reflect;

#[derive(Debug, Clone)]
pub struct Agent {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ManagedAgentSpec,
    /// The agent's status conditions as last seen, so the gateway writes its own only when they
    /// differ from what the object holds (another writer may have replaced them).
    pub conditions: Vec<tollgate_api::Condition>,
    /// The `spendUSD` the object holds, for the same reason.
    pub spend_usd: Option<f64>,
    /// The object's `resourceVersion`: the same one is the same object, taken over from the
    /// last index rather than copied again.
    pub version: Option<String>,
}

/// Each part is shared with the last index when its kind of object did not change: a budget's
/// status write rebuilds the budgets, not 500 agents.
#[derive(Debug, Default)]
pub struct Index {
    /// False until every watch has listed once: until then every call is refused.
    pub loaded: bool,
    /// By `sha256:` of the agent's key, as its status records it.
    pub agents: Arc<HashMap<String, Arc<Agent>>>,
    /// Per namespace, by name (the order `resolve` prefers).
    pub providers: Arc<HashMap<String, Vec<(String, ModelProviderSpec)>>>,
    pub budgets: Arc<HashMap<String, Vec<(String, BudgetSpec)>>>,
    /// Each budget's status as the object holds it, by `namespace/name`: spend in status is
    /// written when it differs from this, so a replica's write from an older read is put right.
    pub budget_status: Arc<HashMap<String, BudgetStatus>>,
}

/// Which kinds of object changed since the last index was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub agents: bool,
    pub providers: bool,
    pub budgets: bool,
}

impl Changed {
    pub const ALL: Changed = Changed { agents: true, providers: true, budgets: true };
    pub const NONE: Changed = Changed { agents: false, providers: false, budgets: false };
}

pub struct Stores {
    pub agents: Store<ManagedAgent>,
    pub providers: Store<ModelProvider>,
    pub budgets: Store<Budget>,
}

/// The index of what `s` holds now. Kinds that did not change are shared with `previous`; an
/// agent whose object is unchanged keeps its entry (every status write by the gateway or
/// operator rebuilds the index, and copying 500 agents' specs and conditions for each was 1.3
/// million instructions a rebuild).
pub fn build(s: &Stores, previous: &Index, changed: Changed) -> Index {
    let fresh = !previous.loaded;
    let (budgets, budget_status) = if changed.budgets || fresh {
        let (b, st) = budgets_of(s);
        (Arc::new(b), Arc::new(st))
    } else {
        (previous.budgets.clone(), previous.budget_status.clone())
    };
    Index {
        loaded: true,
        agents: if changed.agents || fresh { Arc::new(agents_of(s, previous)) } else { previous.agents.clone() },
        providers: if changed.providers || fresh { Arc::new(providers_of(s)) } else { previous.providers.clone() },
        budgets,
        budget_status,
    }
}

fn agents_of(s: &Stores, previous: &Index) -> HashMap<String, Arc<Agent>> {
    let state = s.agents.state();
    let mut agents = HashMap::with_capacity(state.len());
    for a in state {
        let Some(hash) = a.status.as_ref().and_then(|st| st.credentials.as_ref()).map(|c| &c.key_hash) else { continue };
        let agent = match previous.agents.get(hash) {
            Some(old) if unchanged(old, &a) => old.clone(),
            _ => Arc::new(agent_of(&a)),
        };
        agents.insert(hash.clone(), agent);
    }
    agents
}

fn providers_of(s: &Stores) -> HashMap<String, Vec<(String, ModelProviderSpec)>> {
    by_namespace(s.providers.state().iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any(), p.spec.clone())))
}

type Budgets = (HashMap<String, Vec<(String, BudgetSpec)>>, HashMap<String, BudgetStatus>);

fn budgets_of(s: &Stores) -> Budgets {
    let state = s.budgets.state();
    let status = state.iter().filter_map(|b| Some((format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any()), b.status.clone()?))).collect();
    (by_namespace(state.iter().map(|b| (b.namespace().unwrap_or_default(), b.name_any(), b.spec.clone()))), status)
}

/// `(namespace, name, spec)` grouped by namespace, each group by name (the order `resolve`
/// prefers).
fn by_namespace<S>(objects: impl Iterator<Item = (String, String, S)>) -> HashMap<String, Vec<(String, S)>> {
    let mut out: HashMap<String, Vec<(String, S)>> = HashMap::new();
    for (ns, name, spec) in objects {
        out.entry(ns).or_default().push((name, spec));
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// Whether `old` was made from this very object: one `resourceVersion` is one state of it.
fn unchanged(old: &Agent, a: &ManagedAgent) -> bool {
    let m = &a.metadata;
    old.version.is_some()
        && old.version == m.resource_version
        && old.namespace == m.namespace.as_deref().unwrap_or_default()
        && Some(old.name.as_str()) == m.name.as_deref()
}

fn agent_of(a: &ManagedAgent) -> Agent {
    Agent {
        namespace: a.namespace().unwrap_or_default(),
        name: a.name_any(),
        labels: a.labels().clone(),
        spec: a.spec.clone(),
        conditions: a.status.as_ref().map(|st| st.conditions.clone()).unwrap_or_default(),
        spend_usd: a.status.as_ref().and_then(|st| st.spend_usd),
        version: a.metadata.resource_version.clone(),
    }
}

/// Keeps `target` current; returns only if a watch ends.
pub async fn watch(client: kube::Client, target: Arc<ArcSwap<Index>>, loaded: tollgate_runtime::admin::Readiness) -> Result<()> {
    let channel = || tokio::sync::mpsc::channel::<()>(64);
    let ((agents_tx, mut agents_rx), (providers_tx, mut providers_rx), (budgets_tx, mut budgets_rx)) = (channel(), channel(), channel());
    let all = watcher::Config::default;
    let stores = Stores {
        agents: reflect(Api::<ManagedAgent>::all(client.clone()), all(), &agents_tx),
        providers: reflect(Api::<ModelProvider>::all(client.clone()), all(), &providers_tx),
        budgets: reflect(Api::<Budget>::all(client.clone()), all(), &budgets_tx),
    };
    drop((agents_tx, providers_tx, budgets_tx));
    for (name, wait) in [
        ("ManagedAgent", stores.agents.wait_until_ready().await),
        ("ModelProvider", stores.providers.wait_until_ready().await),
        ("Budget", stores.budgets.wait_until_ready().await),
    ] {
        wait.map_err(|e| anyhow::anyhow!("watching {name}: {e}"))?;
    }
    let mut changed = Changed::ALL;
    loop {
        let index = build(&stores, &target.load(), changed);
        tracing::debug!(agents = index.agents.len(), "index swapped");
        target.store(Arc::new(index));
        loaded.set_ready();
        // The first change wakes the loop; every change that came with it is taken too.
        let mut next = Changed::NONE;
        let woke = tokio::select! {
            e = agents_rx.recv() => e.map(|()| next.agents = true),
            e = providers_rx.recv() => e.map(|()| next.providers = true),
            e = budgets_rx.recv() => e.map(|()| next.budgets = true),
        };
        if woke.is_none() {
            return Ok(());
        }
        next.agents |= drained(&mut agents_rx);
        next.providers |= drained(&mut providers_rx);
        next.budgets |= drained(&mut budgets_rx);
        changed = next;
    }
}

/// Whether `rx` held a change (each one taken).
fn drained(rx: &mut tokio::sync::mpsc::Receiver<()>) -> bool {
    let mut any = false;
    while rx.try_recv().is_ok() {
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn agent(name: &str, version: &str, suspended: bool) -> ManagedAgent {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "ManagedAgent",
            "metadata": {"name": name, "namespace": "team", "resourceVersion": version},
            "spec": {"selector": {}, "serviceAccountName": name, "suspended": suspended},
            "status": {"credentials": {"secretName": name, "keyPrefix": "tg_", "keyHash": format!("sha256:{name}")}}
        }))
        .unwrap_or_else(|e| panic!("an agent: {e}"))
    }

    fn stores(agents: &[ManagedAgent]) -> Stores {
        let (store, mut writer) = reflector::store::<ManagedAgent>();
        writer.apply_watcher_event(&Event::Init);
        for a in agents {
            writer.apply_watcher_event(&Event::InitApply(a.clone()));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let (providers, _) = reflector::store::<ModelProvider>();
        let (budgets, _) = reflector::store::<Budget>();
        Stores { agents: store, providers, budgets }
    }

    /// An unchanged agent is taken over from the last index; one whose object changed (here
    /// suspended: a new `resourceVersion`) is read anew, so the change is enforced at once.
    #[test]
    fn a_rebuild_keeps_unchanged_agents_and_reads_changed_ones_anew() {
        let first = build(&stores(&[agent("a", "1", false), agent("b", "2", false)]), &Index::default(), Changed::ALL);
        let second = build(&stores(&[agent("a", "1", false), agent("b", "3", true)]), &first, Changed::ALL);
        let (a1, a2) = (&first.agents["sha256:a"], &second.agents["sha256:a"]);
        assert!(Arc::ptr_eq(a1, a2), "the unchanged agent was copied");
        let (b1, b2) = (&first.agents["sha256:b"], &second.agents["sha256:b"]);
        assert!(!Arc::ptr_eq(b1, b2), "the changed agent was kept as it was");
        assert!(!b1.spec.suspended && b2.spec.suspended);
        assert_eq!(b2.version.as_deref(), Some("3"));
        // Without a version, nothing is taken over (an object not from the API server).
        let mut unversioned = agent("a", "1", false);
        unversioned.metadata.resource_version = None;
        let before = build(&stores(&[unversioned.clone()]), &Index::default(), Changed::ALL);
        let after = build(&stores(&[unversioned]), &before, Changed::ALL);
        assert!(!Arc::ptr_eq(&before.agents["sha256:a"], &after.agents["sha256:a"]));
    }

    /// Only the kinds that changed are read again; a first index reads every kind whatever it
    /// is told, since there is nothing to share.
    #[test]
    fn a_rebuild_reads_again_only_the_kinds_that_changed() {
        let budgets_only = Changed { budgets: true, ..Changed::NONE };
        let first = build(&stores(&[agent("a", "1", false)]), &Index::default(), budgets_only);
        assert_eq!(first.agents.len(), 1, "a first index reads the agents too");
        // The store now holds a suspended agent, but only budgets are said to have changed.
        let second = build(&stores(&[agent("a", "2", true)]), &first, budgets_only);
        assert!(Arc::ptr_eq(&first.agents, &second.agents) && Arc::ptr_eq(&first.providers, &second.providers));
        assert!(!Arc::ptr_eq(&first.budgets, &second.budgets) && !Arc::ptr_eq(&first.budget_status, &second.budget_status));
        let third = build(&stores(&[agent("a", "2", true)]), &second, Changed { agents: true, ..Changed::NONE });
        assert!(third.agents["sha256:a"].spec.suspended, "a change to the agents is read");
        assert!(Arc::ptr_eq(&second.budgets, &third.budgets));
    }
}
