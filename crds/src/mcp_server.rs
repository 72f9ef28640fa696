use crate::common::{Condition, SecretKeyRef, Time, VaultRef, conditions_schema};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An upstream MCP server that agents reach through their sidecar.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    root = "McpServer",
    plural = "mcpservers",
    singular = "mcpserver",
    namespaced,
    status = "McpServerStatus",
    shortname = "mcps",
    category = "tollgate",
    doc = "An upstream MCP server that agents reach through their Tollgate sidecar.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service.name"),
    printcolumn(name = "Tools", type_ = "integer", json_path = ".status.toolCount"),
    printcolumn(name = "Server", type_ = "string", json_path = ".status.serverInfo.name", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.url) != has(self.service)").message("set exactly one of url or service"))]
pub struct McpServerSpec {
    /// Full URL of the server's Streamable HTTP endpoint, e.g. `http://github-mcp.tools:8080/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub url: Option<String>,
    /// A Service in the same namespace that serves MCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
    /// The MCP transport. Only Streamable HTTP is supported.
    #[serde(default)]
    pub transport: McpTransport,
    /// Headers sent to the server on every request, e.g. an `Authorization` token. The sidecar
    /// reads a Secret's value from the Secret mounted into its own container only
    /// (`<credentials-dir>/<secret>/<key>`); the agent never sees it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HeaderSource>,
    /// How long one request to the server may take before the agent gets an error naming it.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// TLS to an `https://` server: the platform's roots are trusted, plus this bundle if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// PEM CA certificates trusted for this server besides the platform's, from a Secret or a
    /// ConfigMap of the server's namespace (mounted into the sidecar's container only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleSource>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("set exactly one of secretKeyRef or configMapKeyRef"))]
pub struct CaBundleSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<SecretKeyRef>,
}

fn default_timeout_seconds() -> i32 {
    30
}

impl McpServerSpec {
    /// The server's Streamable HTTP endpoint: its `url`, or its Service's cluster DNS name.
    pub fn endpoint(&self, namespace: &str) -> Option<String> {
        match (&self.url, &self.service) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(svc)) => Some(format!("http://{}.{namespace}.svc:{}{}", svc.name, svc.port, svc.path)),
            (None, None) => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTarget {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path of the MCP endpoint.
    #[serde(default = "default_mcp_path")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    pub path: String,
}

fn default_mcp_path() -> String {
    "/mcp".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum McpTransport {
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
}

/// One header whose value comes from a Secret or Vault; values never appear in the object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretKeyRef) != has(self.vault)").message("set exactly one of secretKeyRef or vault"))]
pub struct HeaderSource {
    /// Header name, e.g. `Authorization`.
    #[schemars(length(min = 1, max = 256), pattern(r"^[A-Za-z0-9-]+$"))]
    pub name: String,
    /// Prepended to the secret value, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What the server said of itself at `initialize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<ServerInfo>,
    /// Tools the server listed at the last discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<DiscoveredTool>,
    /// How many tools it listed (a column of `kubectl get mcpservers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_discovery_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `sha256:` of the canonical input schema; a change shows the tool changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_digest: Option<String>,
}
