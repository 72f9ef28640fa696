use crate::common::{Condition, Enforcement, EnforcementSummary, LabelSelector, ShadowCounts, conditions_schema};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rules for the MCP tools of the agents in this namespace that `agentSelector` picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ToolPolicy",
    plural = "toolpolicies",
    singular = "toolpolicy",
    namespaced,
    status = "ToolPolicyStatus",
    shortname = "tp",
    category = "tollgate",
    doc = "Allow, deny, or hold for approval the MCP tool calls of the agents in this namespace.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.enforcement"),
    printcolumn(name = "Fallback", type_ = "boolean", json_path = ".spec.fallback"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rules"),
    printcolumn(name = "Agents", type_ = "integer", json_path = ".status.matchedAgents"),
    printcolumn(name = "Would-Deny", type_ = "integer", json_path = ".status.shadow.wouldDeny"),
    printcolumn(name = "Would-Hold", type_ = "integer", json_path = ".status.shadow.wouldRequireApproval"),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ToolPolicySpec {
    /// Which `ManagedAgent`s (by their labels) this policy governs; empty selects all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_selector: Option<LabelSelector>,
    /// A fallback policy is consulted only when no other policy decided.
    #[serde(default)]
    pub fallback: bool,
    /// `Audit`: every rule is evaluated and its would-be outcome recorded, nothing enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Tool entries; the first entry matching a call's server and tool is used.
    #[schemars(length(min = 1, max = 256))]
    pub tools: Vec<ToolRules>,
}

/// Guardrails or defaults for the agents of every namespace that `namespaceSelector` picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ClusterToolPolicy",
    plural = "clustertoolpolicies",
    singular = "clustertoolpolicy",
    status = "ToolPolicyStatus",
    shortname = "ctp",
    category = "tollgate",
    doc = "Cluster-wide guardrails (or, with fallback, defaults) for MCP tool calls.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.enforcement"),
    printcolumn(name = "Fallback", type_ = "boolean", json_path = ".spec.fallback"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rules"),
    printcolumn(name = "Agents", type_ = "integer", json_path = ".status.matchedAgents"),
    printcolumn(name = "Would-Deny", type_ = "integer", json_path = ".status.shadow.wouldDeny"),
    printcolumn(name = "Would-Hold", type_ = "integer", json_path = ".status.shadow.wouldRequireApproval"),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterToolPolicySpec {
    /// Which namespaces (by their labels) this policy applies in; empty selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Which `ManagedAgent`s (by their labels) this policy governs; empty selects all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_selector: Option<LabelSelector>,
    /// A fallback policy is consulted only when no other policy decided.
    #[serde(default)]
    pub fallback: bool,
    /// `Audit`: every rule is evaluated and its would-be outcome recorded, nothing enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Tool entries; the first entry matching a call's server and tool is used.
    #[schemars(length(min = 1, max = 256))]
    pub tools: Vec<ToolRules>,
}

/// The rules for the tools that `server` and `name` match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolRules {
    /// Glob over `MCPServer` names (`*`, `?`); `*` matches every server.
    #[serde(default = "star")]
    #[schemars(length(min = 1, max = 253))]
    pub server: String,
    /// Glob over tool names (`*`, `?`), e.g. `delete_*`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Whether the agent must (`Required`) or may (`Optional`) explain the call in a
    /// `justification` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    /// The `ApprovalWorkflow` for `RequireApproval` rules that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub approval_workflow: Option<String>,
    /// Tried in order; the first rule that matches decides for this policy.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<Rule>,
}

fn star() -> String {
    "*".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    /// A CEL condition over `args`, `tool`, `agent`, `justification` and `now`; the rule matches
    /// when it is true (or errors: errors fail closed). No condition: the rule always matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub when: Option<String>,
    /// Shown to the agent when this rule denies (`Access denied: <message>`) and to approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Overrides the entry's `approvalWorkflow` for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub approval_workflow: Option<String>,
    /// `Audit`: the rule is evaluated and its would-be outcome recorded, the call decided as if
    /// the rule were absent. A policy in `Audit` audits every rule, whatever they say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// At most so many of the calls this rule matches (and does not deny), per pod: each
    /// sidecar counts its own pod's calls. Over it, a call is refused saying when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `calls` per `period` on average, `burst` at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[schemars(range(min = 1, max = 1_000_000))]
    pub calls: u32,
    /// `30s`, `5m`, `1h` (at most `24h`).
    #[schemars(pattern(r"^[1-9][0-9]{0,4}[smh]$"))]
    pub period: String,
    /// Calls allowed at once; `calls` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<u32>,
    /// What is counted together: each `Tool` (the default), each `Server`, or the whole `Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<RateLimitScope>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RateLimitScope {
    Agent,
    Server,
    Tool,
}

/// What a rule does with a call. Ordered from least to most restrictive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Action {
    Allow,
    RequireApproval,
    Deny,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Justification {
    Required,
    Optional,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`; when false, reason `InvalidExpression` and the field path in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// How many rules the policy has across its tool entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<i32>,
    /// How many `ManagedAgent`s the policy currently applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_agents: Option<i32>,
    /// Whether the policy is enforced, audited only, or enforced with some rules audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<EnforcementSummary>,
    /// What its audited rules would have done lately (written by the gateway from the audit store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowCounts>,
}
