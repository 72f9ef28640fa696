use crate::common::{Condition, SecretKeyRef, conditions_schema};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who approves held calls, how many of them must agree, and for how long a request stays open.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ApprovalWorkflow",
    plural = "approvalworkflows",
    singular = "approvalworkflow",
    namespaced,
    status = "ApprovalWorkflowStatus",
    shortname = "awf",
    category = "tollgate",
    doc = "Who approves held tool calls, how many must agree, and how long a request stays open.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Approvers", type_ = "integer", json_path = ".status.approvers"),
    printcolumn(name = "Quorum", type_ = "integer", json_path = ".spec.requiredApprovals"),
    printcolumn(name = "Timeout", type_ = "integer", json_path = ".spec.timeoutSeconds"),
    printcolumn(name = "Async", type_ = "boolean", json_path = ".spec.async"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.escalation) || !has(self.escalation.afterSeconds) || self.escalation.afterSeconds <= self.timeoutSeconds").message("escalation.afterSeconds must not exceed timeoutSeconds"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.approvers.ai) || !has(self.approvers.ai.countsTowardQuorum) || !self.approvers.ai.countsTowardQuorum || (self.requiredApprovals >= 2 && (!has(self.escalation) || !has(self.escalation.requiredApprovals) || self.escalation.requiredApprovals >= 2))").message("an AI reader that counts toward the quorum needs requiredApprovals of at least 2 (and so does an escalation): otherwise a prompt-injected request could approve itself through the reader alone"))]
#[x_kube(validation = kube::core::Rule::new("size(self.approvers.users) + size(self.approvers.groups) + (has(self.approvers.slack) ? size(self.approvers.slack.userIds) : 0) >= self.requiredApprovals || size(self.approvers.groups) > 0").message("fewer approvers than requiredApprovals: the quorum could never be reached"))]
pub struct ApprovalWorkflowSpec {
    pub approvers: Approvers,
    /// How many distinct approvers must approve. One Deny from any approver denies.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub required_approvals: i32,
    /// Seconds from the request until it expires (or escalates, with `escalation`).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 30, max = 2_592_000))]
    pub timeout_seconds: i32,
    /// Asks further approvers once, when nobody decided in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// Answer the agent at once with a pending result it polls with `get_approval_status`,
    /// instead of holding the call open.
    #[serde(default)]
    pub r#async: bool,
    /// Approvers must give a reason with every decision.
    #[serde(default)]
    pub require_reason: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

fn one() -> i32 {
    1
}
fn default_timeout() -> i32 {
    300
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvers {
    /// Kubernetes user names, as the API server authenticates them.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub users: Vec<String>,
    /// Kubernetes groups whose members may approve.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackApprovers>,
    /// An AI first reader: a model, called through the Tollgate gateway under an agent's key
    /// (so under that agent's allowed models and budgets), reads each held call with these
    /// instructions and approves or denies it with a reason and a confidence; below
    /// `minConfidencePercent`, or on any error, it abstains and the people decide. Its decision
    /// is recorded as `ai:<workflow>`. Read once, when a request is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiReader>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiReader {
    /// The `ManagedAgent` of this namespace whose gateway key the reader calls with: its
    /// `models.allowed` and its Budgets bound the reader.
    #[schemars(length(min = 1, max = 253))]
    pub agent: String,
    /// The model to ask (a name or alias its ModelProvider lists), through the OpenAI API.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// What the reader is told to look for, e.g. "Approve read-only operations; deny anything
    /// that deletes data".
    #[schemars(length(min = 1, max = 8192))]
    pub instructions: String,
    /// Below this confidence (0–100) the reader abstains.
    #[serde(default = "eighty")]
    #[schemars(range(min = 0, max = 100))]
    pub min_confidence_percent: i32,
    /// Whether its Approve counts toward `requiredApprovals` and its Deny vetoes; otherwise its
    /// decision is advice shown to the people, who decide.
    #[serde(default)]
    pub counts_toward_quorum: bool,
}

fn eighty() -> i32 {
    80
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackApprovers {
    /// Slack member ids (`U…`) whose button clicks count as decisions.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 32), pattern(r"^[UW][A-Z0-9]+$")))]
    pub user_ids: Vec<String>,
    /// The Kubernetes user each Slack member is, where one person is both: their click and their
    /// `kubectl approve` are then one person's one vote. (A person listed both ways and not
    /// mapped here could vote twice: once as each.)
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub kubernetes_users: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.approvers.ai)").message("the AI first reader reads a request once, when it is created: set it on spec.approvers.ai"))]
pub struct Escalation {
    /// Seconds after the request at which it escalates, if still pending; the deadline then moves
    /// to the escalation time plus `timeoutSeconds`. Defaults to `timeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 2_592_000))]
    pub after_seconds: Option<i32>,
    /// Added to the workflow's approvers once escalated.
    pub approvers: Approvers,
    /// The quorum once escalated; the workflow's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub required_approvals: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackNotify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookNotify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailNotify>,
}

/// Email to the approvers, through the SMTP server the operator is configured with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailNotify {
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 254), pattern(r"^[^@\s]+@[^@\s]+$")))]
    pub to: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackNotify {
    /// Channel id (`C…`) or name.
    #[schemars(length(min = 1, max = 80))]
    pub channel: String,
    /// The bot token; the gateway's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookNotify {
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: String,
    /// Key for an HMAC-SHA256 signature of each body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalWorkflowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Requests of this workflow that are still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i32>,
    /// Approvers named by user name or Slack member id (escalation included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<i32>,
    /// Groups whose members may approve (escalation included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_groups: Option<i32>,
}
