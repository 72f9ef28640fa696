//! Pieces shared by several kinds.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

/// A key of a Secret in the object's namespace. Both become a file path in the sidecar, so both
/// follow Kubernetes' own rules: a DNS-1123 name, and a key of `[-._a-zA-Z0-9]` that is not `.`,
/// `..` or starting with `..`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.key != '.' && !self.key.startsWith('..')").message("key must not be '.', '..' or start with '..'"))]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A key of a Vault / OpenBao KV v2 secret, read with Kubernetes auth.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultRef {
    /// KV v2 path, e.g. `secret/data/tollgate/github`.
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
    /// Field within the secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Vault role for Kubernetes auth; the gateway's default role when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub role: Option<String>,
}

/// Where a secret value comes from: a Kubernetes Secret or Vault, exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.secretKeyRef) != has(self.vault)").message("set exactly one of secretKeyRef or vault"))]
pub struct CredentialSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultRef>,
}

/// The schema of `status.conditions`: a list-map keyed by `type`, as `kubectl` and Argo CD expect.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema.insert("maxItems".into(), 16.into());
    schema
}

/// Whether an object's decisions are carried out (`Enforce`, the default) or only recorded as what
/// they would have been (`Audit`): the way to roll a policy or a budget out, as
/// `ValidatingAdmissionPolicy` is rolled out with `validationActions: [Audit]`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Enforcement {
    #[default]
    Enforce,
    Audit,
}

/// How much of an object is audited only: all of it, none of it, or some of its rules.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EnforcementSummary {
    Enforce,
    Audit,
    /// Enforced, with some rules audited only.
    Mixed,
}

/// How many model calls, and tokens, per minute, counted in one-minute windows across every
/// gateway replica (through the ledger's database).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRateLimit {
    /// Calls started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub requests_per_minute: Option<u32>,
    /// Input and output tokens per minute: a call counts at most its bound while it runs, and
    /// what it used once it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000_000u64))]
    pub tokens_per_minute: Option<u64>,
    /// `Audit`: calls past the limit are served and recorded. (A `Budget`'s limit follows the
    /// budget's own `enforcement` too.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
}

/// What audited rules (or an audited budget) would have done, counted from the audit store over
/// the recent `window`: what switching to `Enforce` would change.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowCounts {
    /// The window counted, as a duration (`1h`).
    pub window: String,
    /// Calls that would have been denied (for a budget: refused).
    pub would_deny: i64,
    /// Calls that would have been held for approval.
    pub would_require_approval: i64,
    /// Calls that would have been allowed, which the enforced rules deny or hold.
    pub would_allow: i64,
    /// The latest such call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Time>,
}

/// Any JSON object, kept as it is (tool arguments).
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Looks up a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of that type has status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}
