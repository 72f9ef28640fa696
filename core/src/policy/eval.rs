use super::compiled::{CompiledPolicy, PolicyId};
use super::input::{AgentInfo, Args};
use super::limits::Applied;
use crate::policy::expr::Bindings;
use tollgate_api::Action;

/// Whether an `ApprovalWorkflow` of that name exists in the agent's namespace.
pub trait WorkflowLookup {
    fn exists(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool> WorkflowLookup for F {
    fn exists(&self, name: &str) -> bool {
        self(name)
    }
}

/// What decided a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule of a policy (for a fallback policy, `fallback` is true).
    Rule {
        policy: PolicyId,
        rule: String,
        fallback: bool,
    },
    AgentDefault,
    ClusterDefault,
    Suspended,
    ServerNotAllowed,
    MissingJustification,
    /// A message the firewall cannot decide as sent (no id, ambiguous fields).
    InvalidRequest,
    /// The rate limit of a rule that allowed (or held) the call.
    RateLimited {
        policy: PolicyId,
        rule: String,
    },
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Rule { policy, rule, fallback } => {
                write!(f, "{policy}, {rule}{}", if *fallback { " (fallback)" } else { "" })
            }
            DecidedBy::AgentDefault => f.write_str("the agent's defaultAction"),
            DecidedBy::ClusterDefault => f.write_str("the cluster default"),
            DecidedBy::Suspended => f.write_str("the kill switch (ManagedAgent.spec.suspended)"),
            DecidedBy::ServerNotAllowed => f.write_str("the agent's mcpServers"),
            DecidedBy::MissingJustification => f.write_str("a missing justification"),
            DecidedBy::InvalidRequest => f.write_str("an invalid request"),
            DecidedBy::RateLimited { policy, rule } => write!(f, "the rate limit of {policy}, {rule}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub decided_by: DecidedBy,
    /// For a Deny, what the agent is told; for RequireApproval, what approvers read.
    pub message: Option<String>,
    /// For RequireApproval: the workflow that decides (it exists).
    pub workflow: Option<String>,
    /// A `when` that failed at run time (rule 5); recorded in the audit.
    pub error: Option<String>,
    /// What audited rules would have made of the call, where that differs from `action`.
    pub shadow: Option<Box<Shadow>>,
    /// The rate limits of the rules that matched (one per policy of the deciding group), unless
    /// the call is denied anyway: the sidecar refuses it when any is spent.
    pub limits: Vec<Applied>,
    /// Limits of audited rules: spent ones make a would-be Deny, never a refusal.
    pub audited_limits: Vec<Applied>,
}

/// A would-be decision: the call's fate had every audited rule and policy been enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub action: Action,
    pub decided_by: DecidedBy,
    /// For a Deny, what the agent would have read; for RequireApproval, what approvers would.
    pub message: Option<String>,
}

/// Which rules a decision counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Audited rules and policies are skipped: the call's real fate.
    Enforced,
    /// Every rule counts: what enforcing the audited ones would do.
    AsIfEnforced,
}

impl Decision {
    fn plain(action: Action, decided_by: DecidedBy, message: Option<String>) -> Self {
        Decision { action, decided_by, message, workflow: None, error: None, shadow: None, limits: Vec::new(), audited_limits: Vec::new() }
    }

    /// A Deny made before any policy is consulted.
    pub fn refused(decided_by: DecidedBy, message: &str) -> Self {
        Decision::plain(Action::Deny, decided_by, Some(message.to_owned()))
    }

    /// The text after `Access denied: ` that the agent reads.
    pub fn deny_message(&self) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        match &self.decided_by {
            DecidedBy::Rule { policy, rule, .. } => format!("denied by {policy} ({rule})"),
            DecidedBy::AgentDefault => "denied by the agent's defaultAction".into(),
            DecidedBy::ClusterDefault => "denied by the cluster default".into(),
            DecidedBy::Suspended => "the agent is suspended".into(),
            DecidedBy::ServerNotAllowed => "the agent may not use this MCP server".into(),
            DecidedBy::MissingJustification => "a justification is required".into(),
            DecidedBy::InvalidRequest => "the request is invalid".into(),
            DecidedBy::RateLimited { policy, rule } => format!("rate limited by {policy} ({rule})"),
        }
    }
}

/// The policy and rule an audit record names for what decided: a rule's policy and path, or
/// what else decided (the kill switch, a default) with no rule.
pub fn attribution(decided_by: &DecidedBy) -> (Option<String>, Option<String>) {
    match decided_by {
        DecidedBy::Rule { policy, rule, .. } | DecidedBy::RateLimited { policy, rule } => (Some(policy.to_string()), Some(rule.clone())),
        other => (Some(other.to_string()), None),
    }
}

/// One policy's outcome (rule 2), before workflows are resolved.
struct Outcome<'p> {
    policy: &'p CompiledPolicy,
    action: Action,
    rule: &'p str,
    message: Option<&'p str>,
    workflow: Option<&'p str>,
    error: Option<String>,
    limit: Option<&'p super::limits::Limit>,
}

fn decide_in_policy<'p>(policy: &'p CompiledPolicy, bindings: &Bindings<'_>, mode: Mode) -> Option<Outcome<'p>> {
    let entry = policy.entry_for(bindings.server, bindings.tool_name)?;
    for rule in entry.rules.iter().filter(|r| mode == Mode::AsIfEnforced || !r.audit) {
        let error = match &rule.when {
            None => None,
            Some(condition) => {
                let result = match (condition.uses().args, bindings.args.parsed()) {
                    (true, Err(e)) => Err(e.to_owned()),
                    _ => condition.evaluate(bindings),
                };
                match result {
                    Ok(true) => None,
                    Ok(false) => continue,
                    Err(e) => Some(format!("{}.when: {e}", rule.path)),
                }
            }
        };
        // Rule 5: an error counts as a match and raises the action to at least RequireApproval.
        let action = if error.is_some() { rule.action.max(Action::RequireApproval) } else { rule.action };
        return Some(Outcome {
            policy,
            action,
            rule: &rule.path,
            message: rule.message.as_deref(),
            workflow: rule.workflow.as_deref().or(entry.workflow.as_deref()),
            error,
            limit: rule.rate_limit.as_ref(),
        });
    }
    None
}

/// Rule 3: the most restrictive outcome; ties go to the first policy in (cluster first, name)
/// order, so `policies` is scanned in that order.
fn most_restrictive<'o, 'p>(outcomes: impl Iterator<Item = &'o Outcome<'p>>) -> Option<&'o Outcome<'p>> {
    let mut best: Option<&'o Outcome<'p>> = None;
    for o in outcomes {
        let better = match &best {
            None => true,
            Some(b) => o.action > b.action || (o.action == b.action && o.policy.id < b.policy.id),
        };
        if better {
            best = Some(o);
        }
    }
    best
}

/// One `tools/call` as policies see it: who calls what, with which arguments, when.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub agent: &'a AgentInfo,
    pub server: &'a str,
    pub tool: &'a str,
    pub args: &'a Args<'a>,
    /// Already split off the arguments (see [`super::split_justification`]).
    pub justification: Option<&'a str>,
    pub now: jiff::Timestamp,
}

/// Rules 2–5 over the policies that apply to the agent (callers pass only those; see
/// [`CompiledPolicy::applies_to`]), as `mode` counts them. `cluster_default` is the Helm value
/// (Allow out of the box).
fn evaluate(policies: &[&CompiledPolicy], call: &Call<'_>, workflows: &dyn WorkflowLookup, cluster_default: Action, mode: Mode) -> Decision {
    let Call { agent, server, tool, args, justification, now } = *call;
    let bindings = Bindings::new(args, tool, server, agent, justification, now);
    let group = |fallback: bool| -> Vec<Outcome<'_>> {
        policies.iter().filter(|p| p.fallback == fallback).filter_map(|p| decide_in_policy(p, &bindings, mode)).collect()
    };
    let (outcomes, fallback) = match group(false) {
        none if none.is_empty() => (group(true), true),
        some => (some, false),
    };
    let Some(o) = most_restrictive(outcomes.iter()) else {
        return match agent.default_action {
            Some(action) => Decision::plain(action, DecidedBy::AgentDefault, None),
            None => Decision::plain(cluster_default, DecidedBy::ClusterDefault, None),
        };
    };
    let limits = outcomes.iter().filter_map(|o| o.limit.map(|limit| Applied { policy: o.policy.id.clone(), rule: o.rule.to_owned(), limit: *limit })).collect();
    let decided_by = DecidedBy::Rule { policy: o.policy.id.clone(), rule: o.rule.to_owned(), fallback };
    let mut decision = Decision {
        action: o.action,
        decided_by,
        message: o.message.map(str::to_owned),
        workflow: None,
        error: o.error.clone(),
        shadow: None,
        limits,
        audited_limits: Vec::new(),
    };
    if decision.action == Action::RequireApproval {
        match o.workflow {
            Some(name) if workflows.exists(name) => decision.workflow = Some(name.to_owned()),
            // Rule 5: approval with no resolvable workflow is a Deny that says so.
            Some(name) => {
                decision.action = Action::Deny;
                decision.message = Some(format!("approval required, but approval workflow {name:?} does not exist in namespace {}", agent.namespace));
            }
            None => {
                decision.action = Action::Deny;
                decision.message = Some(format!("approval required, but {} names no approvalWorkflow for {}", o.policy.id, o.rule));
            }
        }
    }
    if let (Some(err), Action::Deny) = (&decision.error, decision.action)
        && decision.message.is_none()
    {
        decision.message = Some(format!("policy condition failed: {err}"));
    }
    decision
}

/// The whole decision of docs/design.md §3.2 for a `tools/call`: kill switch, server access,
/// justification, then the policies. `policies` may include ones that do not apply; they are
/// filtered here. Where audited rules apply, the call is decided a second time as if they were
/// enforced, and a different answer is kept as the decision's `shadow` (§3.1).
pub fn decide(policies: &[&CompiledPolicy], call: &Call<'_>, workflows: &dyn WorkflowLookup, cluster_default: Action) -> Decision {
    let mut decision = decide_as(policies, call, workflows, cluster_default, Mode::Enforced);
    let audited = || policies.iter().any(|p| p.has_audit && p.applies_to(call.agent));
    if decision.action == Action::Deny {
        decision.limits.clear();
    }
    if matches!(decision.decided_by, DecidedBy::Suspended | DecidedBy::ServerNotAllowed) || !audited() {
        return decision;
    }
    let would = decide_as(policies, call, workflows, cluster_default, Mode::AsIfEnforced);
    if would.action != Action::Deny {
        decision.audited_limits = would.limits.iter().filter(|l| !decision.limits.contains(l)).cloned().collect();
    }
    if would.action != decision.action {
        let message = if would.action == Action::Deny { Some(would.deny_message()) } else { would.message };
        decision.shadow = Some(Box::new(Shadow { action: would.action, decided_by: would.decided_by, message }));
    }
    decision
}

fn decide_as(policies: &[&CompiledPolicy], call: &Call<'_>, workflows: &dyn WorkflowLookup, cluster_default: Action, mode: Mode) -> Decision {
    let Call { agent, server, tool, justification, .. } = *call;
    if agent.suspended {
        return Decision::plain(Action::Deny, DecidedBy::Suspended, Some(format!("agent {}/{} is suspended", agent.namespace, agent.name)));
    }
    if !agent.may_use_server(server) {
        return Decision::plain(Action::Deny, DecidedBy::ServerNotAllowed, Some(format!("agent {} may not use MCP server {server:?}", agent.name)));
    }
    let applicable: Vec<&CompiledPolicy> = policies.iter().copied().filter(|p| p.applies_to(agent)).collect();
    if super::listing::justification_as(&applicable, server, tool, mode == Mode::AsIfEnforced) == Some(tollgate_api::Justification::Required)
        && justification.is_none_or(|j| j.trim().is_empty())
    {
        return Decision::plain(
            Action::Deny,
            DecidedBy::MissingJustification,
            Some(format!("tool {tool:?} requires a justification: pass a non-empty \"justification\" argument explaining why")),
        );
    }
    evaluate(&applicable, call, workflows, cluster_default, mode)
}
