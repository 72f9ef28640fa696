use crate::common::{Condition, Time, conditions_schema, free_form_object};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One held tool call. Created by the sidecar; its spec never changes; people append decisions to
/// its status and the operator moves its phase.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ApprovalRequest",
    plural = "approvalrequests",
    singular = "approvalrequest",
    namespaced,
    status = "ApprovalRequestStatus",
    shortname = "ar",
    category = "tollgate",
    doc = "One tool call held for people's approval. Its spec is immutable.",
    printcolumn(name = "Tool", type_ = "string", json_path = ".spec.tool"),
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server", priority = 1),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agent"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Approvals", type_ = "string", json_path = ".status.approvals"),
    printcolumn(name = "Workflow", type_ = "string", json_path = ".spec.workflow", priority = 1),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec is immutable: an approval binds to the exact call it was created for"))]
pub struct ApprovalRequestSpec {
    /// The `ManagedAgent` that made the call.
    #[schemars(length(min = 1, max = 253))]
    pub agent: String,
    /// The agent's service account; it may never decide its own requests.
    #[schemars(length(min = 1, max = 253))]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub pod: Option<String>,
    /// The sidecar instance that holds the call; only it may execute the call, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub sidecar_instance: Option<String>,
    /// The `MCPServer` the call goes to.
    #[schemars(length(min = 1, max = 253))]
    pub server: String,
    #[schemars(length(min = 1, max = 256))]
    pub tool: String,
    /// The call's arguments, with sensitive values redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub arguments: Option<serde_json::Value>,
    /// `sha256:` of the canonical, unredacted arguments; the held call runs only if it matches.
    #[schemars(pattern(r"^sha256:[0-9a-f]{64}$"))]
    pub arguments_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub justification: Option<String>,
    /// The policy and rule that held the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// Field path of the rule, e.g. `spec.tools[2].rules[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub rule: Option<String>,
    /// Why the rule held the call (its message, or the CEL error that raised it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub message: Option<String>,
    /// The `ApprovalWorkflow` in this namespace that decides.
    #[schemars(length(min = 1, max = 253))]
    pub workflow: String,
    pub requested_at: Time,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub kind: PolicyKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Empty for a `ClusterToolPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum PolicyKind {
    ClusterToolPolicy,
    ToolPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Phase {
    pub fn is_final(self) -> bool {
        !matches!(self, Phase::Pending)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Pending => "Pending",
            Phase::Approved => "Approved",
            Phase::Denied => "Denied",
            Phase::Expired => "Expired",
            Phase::Cancelled => "Cancelled",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Verdict {
    Approve,
    Deny,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Kubectl,
    Slack,
    Api,
    /// The workflow's AI first reader, written by the operator.
    Ai,
    /// `kubectl approve ui`: a person, in the browser page that acts with their credentials.
    Browser,
}

/// One person's decision. Appended through the status subresource; never edited.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecision {
    /// The deciding user, exactly as the API server authenticates them
    /// (`slack:<member id>` for a Slack click relayed by the gateway).
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    pub decision: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    pub time: Time,
    #[serde(default)]
    pub via: Via,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    pub channel: NotificationChannel,
    /// Where it went: a Slack channel or a webhook host.
    #[schemars(length(max = 256))]
    pub target: String,
    /// The sent message's id (Slack `ts`), to update it when the phase changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub message_id: Option<String>,
    pub sent_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub error: Option<String>,
    /// The request's stage this record is about (`Pending/0`, `Escalated`, `Approved`…): told
    /// when `error` is empty, being retried otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub event: Option<String>,
    /// Attempts at `event` so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationChannel {
    Slack,
    Webhook,
    Email,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Owned by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Append-only, one per person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "decisions_schema")]
    pub decisions: Vec<ApprovalDecision>,
    /// Counted approvals over the quorum, e.g. `1/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notifications: Vec<NotificationRecord>,
}

/// Decisions are a list-map keyed by `user`: the API server itself refuses a second decision by
/// the same person.
fn decisions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<ApprovalDecision>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["user"]));
    schema.insert("maxItems".into(), 64.into());
    schema
}
