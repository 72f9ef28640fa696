use super::compiled::CompiledPolicy;
use super::input::AgentInfo;
use crate::json_tree::Tree;
use serde_json::{Map, Value};
use tollgate_api::{Action, Justification};

/// Rule 7 across policies: Required if any applicable policy's matching entry requires it,
/// else Optional if any offers it. A policy in `Audit` only offers it: the agent may explain,
/// and the audit records who would have been refused for not explaining.
pub fn justification_mode(policies: &[&CompiledPolicy], server: &str, tool: &str) -> Option<Justification> {
    justification_as(policies, server, tool, false)
}

/// [`justification_mode`], or (`as_if_enforced`) what it would be were every policy enforced.
pub(crate) fn justification_as(policies: &[&CompiledPolicy], server: &str, tool: &str, as_if_enforced: bool) -> Option<Justification> {
    let mut mode = None;
    for p in policies {
        match p.entry_for(server, tool).and_then(|e| e.justification) {
            Some(Justification::Required) if p.audit && !as_if_enforced => mode = Some(Justification::Optional),
            Some(Justification::Required) => return Some(Justification::Required),
            Some(Justification::Optional) => mode = Some(Justification::Optional),
            None => {}
        }
    }
    mode
}

/// What a policy certainly does with a tool, whatever the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Static {
    NoDecision,
    Deny,
    Other,
}

fn static_outcome(policy: &CompiledPolicy, server: &str, tool: &str) -> Static {
    let Some(entry) = policy.entry_for(server, tool) else {
        return Static::NoDecision;
    };
    // Conditional rules that could match first must all deny too (an error keeps a Deny a Deny).
    // Audited rules decide nothing, so they hide nothing.
    for rule in entry.rules.iter().filter(|r| !r.audit) {
        if rule.action != Action::Deny {
            return Static::Other;
        }
        if rule.when.is_none() {
            return Static::Deny;
        }
    }
    Static::Other
}

/// Rule 6: whether `tools/list` shows the tool. Hidden: servers the agent may not use, and tools
/// that are denied whatever the arguments. Conditionally denied tools stay visible.
pub fn visible(policies: &[&CompiledPolicy], agent: &AgentInfo, server: &str, tool: &str, cluster_default: Action) -> bool {
    if agent.suspended || !agent.may_use_server(server) {
        return false;
    }
    let applicable: Vec<&CompiledPolicy> = policies.iter().copied().filter(|p| p.applies_to(agent)).collect();
    for fallback in [false, true] {
        let outcomes: Vec<Static> = applicable.iter().filter(|p| p.fallback == fallback).map(|p| static_outcome(p, server, tool)).collect();
        if outcomes.contains(&Static::Deny) {
            return false;
        }
        if outcomes.iter().any(|o| *o != Static::NoDecision) {
            return true;
        }
    }
    agent.default_action.unwrap_or(cluster_default) != Action::Deny
}

/// A justification as the agent gave it; an empty or blank string counts as missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Justify<'a> {
    pub justification: Option<String>,
    /// The arguments without the `justification` key, as forwarded and as rules see them.
    pub arguments: Tree<'a>,
}

/// Removes `justification` from the arguments when the tool has a justification mode.
pub fn split_justification(arguments: Tree<'_>, mode: Option<Justification>) -> Justify<'_> {
    // Taken apart, not copied: the arguments are every call's largest value.
    let mut members = match (mode, arguments) {
        (Some(_), Tree::Object(members)) => members,
        (_, arguments) => return Justify { justification: None, arguments },
    };
    let justification = match members.remove("justification") {
        Some(Tree::String(s)) if !s.trim().is_empty() => Some(s.into_owned()),
        _ => None,
    };
    Justify { justification, arguments: Tree::Object(members) }
}

const JUSTIFICATION_DESCRIPTION: &str = "Why this call is needed. Approvers and the audit log see it; it is not passed to the tool.";

/// Rule 7: adds the `justification` property to a tool's input schema (required or optional).
pub fn add_justification_property(schema: &mut Value, mode: Justification) {
    if !schema.is_object() {
        *schema = Value::Object(Map::new());
    }
    let Value::Object(obj) = schema else { return };
    obj.entry("type").or_insert_with(|| Value::String("object".into()));
    let properties = obj.entry("properties").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = properties {
        props.insert("justification".into(), serde_json::json!({"type": "string", "minLength": 1, "description": JUSTIFICATION_DESCRIPTION}));
    }
    if mode == Justification::Required {
        let required = obj.entry("required").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = required
            && !list.iter().any(|v| v == "justification")
        {
            list.push(Value::String("justification".into()));
        }
    }
}

/// Rules 6 and 7 applied to a `tools/list` result: drops hidden tools and adds the
/// `justification` property where a policy asks for one. `decide(tool)` returns `None` to hide
/// the tool, else its justification mode.
pub fn rewrite_tools_list(result: &mut Value, decide: impl Fn(&str) -> Option<Option<Justification>>) {
    let Some(Value::Array(tools)) = result.get_mut("tools") else { return };
    tools.retain_mut(|tool| {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        match decide(&name) {
            None => false,
            Some(None) => true,
            Some(Some(mode)) => {
                if let Some(schema) = tool.get_mut("inputSchema") {
                    add_justification_property(schema, mode);
                } else if let Value::Object(t) = tool {
                    let mut schema = Value::Object(Map::new());
                    add_justification_property(&mut schema, mode);
                    t.insert("inputSchema".into(), schema);
                }
                true
            }
        }
    });
}

/// A policy that could not be compiled still governs: it denies every call in its scope, so an
/// unloadable guardrail fails closed instead of vanishing. One in `Audit` (`audit`) was never
/// enforcing anything: its deny is audited too, so a broken rollout stops no call.
pub fn unloadable(id: super::compiled::PolicyId, fallback: bool, audit: bool, message: String) -> CompiledPolicy {
    CompiledPolicy {
        id,
        fallback,
        audit,
        has_audit: audit,
        agent_selector: Default::default(),
        namespace_selector: Default::default(),
        entries: vec![super::compiled::CompiledEntry {
            server: crate::glob::Glob::Any,
            name: crate::glob::Glob::Any,
            justification: None,
            workflow: None,
            rules: vec![super::compiled::CompiledRule {
                path: "spec".into(),
                action: Action::Deny,
                when: None,
                message: Some(message),
                workflow: None,
                audit,
                rate_limit: None,
            }],
        }],
    }
}
