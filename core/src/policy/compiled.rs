//! A policy as compiled at load: its identity, its selectors and its entries with their rules
//! (conditions already compiled).

pub use super::id::PolicyId;
use super::input::AgentInfo;
use crate::glob::Glob;
use crate::policy::expr::Condition;
use kube::core::{Selector, SelectorExt};
use tollgate_api::{Action, Justification, PolicyKind};

/// An action as written in flags and Helm values: `Allow`, `Deny` or `RequireApproval`.
pub fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "Allow" => Ok(Action::Allow),
        "Deny" => Ok(Action::Deny),
        "RequireApproval" => Ok(Action::RequireApproval),
        other => Err(format!("{other:?} is not one of Allow, Deny, RequireApproval")),
    }
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    pub fallback: bool,
    /// `spec.enforcement: Audit`: nothing it says is enforced.
    pub audit: bool,
    /// Some rule is audited only (always so when `audit`): its calls are decided twice.
    pub has_audit: bool,
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
    /// Evaluated for the record only (the rule's or its policy's `enforcement: Audit`).
    pub audit: bool,
    pub rate_limit: Option<super::limits::Limit>,
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
