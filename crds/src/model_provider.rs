use crate::common::{Condition, CredentialSource, conditions_schema};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An upstream model API the gateway forwards to, with its models' prices.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelProvider",
    plural = "modelproviders",
    singular = "modelprovider",
    namespaced,
    status = "ModelProviderStatus",
    shortname = "mp",
    category = "tollgate",
    doc = "An upstream model API (OpenAI, Anthropic or OpenAI-compatible) and its models' prices.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseURL"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderSpec {
    pub r#type: ProviderType,
    /// e.g. `https://api.openai.com/v1`.
    #[serde(rename = "baseURL")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://"))]
    pub base_url: String,
    /// The provider's API key; read by the gateway at use time, never shown to agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialSource>,
    #[schemars(length(min = 1, max = 256))]
    pub models: Vec<ModelSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    Openai,
    Anthropic,
    OpenaiCompatible,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The provider's model name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Other names agents may use for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// The most output tokens one answer of this model may make. The gateway reserves a call's
    /// cost for this many output tokens when the request sets no lower limit, and sends that
    /// limit with the request, so no call costs more than it reserved. 4096 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_output_tokens: Option<u32>,
}

/// USD per million tokens.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    #[serde(rename = "inputPerMillionUSD")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub input_per_million_usd: f64,
    #[serde(rename = "outputPerMillionUSD")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub output_per_million_usd: f64,
    /// Cached input tokens; the input price when absent.
    #[serde(default, rename = "cachedInputPerMillionUSD", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub cached_input_per_million_usd: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
