use crate::common::{Condition, Enforcement, LabelSelector, ShadowCounts, Time, conditions_schema};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A spend limit over the agents `agentSelector` picks, per period.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Budget",
    plural = "budgets",
    singular = "budget",
    namespaced,
    status = "BudgetStatus",
    shortname = "bud",
    category = "tollgate",
    doc = "A model spend limit for the agents it selects, per period.",
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.period"),
    printcolumn(name = "Spent", type_ = "number", json_path = ".status.spentUSD"),
    printcolumn(name = "Limit", type_ = "number", json_path = ".spec.hardLimitUSD"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.enforcement"),
    printcolumn(name = "Would-Deny", type_ = "integer", json_path = ".status.shadow.wouldDeny"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.softLimitUSD) || self.softLimitUSD <= self.hardLimitUSD").message("softLimitUSD must not exceed hardLimitUSD"))]
pub struct BudgetSpec {
    /// Which `ManagedAgent`s' spend counts; empty selects every agent in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_selector: Option<LabelSelector>,
    pub period: BudgetPeriod,
    /// Above it calls are still served, with a warning header.
    #[serde(default, rename = "softLimitUSD", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub soft_limit_usd: Option<f64>,
    /// No call may start that could take spend past it.
    #[serde(rename = "hardLimitUSD")]
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub hard_limit_usd: f64,
    /// Model globs the budget counts; empty counts every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub models: Vec<String>,
    /// `Audit`: the budget counts and reports as an enforced one would, and never refuses a call;
    /// the calls it would have refused are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Calls and tokens per minute of all the agents the budget selects together (of the models
    /// it counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::common::ModelRateLimit>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BudgetPeriod {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Total,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BudgetState {
    #[default]
    Ok,
    SoftExceeded,
    HardExceeded,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, rename = "spentUSD", skip_serializing_if = "Option::is_none")]
    pub spent_usd: Option<f64>,
    #[serde(default, rename = "remainingUSD", skip_serializing_if = "Option::is_none")]
    pub remaining_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BudgetState>,
    /// `Audit` while the budget only records what it would refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// The calls it would have refused lately, while audited (written from the audit store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowCounts>,
}
