//! The audit record (docs/design.md §3.5): one per decision and one per outcome, written by the
//! sidecar as a JSON line and later shipped to the gateway's hash-chained store. The arguments
//! and the justification are in the decision record alone; the outcome record names it.

pub mod bounds;
pub mod chain;
pub mod checkpoint;
pub mod line;
pub mod redact;
pub mod shadow;
use crate::json_tree::Tree;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// What the policy decided, before anything ran.
    Decision,
    /// What happened: forwarded and answered, refused, timed out.
    Outcome,
}

impl RecordKind {
    /// The name records use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Decision => "decision",
            RecordKind::Outcome => "outcome",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    Allow,
    Deny,
    RequireApproval,
}

impl AuditDecision {
    pub const ALL: [AuditDecision; 3] = [AuditDecision::Allow, AuditDecision::Deny, AuditDecision::RequireApproval];

    /// The name records and spans use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::RequireApproval => "require_approval",
        }
    }
}

impl From<tollgate_api::Action> for AuditDecision {
    fn from(a: tollgate_api::Action) -> Self {
        match a {
            tollgate_api::Action::Allow => AuditDecision::Allow,
            tollgate_api::Action::Deny => AuditDecision::Deny,
            tollgate_api::Action::RequireApproval => AuditDecision::RequireApproval,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Forwarded,
    Denied,
    Approved,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalCancelled,
    UpstreamError,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Forwarded,
        Outcome::Denied,
        Outcome::Approved,
        Outcome::ApprovalDenied,
        Outcome::ApprovalExpired,
        Outcome::ApprovalCancelled,
        Outcome::UpstreamError,
        Outcome::Timeout,
    ];

    /// The name records and spans use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Denied => "denied",
            Outcome::Approved => "approved",
            Outcome::ApprovalDenied => "approval_denied",
            Outcome::ApprovalExpired => "approval_expired",
            Outcome::ApprovalCancelled => "approval_cancelled",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub service_account: String,
}

/// JSON kept as its text: written verbatim and compared as text.
#[derive(Debug, Clone)]
pub struct RawJson(std::sync::Arc<serde_json::value::RawValue>);

impl RawJson {
    /// The JSON text of `value` (`null` if it cannot be serialized).
    pub fn of(value: &impl Serialize) -> RawJson {
        RawJson::from(serde_json::value::to_raw_value(value).unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// `value` redacted, as a record's JSON text: `raw` (its text as received) when redaction would
/// change nothing, else a redacted rendering. Either is valid JSON on one line.
pub fn redacted_text<'a>(value: &Tree<'_>, raw: Option<&'a str>) -> std::borrow::Cow<'a, str> {
    match raw.filter(|raw| crate::audit::redact::untouched(value, raw)) {
        Some(text) => std::borrow::Cow::Borrowed(text),
        // Redaction is rare: the tree is copied into a value for it.
        None => std::borrow::Cow::Owned(serde_json::to_string(&crate::audit::redact::Redacted(&value.to_value())).unwrap_or_else(|_| "null".to_owned())),
    }
}

impl From<Box<serde_json::value::RawValue>> for RawJson {
    fn from(raw: Box<serde_json::value::RawValue>) -> RawJson {
        RawJson(std::sync::Arc::from(raw))
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawJson, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(deserializer).map(RawJson::from)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339.
    pub time: String,
    pub kind: RecordKind,
    /// Ties a call's decision, approval and outcome records together.
    pub correlation_id: String,
    pub agent: AgentRef,
    pub server: String,
    pub tool: String,
    pub arguments_digest: String,
    /// Redacted (see [`crate::audit::redact`]), kept as JSON text. A decision record's only: an
    /// outcome record names its decision record (`correlation_id`, `arguments_digest`) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<RawJson>,
    /// A decision record's only, as the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub decision: AuditDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// A CEL error that raised the decision, or the upstream failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a decision record: what audited rules would have decided, where that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord>,
}

/// A would-be decision as the audit keeps it: what `Enforce` would have done instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub would: AuditDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ShadowRecord {
    /// The record of a policy decision's shadow.
    pub fn of(shadow: &crate::policy::Shadow) -> ShadowRecord {
        let (policy, rule) = crate::policy::attribution(&shadow.decided_by);
        ShadowRecord { would: shadow.action.into(), policy, rule, message: shadow.message.clone() }
    }
}
