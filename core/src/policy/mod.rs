//! Tool policies: compiled once when loaded, evaluated per call (DESIGN §3.1).

mod compile;
mod eval;
mod listing;

pub use compile::{CompileError, FieldError, compile_cluster_tool_policy, compile_tool_policy};
pub use eval::{Call, DecidedBy, Decision, WorkflowLookup, decide, evaluate};
pub use listing::{Justify, add_justification_property, justification_mode, rewrite_tools_list, split_justification, unloadable, visible};

use crate::expr::Condition;
use crate::glob::Glob;
use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;
use std::sync::OnceLock;
pub use tollgate_api::{Action, Justification, PolicyKind};

/// An action as written in flags and Helm values: `Allow`, `Deny` or `RequireApproval`.
pub fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "Allow" => Ok(Action::Allow),
        "Deny" => Ok(Action::Deny),
        "RequireApproval" => Ok(Action::RequireApproval),
        other => Err(format!("{other:?} is not one of Allow, Deny, RequireApproval")),
    }
}

/// Which policy an outcome came from. Orders cluster-scoped first, then by namespace and name,
/// which is the tie-break order of rule 3.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for PolicyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    pub fallback: bool,
    pub(crate) agent_selector: Selector,
    pub(crate) namespace_selector: Selector,
    pub(crate) entries: Vec<CompiledEntry>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledEntry {
    pub server: Glob,
    pub name: Glob,
    pub justification: Option<Justification>,
    pub workflow: Option<String>,
    pub rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    /// `spec.tools[i].rules[j]`
    pub path: String,
    pub action: Action,
    pub when: Option<Condition>,
    pub message: Option<String>,
    pub workflow: Option<String>,
}

impl CompiledPolicy {
    /// Rule 1: whether this policy governs the agent.
    pub fn applies_to(&self, agent: &AgentInfo) -> bool {
        let in_scope = match (&self.id.kind, &self.id.namespace) {
            (PolicyKind::ToolPolicy, Some(ns)) => *ns == agent.namespace,
            (PolicyKind::ToolPolicy, None) => false,
            (PolicyKind::ClusterToolPolicy, _) => self.namespace_selector.matches(&agent.namespace_labels),
        };
        in_scope && self.agent_selector.matches(&agent.labels)
    }

    pub fn rule_count(&self) -> usize {
        self.entries.iter().map(|e| e.rules.len()).sum()
    }

    /// The first entry matching (server, tool): rule 2.
    pub(crate) fn entry_for(&self, server: &str, tool: &str) -> Option<&CompiledEntry> {
        self.entries.iter().find(|e| e.server.matches(server) && e.name.matches(tool))
    }
}

/// The agent as policies see it: its `ManagedAgent` and its namespace.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The bare service account name.
    pub service_account: String,
    pub namespace_labels: BTreeMap<String, String>,
    /// Globs over `MCPServer` names the agent may use.
    pub mcp_servers: Vec<Glob>,
    pub default_action: Option<Action>,
    pub suspended: bool,
}

impl AgentInfo {
    /// The agent as policies see it, from its `ManagedAgent` and its namespace's labels.
    pub fn from_spec(
        name: &str,
        namespace: &str,
        labels: BTreeMap<String, String>,
        spec: &tollgate_api::ManagedAgentSpec,
        namespace_labels: BTreeMap<String, String>,
    ) -> Self {
        AgentInfo {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels,
            service_account: spec.service_account_name.clone(),
            namespace_labels,
            mcp_servers: spec.mcp_servers.iter().map(|g| Glob::new(g)).collect(),
            default_action: spec.default_action,
            suspended: spec.suspended,
        }
    }

    pub fn may_use_server(&self, server: &str) -> bool {
        self.mcp_servers.iter().any(|g| g.matches(server))
    }
}

/// Tool arguments, kept as raw bytes until a rule reads `args`.
#[derive(Debug)]
pub struct Args<'a> {
    raw: ArgsSource<'a>,
    parsed: OnceLock<Result<serde_json::Value, String>>,
}

#[derive(Debug)]
enum ArgsSource<'a> {
    Raw(&'a [u8]),
    Value(&'a serde_json::Value),
}

impl<'a> Args<'a> {
    pub fn raw(bytes: &'a [u8]) -> Self {
        Args { raw: ArgsSource::Raw(bytes), parsed: OnceLock::new() }
    }

    pub fn value(value: &'a serde_json::Value) -> Self {
        Args { raw: ArgsSource::Value(value), parsed: OnceLock::new() }
    }

    /// The arguments as JSON; parsed at most once. Invalid UTF-8, invalid JSON or nesting past
    /// serde_json's recursion limit are errors, which fail closed in any rule that reads `args`.
    pub fn parsed(&self) -> Result<&serde_json::Value, &str> {
        match &self.raw {
            ArgsSource::Value(v) => Ok(v),
            ArgsSource::Raw(bytes) => self
                .parsed
                .get_or_init(|| {
                    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                        return Ok(serde_json::Value::Object(Default::default()));
                    }
                    serde_json::from_slice(bytes).map_err(|e| format!("arguments are not valid JSON: {e}"))
                })
                .as_ref()
                .map_err(String::as_str),
        }
    }
}
