use super::compiled::{CompiledEntry, CompiledPolicy, CompiledRule, PolicyId};
use crate::glob::Glob;
use crate::policy::expr::Condition;
use kube::core::Selector;
use tollgate_api::PolicyKind;
use tollgate_api::common::LabelSelector;
use tollgate_api::{ClusterToolPolicySpec, ToolPolicySpec, ToolRules};

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
        spec.fallback,
        spec.agent_selector.as_ref(),
        None,
        &spec.tools,
    )
}

pub fn compile_cluster_tool_policy(name: &str, spec: &ClusterToolPolicySpec) -> Result<CompiledPolicy, CompileError> {
    compile(
        PolicyId { kind: PolicyKind::ClusterToolPolicy, namespace: None, name: name.to_owned() },
        spec.fallback,
        spec.agent_selector.as_ref(),
        spec.namespace_selector.as_ref(),
        &spec.tools,
    )
}

fn compile(
    id: PolicyId,
    fallback: bool,
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
            rules.push(CompiledRule { path, action: rule.action, when, message: rule.message.clone(), workflow: rule.approval_workflow.clone() });
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
    Ok(CompiledPolicy { id, fallback, agent_selector, namespace_selector, entries })
}
