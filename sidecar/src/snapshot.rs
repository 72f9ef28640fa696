//! The policy snapshot: watched objects compiled with `tollgate-core` and swapped atomically,
//! so a change applies to the next call without a restart.

use anyhow::Result;
use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ApprovalWorkflow, ClusterToolPolicy, HeaderSource, ManagedAgent, McpServer, PolicyKind, ToolPolicy};
use tollgate_core::policy::{self, AgentInfo, CompiledPolicy, PolicyId};
use tollgate_runtime::admin::Readiness;
use tollgate_runtime::watch::reflect;

#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub url: String,
    /// `url` parsed once, for every request to the server (`None`: it does not parse, and a
    /// request says why).
    pub target: Option<Target>,
    pub timeout: Duration,
    pub headers: Vec<HeaderSource>,
    pub tls: Option<tollgate_api::UpstreamTls>,
}

impl Server {
    pub fn new(name: String, url: String, timeout: Duration, headers: Vec<HeaderSource>, tls: Option<tollgate_api::UpstreamTls>) -> Server {
        Server { target: Target::parse(&url), name, url, timeout, headers, tls }
    }

    /// A server the sidecar answers for itself (built-in tools, refusals): never called.
    pub fn local(name: String, timeout: Duration) -> Server {
        Server::new(name, String::new(), timeout, Vec::new(), None)
    }
}

/// What each request to a server starts from: its URI and the `Host` header hyper would write
/// for it (the port only when it is not the scheme's), both cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub uri: hyper::Uri,
    pub host: hyper::header::HeaderValue,
}

impl Target {
    /// `None` for what is not an absolute `http://` or `https://` URL with a host.
    pub fn parse(url: &str) -> Option<Target> {
        let uri: hyper::Uri = url.parse().ok()?;
        let default_port = match uri.scheme_str()? {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?;
        let authority = uri.authority()?.as_str();
        let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let host = match uri.port_u16() {
            Some(port) if port != default_port => format!("{host}:{port}"),
            Some(_) => host.to_owned(),
            // A port past 65535 is kept by the URI and dropped by `port_u16`: left to the
            // request to refuse, as before.
            None if host_and_port != host => return None,
            None => host.to_owned(),
        };
        Some(Target { host: hyper::header::HeaderValue::from_str(&host).ok()?, uri })
    }
}

#[derive(Debug, Clone)]
pub struct WorkflowInfo {
    /// Approvers and quorum, as a held call's result is checked against before it runs.
    pub rules: tollgate_core::approval::Workflow,
    pub async_mode: bool,
    pub timeout: Duration,
    pub escalation_after: Option<Duration>,
}

/// Everything a call is decided with.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// False until every watch has listed once: until then every call is refused.
    pub loaded: bool,
    pub agent: Option<AgentInfo>,
    /// Only the policies that apply to this agent, in (cluster first, name) order.
    pub policies: Vec<CompiledPolicy>,
    pub servers: BTreeMap<String, Server>,
    pub workflows: BTreeMap<String, WorkflowInfo>,
    /// Transparent mode: connections to destinations that are not MCP servers are refused.
    pub refuse_other_destinations: bool,
}

impl Snapshot {
    /// The servers the agent may use, of those known.
    pub fn usable_servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values().filter(|s| self.agent.as_ref().is_some_and(|a| a.may_use_server(&s.name)))
    }

    pub fn policy_refs(&self) -> Vec<&CompiledPolicy> {
        self.policies.iter().collect()
    }

    /// The agent if it may be served at all (policies loaded, managed, not suspended).
    pub fn agent_access(&self, agent: &str, namespace: &str) -> Result<&AgentInfo, tollgate_core::mcp::access::AccessRefusal> {
        tollgate_core::mcp::access::agent_access(self.loaded, self.agent.as_ref(), agent, namespace)
    }

    /// Why no call can be decided now, if none can.
    pub fn unavailable(&self, agent: &str, namespace: &str) -> Option<String> {
        self.agent_access(agent, namespace).err().map(|e| e.to_string())
    }
}

pub struct Stores {
    pub agents: Store<ManagedAgent>,
    pub policies: Store<ToolPolicy>,
    pub cluster_policies: Store<ClusterToolPolicy>,
    pub servers: Store<McpServer>,
    pub workflows: Store<ApprovalWorkflow>,
    pub namespaces: Store<Namespace>,
}

/// Builds a snapshot from the watched objects.
pub fn build(agent_name: &str, namespace: &str, s: &Stores) -> Snapshot {
    let ns_labels = s.namespaces.state().iter().find(|n| n.name_any() == namespace).map(|n| n.labels().clone()).unwrap_or_default();
    let agent = s
        .agents
        .state()
        .iter()
        .find(|a| a.name_any() == agent_name)
        .map(|a| AgentInfo::from_spec(&a.name_any(), namespace, a.labels().clone(), &a.spec, ns_labels.clone()));
    let mut policies: Vec<CompiledPolicy> = Vec::new();
    for p in s.cluster_policies.state() {
        let compiled = policy::compile_cluster_tool_policy(&p.name_any(), &p.spec).unwrap_or_else(|e| {
            let id = PolicyId { kind: PolicyKind::ClusterToolPolicy, namespace: None, name: p.name_any() };
            policy::unloadable(
                id,
                p.spec.fallback,
                p.spec.enforcement == Some(tollgate_api::Enforcement::Audit),
                format!("ClusterToolPolicy {} cannot be loaded: {e}", p.name_any()),
            )
        });
        policies.push(compiled);
    }
    for p in s.policies.state() {
        let compiled = policy::compile_tool_policy(namespace, &p.name_any(), &p.spec).unwrap_or_else(|e| {
            let id = PolicyId { kind: PolicyKind::ToolPolicy, namespace: Some(namespace.to_owned()), name: p.name_any() };
            policy::unloadable(
                id,
                p.spec.fallback,
                p.spec.enforcement == Some(tollgate_api::Enforcement::Audit),
                format!("ToolPolicy {} cannot be loaded: {e}", p.name_any()),
            )
        });
        policies.push(compiled);
    }
    if let Some(a) = &agent {
        policies.retain(|p| p.applies_to(a));
    }
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    let servers = s
        .servers
        .state()
        .iter()
        .filter_map(|m| {
            let url = m.spec.endpoint(namespace)?;
            let timeout = Duration::from_secs(u64::try_from(m.spec.timeout_seconds.max(1)).unwrap_or(30));
            Some((m.name_any(), Server::new(m.name_any(), url, timeout, m.spec.headers.clone(), m.spec.tls.clone())))
        })
        .collect();
    let workflows = s
        .workflows
        .state()
        .iter()
        .map(|w| {
            let secs = |s: i32| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(300));
            let info = WorkflowInfo {
                rules: tollgate_core::approval::Workflow::from_spec(&w.name_any(), &w.spec),
                async_mode: w.spec.r#async,
                timeout: secs(w.spec.timeout_seconds),
                escalation_after: w.spec.escalation.as_ref().map(|e| secs(e.after_seconds.unwrap_or(w.spec.timeout_seconds))),
            };
            (w.name_any(), info)
        })
        .collect();
    let refuse_other_destinations = s
        .agents
        .state()
        .iter()
        .any(|a| a.name_any() == agent_name && a.spec.injection.as_ref().is_some_and(|i| i.other_destinations == tollgate_api::OtherDestinations::Refuse));
    Snapshot { loaded: true, agent, policies, servers, workflows, refuse_other_destinations }
}

/// Watches the objects a decision depends on and swaps in a new snapshot on every change.
/// Keeps `target` current with the watched objects; `swapped` runs after every swap.
pub async fn watch(
    client: kube::Client,
    agent: String,
    namespace: String,
    target: Arc<ArcSwap<Snapshot>>,
    ready: Readiness,
    swapped: impl Fn() + Send,
) -> Result<()> {
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(64);
    let all = watcher::Config::default;
    let stores = Stores {
        agents: reflect(Api::<ManagedAgent>::namespaced(client.clone(), &namespace), all(), &changed_tx),
        policies: reflect(Api::<ToolPolicy>::namespaced(client.clone(), &namespace), all(), &changed_tx),
        cluster_policies: reflect(Api::<ClusterToolPolicy>::all(client.clone()), all(), &changed_tx),
        servers: reflect(Api::<McpServer>::namespaced(client.clone(), &namespace), all(), &changed_tx),
        workflows: reflect(Api::<ApprovalWorkflow>::namespaced(client.clone(), &namespace), all(), &changed_tx),
        namespaces: reflect(Api::<Namespace>::all(client.clone()), all().fields(&format!("metadata.name={namespace}")), &changed_tx),
    };
    for (name, wait) in [
        ("ManagedAgent", stores.agents.wait_until_ready().await),
        ("ToolPolicy", stores.policies.wait_until_ready().await),
        ("ClusterToolPolicy", stores.cluster_policies.wait_until_ready().await),
        ("McpServer", stores.servers.wait_until_ready().await),
        ("ApprovalWorkflow", stores.workflows.wait_until_ready().await),
        ("Namespace", stores.namespaces.wait_until_ready().await),
    ] {
        wait.map_err(|e| anyhow::anyhow!("watching {name}: {e}"))?;
    }
    loop {
        let snapshot = build(&agent, &namespace, &stores);
        tracing::debug!(policies = snapshot.policies.len(), servers = snapshot.servers.len(), agent = snapshot.agent.is_some(), "snapshot swapped");
        target.store(Arc::new(snapshot));
        // Loaded first: whoever the swap wakes sees it.
        ready.set_ready();
        swapped();
        if changed.recv().await.is_none() {
            return Ok(());
        }
        // Coalesce a burst of events (an apply of many objects) into one rebuild.
        while changed.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use serde_json::json;

    fn store<K>(objects: &[serde_json::Value]) -> Store<K>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (reader, mut writer) = reflector::store();
        for o in objects {
            let object: K = serde_json::from_value(o.clone()).unwrap_or_else(|e| panic!("{e}: {o}"));
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        reader
    }

    fn meta(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "team-a", "labels": {"team": "a"}}, "spec": spec})
    }

    #[test]
    fn a_policy_that_cannot_load_still_denies_and_other_agents_policies_are_left_out() {
        let stores = Stores {
            agents: store(&[meta("ManagedAgent", "coder", json!({"selector": {}, "serviceAccountName": "coder", "mcpServers": ["files"]}))]),
            policies: store(&[
                meta("ToolPolicy", "broken", json!({"tools": [{"name": "x", "rules": [{"action": "Allow", "when": "args.("}]}]})),
                meta(
                    "ToolPolicy",
                    "theirs",
                    json!({"agentSelector": {"matchLabels": {"team": "b"}}, "tools": [{"name": "y", "rules": [{"action": "Allow"}]}]}),
                ),
            ]),
            cluster_policies: store(&[json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "ClusterToolPolicy", "metadata": {"name": "guard"},
                                               "spec": {"tools": [{"name": "drop", "rules": [{"action": "Deny"}]}]}})]),
            servers: store(&[meta("MCPServer", "files", json!({"url": "http://files/mcp", "timeoutSeconds": 0}))]),
            workflows: store(&[meta("ApprovalWorkflow", "ops", json!({"approvers": {"users": ["alice"]}, "timeoutSeconds": 60}))]),
            namespaces: store(&[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"env": "prod"}}})]),
        };
        let s = build("coder", "team-a", &stores);
        assert!(s.loaded);
        let agent = s.agent.as_ref().expect("the agent");
        assert_eq!(agent.namespace_labels.get("env").map(String::as_str), Some("prod"));
        let ids: Vec<String> = s.policies.iter().map(|p| p.id.to_string()).collect();
        assert_eq!(ids, ["ClusterToolPolicy guard", "ToolPolicy team-a/broken"], "cluster first; another team's policy left out");
        // The broken one is loaded as one that denies in its scope, not dropped.
        assert_eq!(s.policies[1].rule_count(), 1);
        let server = s.servers.get("files").expect("the server");
        assert_eq!(server.timeout, Duration::from_secs(1), "a timeout below a second is one second");
        assert_eq!(s.workflows.get("ops").map(|w| w.timeout), Some(Duration::from_secs(60)));
        assert!(!s.refuse_other_destinations);
        assert!(build("someone-else", "team-a", &stores).agent.is_none(), "an unmanaged agent gets no snapshot agent");
        assert_eq!(server.target.as_ref().map(|t| t.uri.to_string()), Some("http://files/mcp".into()));
    }

    #[test]
    fn a_servers_host_header_names_the_port_only_when_it_is_not_the_schemes() {
        let host = |url: &str| Target::parse(url).map(|t| t.host.to_str().unwrap_or_default().to_owned());
        for (url, want) in [
            ("http://files/mcp", "files"),
            ("http://files:80/mcp", "files"),
            ("http://files:443/mcp", "files:443"),
            ("https://files:443/mcp", "files"),
            ("https://files:8443/mcp", "files:8443"),
            ("http://10.0.0.1:8080/mcp", "10.0.0.1:8080"),
            ("http://[::1]:9000/mcp", "[::1]:9000"),
        ] {
            assert_eq!(host(url).as_deref(), Some(want), "{url}");
        }
        assert_eq!(host("http://user:pw@files:8080/mcp").as_deref(), Some("files:8080"), "no credentials in Host");
        for bad in ["", "files/mcp", "ftp://files/mcp", "http://", "http://files:99999/mcp"] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }
}
