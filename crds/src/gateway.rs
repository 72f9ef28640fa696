use crate::common::{Condition, SecretKeyRef, conditions_schema};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The shared model gateway: a Deployment and Service the operator runs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Gateway",
    plural = "gateways",
    singular = "gateway",
    namespaced,
    status = "GatewayStatus",
    shortname = "tgw",
    category = "tollgate",
    doc = "The shared Tollgate model gateway (usage ledger, budgets, audit store, Slack endpoint).",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.replicas <= 1 || has(self.database)").message("SQLite (no spec.database) runs one replica: set spec.database to a PostgreSQL URL for more"))]
pub struct GatewaySpec {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,
    /// The Tollgate image; the operator's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// A PostgreSQL URL from a Secret; SQLite on a volume when absent (one replica only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<GatewaySlack>,
    /// The SQLite ledger's volume (without `database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<GatewayStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// HTTPS for agents' SDKs and sidecars' audit batches. Absent: plain HTTP (agent keys and
    /// audit records cross the network in the clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    /// A `kubernetes.io/tls` Secret of the gateway's namespace issued elsewhere (cert-manager),
    /// with `tls.crt`, `tls.key` and the issuing CA in `ca.crt`. Absent: the operator issues
    /// one from a CA of its own into `<name>-gateway-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStorage {
    /// The claim's size, `1Gi` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[mk])?$"))]
    pub size: Option<String>,
    /// The cluster's default class when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn one() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// A key holding a `postgres://` URL.
    pub url_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySlack {
    /// The app's signing secret, to verify interaction payloads.
    pub signing_secret_ref: SecretKeyRef,
    /// The bot token, to post and update approval messages.
    pub bot_token_secret_ref: SecretKeyRef,
    /// Slack's Web API base URL; override only to test against a local fake.
    #[serde(default, rename = "apiBaseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub api_base_url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// In-cluster URL agents' model traffic goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The Ed25519 public key (base64) the gateway signs the audit chain's checkpoints with:
    /// what `tollgate audit verify --key` trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_public_key: Option<String>,
}
