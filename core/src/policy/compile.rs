use super::compiled::{CompiledEntry, CompiledPolicy, CompiledRule, PolicyId};
use crate::glob::Glob;
use crate::policy::expr::Condition;
use kube::core::Selector;
use tollgate_api::PolicyKind;
use tollgate_api::common::LabelSelector;
use tollgate_api::{ClusterToolPolicySpec, Enforcement, EnforcementSummary, ToolPolicySpec, ToolRules};

/// One problem in a policy, at a field path such as `spec.tools[2].rules[0].when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// Why a policy cannot be loaded; lists every problem, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; "))]
pub struct CompileError {
    pub errors: Vec<FieldError>,
}

impl CompileError {
    /// The status reason: `InvalidExpression` when a `when` is at fault, else `InvalidSpec`.
    pub fn reason(&self) -> &'static str {
        if self.errors.iter().any(|e| e.path.ends_with(".when")) { "InvalidExpression" } else { "InvalidSpec" }
    }
}

pub fn compile_tool_policy(namespace: &str, name: &str, spec: &ToolPolicySpec) -> Result<CompiledPolicy, CompileError> {
    compile(
        PolicyId { kind: PolicyKind::ToolPolicy, namespace: Some(namespace.to_owned()), name: name.to_owned() },
        Head { fallback: spec.fallback, audit: spec.enforcement == Some(Enforcement::Audit) },
        spec.agent_selector.as_ref(),
        None,
        &spec.tools,
    )
}

pub fn compile_cluster_tool_policy(name: &str, spec: &ClusterToolPolicySpec) -> Result<CompiledPolicy, CompileError> {
    compile(
        PolicyId { kind: PolicyKind::ClusterToolPolicy, namespace: None, name: name.to_owned() },
        Head { fallback: spec.fallback, audit: spec.enforcement == Some(Enforcement::Audit) },
        spec.agent_selector.as_ref(),
        spec.namespace_selector.as_ref(),
        &spec.tools,
    )
}

/// Whether a policy is enforced, audited only, or enforced with some rules audited (its status).
pub fn enforcement_summary(enforcement: Option<Enforcement>, tools: &[ToolRules]) -> EnforcementSummary {
    let audited = |e: Option<Enforcement>| e == Some(Enforcement::Audit);
    if audited(enforcement) {
        EnforcementSummary::Audit
    } else if tools.iter().flat_map(|t| &t.rules).any(|r| audited(r.enforcement)) {
        EnforcementSummary::Mixed
    } else {
        EnforcementSummary::Enforce
    }
}

/// What a policy says of all its rules.
#[derive(Clone, Copy)]
struct Head {
    fallback: bool,
    /// `spec.enforcement: Audit`: every rule audited.
    audit: bool,
}

fn compile(
    id: PolicyId,
    head: Head,
    agent_selector: Option<&LabelSelector>,
    namespace_selector: Option<&LabelSelector>,
    tools: &[ToolRules],
) -> Result<CompiledPolicy, CompileError> {
    let mut errors = Vec::new();
    let mut selector = |path: &str, s: Option<&LabelSelector>| match s.cloned().map(Selector::try_from).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            errors.push(FieldError { path: path.to_owned(), message: e.to_string() });
            Selector::default()
        }
    };
    let agent_selector = selector("spec.agentSelector", agent_selector);
    let namespace_selector = selector("spec.namespaceSelector", namespace_selector);

    let mut entries = Vec::with_capacity(tools.len());
    for (i, entry) in tools.iter().enumerate() {
        let mut rules = Vec::with_capacity(entry.rules.len());
        for (j, rule) in entry.rules.iter().enumerate() {
            let path = format!("spec.tools[{i}].rules[{j}]");
            let when = match rule.when.as_deref() {
                None => None,
                Some(source) => match Condition::compile(source) {
                    Ok(c) => Some(c),
                    Err(message) => {
                        errors.push(FieldError { path: format!("{path}.when"), message });
                        None
                    }
                },
            };
            let rate_limit = match rule.rate_limit.as_ref().map(super::limits::Limit::compile).transpose() {
                Ok(l) => l,
                Err(message) => {
                    errors.push(FieldError { path: format!("{path}.rateLimit.period"), message });
                    None
                }
            };
            rules.push(CompiledRule {
                rate_limit,
                path,
                action: rule.action,
                when,
                message: rule.message.clone(),
                workflow: rule.approval_workflow.clone(),
                audit: head.audit || rule.enforcement == Some(Enforcement::Audit),
            });
        }
        entries.push(CompiledEntry {
            server: Glob::new(&entry.server),
            name: Glob::new(&entry.name),
            justification: entry.justification,
            workflow: entry.approval_workflow.clone(),
            rules,
        });
    }
    if !errors.is_empty() {
        return Err(CompileError { errors });
    }
    let has_audit = entries.iter().flat_map(|e| &e.rules).any(|r| r.audit);
    Ok(CompiledPolicy { id, fallback: head.fallback, audit: head.audit, has_audit, agent_selector, namespace_selector, entries })
}
