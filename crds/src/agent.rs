use crate::common::{Condition, LabelSelector, Time, conditions_schema};
use crate::policy::Action;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An agent identity: which pods it is, which MCP servers and models it may use, and its kill switch.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ManagedAgent",
    plural = "managedagents",
    singular = "managedagent",
    namespaced,
    status = "ManagedAgentStatus",
    shortname = "ma",
    category = "tollgate",
    doc = "An AI agent under Tollgate: its pods, the MCP servers and models it may use, its kill switch.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.pods"),
    printcolumn(name = "Spend", type_ = "number", json_path = ".status.spendUSD"),
    printcolumn(name = "Audit", type_ = "string", json_path = r#".status.conditions[?(@.type=="AuditComplete")].reason"#),
    printcolumn(name = "Last Activity", type_ = "date", json_path = ".status.lastActivityTime", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAgentSpec {
    /// The agent's pods, by label.
    pub selector: LabelSelector,
    /// The service account the agent's pods run as; its requests are attributed to it and it may
    /// never approve them.
    #[serde(default = "default_service_account")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: String,
    /// `MCPServer` names in this namespace the agent may use (globs allowed); empty means none.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub mcp_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelAccess>,
    /// What happens to a call no policy decided; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
    /// The kill switch: every tool and model call is refused while true.
    #[serde(default)]
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<Injection>,
}

fn default_service_account() -> String {
    "default".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.hostedTools) || self.hostedTools.all(t, !t.startsWith('mcp'))").message("hostedTools cannot allow MCP through the provider (mcp, mcp_toolset): a provider calling an MCP server is seen by no policy, approval or audit; give the agent the MCP server through the sidecar (spec.mcpServers)"))]
pub struct ModelAccess {
    /// Model names or aliases (globs allowed) the agent may call through the gateway.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub allowed: Vec<String>,
    /// Tools the *provider* runs, or defines, that the agent may ask for by type: OpenAI
    /// `web_search`, `file_search`, `code_interpreter`, `image_generation`, `computer_use_preview`,
    /// `local_shell`…; Anthropic `web_search`, `web_fetch`, `code_execution`, `computer`, `bash`,
    /// `text_editor`… A dated type (`web_search_20250305`) is allowed by its name without the date
    /// or in full. Function tools, which the agent runs itself, need no entry. None by default:
    /// a request naming any other tool type is refused. MCP through the provider (OpenAI `mcp`
    /// tools and connectors, Anthropic `mcp_servers`) is never allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64), pattern(r"^[a-z][a-z0-9_]*$")))]
    pub hosted_tools: Vec<String>,
    /// The agent's model calls and tokens per minute, across every pod and gateway replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::common::ModelRateLimit>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    /// Redirect the pod's outbound TCP through the sidecar (an init container with `NET_ADMIN`
    /// installs iptables rules), so a connection straight to an MCP server's address is decided
    /// as on `/mcp/<server>` and the sidecar cannot be bypassed.
    #[serde(default)]
    pub transparent: bool,
    /// In transparent mode, what happens to connections to destinations that are not MCP servers.
    #[serde(default)]
    pub other_destinations: OtherDestinations,
    /// Keep the service account token in the app containers, for an agent that calls the
    /// Kubernetes API itself. Its containers can then act as the agent's service account directly
    /// (create ApprovalRequests as the sidecar does, read what its RBAC allows); only the sidecar
    /// can still call MCP servers' credentials, which stay mounted into the sidecar alone.
    #[serde(default)]
    pub keep_service_account_token: bool,
    /// The injected sidecar's resources, instead of the chart's `injection.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OtherDestinations {
    /// Passed through untouched (the default).
    #[default]
    PassThrough,
    /// Refused: the agent may reach MCP servers (through the sidecar) and loopback only, besides
    /// the chart's excluded CIDRs and ports.
    Refuse,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAgentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Running pods the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AgentCredentials>,
    /// Spend in USD over the current budget periods.
    #[serde(default, rename = "spendUSD", skip_serializing_if = "Option::is_none")]
    pub spend_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
}

/// Where the agent's gateway key lives. The key itself is only in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredentials {
    pub secret_name: String,
    pub key_prefix: String,
    /// `sha256:` of the key.
    pub key_hash: String,
}
