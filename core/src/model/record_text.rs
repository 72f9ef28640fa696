//! A model call's audit record as the audit store keeps it, written straight from the record:
//! the text `audit::bounds::sanitize` and `mcp::digest::canonical_json` would make of it as JSON
//! values, with its sender named, without building those values (every model call writes one;
//! as values they were about a twentieth of the gateway's CPU per call). Each struct here
//! declares its fields in canonical key order, so serde writes them in that order.

use super::call::{ModelCallAgent, ModelCallRecord, Tokens};
use crate::audit::{AuditDecision, ShadowRecord};
use serde::Serialize;

/// Who stored a record, as the store names it in the record (`source`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// `gateway` or `sidecar`.
    pub writer: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    agent: Agent<'a>,
    #[serde(rename = "costUSD", skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    hosted_tools: &'a [String],
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<Shadow<'a>>,
    source: Sender<'a>,
    status: u16,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<CanonicalTokens>,
    tool: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_claimed: Option<&'a str>,
    service_account: &'a str,
}

#[derive(Serialize)]
struct Shadow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    would: AuditDecision,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CanonicalTokens {
    cached_input: u64,
    input: u64,
    output: u64,
}

/// `record`'s stored text with `sender` named in it; `None` when a string in it holds what the
/// store replaces (a control character) or it is past the store's bound: the general path,
/// which cleans and cuts, takes it then.
pub fn stored_text(record: &ModelCallRecord, sender: Sender<'_>) -> Option<String> {
    // Every field named: a field added to the record must be added here too.
    let ModelCallRecord { kind, time, agent, tool, provider, decision, status, reason, tokens, cost_usd, duration_ms, hosted_tools, shadow } = record;
    let ModelCallAgent { namespace, name, service_account, pod_claimed } = agent;
    let strings = [Some(time), Some(namespace), Some(name), Some(service_account), pod_claimed.as_ref(), Some(tool), provider.as_ref(), reason.as_ref()];
    let shadow_strings = shadow.iter().flat_map(|s| [&s.policy, &s.rule, &s.message]).flatten();
    let sender_strings = [sender.namespace, sender.service_account, sender.writer];
    let clean =
        strings.into_iter().flatten().chain(hosted_tools).chain(shadow_strings).map(String::as_str).chain(sender_strings).all(crate::audit::bounds::is_clean);
    if !clean {
        return None;
    }
    let text = serde_json::to_string(&Record {
        agent: Agent { name, namespace, pod_claimed: pod_claimed.as_deref(), service_account },
        cost_usd: *cost_usd,
        decision,
        duration_ms: *duration_ms,
        hosted_tools,
        kind,
        provider: provider.as_deref(),
        reason: reason.as_deref(),
        shadow: shadow.as_ref().map(|ShadowRecord { would, policy, rule, message }| Shadow {
            message: message.as_deref(),
            policy: policy.as_deref(),
            rule: rule.as_deref(),
            would: *would,
        }),
        source: sender,
        status: *status,
        time,
        tokens: tokens.map(|Tokens { input, cached_input, output }| CanonicalTokens { cached_input, input, output }),
        tool,
    })
    .ok()?;
    (text.len() <= crate::audit::bounds::MAX_RECORD_BYTES).then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::bounds;
    use crate::mcp::digest::canonical_json;

    fn record() -> ModelCallRecord {
        ModelCallRecord {
            kind: super::super::call::RECORD_KIND,
            time: "2026-12-04T15:00:00.123456Z".into(),
            agent: ModelCallAgent { namespace: "team-a".into(), name: "coder".into(), service_account: "coder".into(), pod_claimed: None },
            tool: "gpt-4o-mini".into(),
            provider: None,
            decision: "allow",
            status: 200,
            reason: None,
            tokens: None,
            cost_usd: None,
            duration_ms: None,
            hosted_tools: Vec::new(),
            shadow: None,
        }
    }

    /// What the general path stores: the record as values, cleaned, its sender named, canonical.
    fn general(r: &ModelCallRecord, sender: Sender<'_>) -> String {
        let mut v = r.to_value();
        bounds::sanitize(&mut v);
        v["source"] = serde_json::to_value(sender).unwrap();
        canonical_json(&v)
    }

    #[test]
    fn every_field_is_written_as_the_general_path_writes_it() {
        let sender = Sender { namespace: "team-a", service_account: "coder", writer: "gateway" };
        let full = ModelCallRecord {
            agent: ModelCallAgent { pod_claimed: Some("coder-7f9c-x2".into()), ..record().agent },
            tool: "claude-sonnet-4-5 \"quoted\" \\ ünïcode 🦀".into(),
            provider: Some("anthropic".into()),
            decision: "error",
            status: 502,
            reason: Some("provider answered 502\nnewline\ttab".into()),
            tokens: Some(Tokens { input: 1200, cached_input: 300, output: 4096 }),
            cost_usd: Some(0.000_123_4),
            duration_ms: Some(812),
            hosted_tools: vec!["web_search".into(), "code_interpreter".into()],
            shadow: Some(ShadowRecord {
                would: AuditDecision::Deny,
                policy: Some("Budget team-a/daily".into()),
                rule: None,
                message: Some("would exceed the hard limit".into()),
            }),
            ..record()
        };
        let refused = ModelCallRecord { decision: "deny", status: 403, reason: Some("model not allowed".into()), cost_usd: Some(0.0), ..record() };
        for r in [record(), full, refused] {
            let text = stored_text(&r, sender).unwrap();
            assert_eq!(text, general(&r, sender));
        }
    }

    #[test]
    fn a_string_the_store_would_clean_or_a_record_past_its_bound_takes_the_general_path() {
        let sender = Sender { namespace: "team-a", service_account: "coder", writer: "gateway" };
        for dirty in ["nul\0", "escape \u{1b}[31m", "line\u{2028}separator"] {
            assert_eq!(stored_text(&ModelCallRecord { tool: dirty.into(), ..record() }, sender), None, "{dirty:?}");
            let hosted = ModelCallRecord { hosted_tools: vec![dirty.into()], ..record() };
            assert_eq!(stored_text(&hosted, sender), None, "{dirty:?} in a hosted tool");
        }
        let huge = ModelCallRecord { reason: Some("x".repeat(bounds::MAX_RECORD_BYTES)), ..record() };
        assert_eq!(stored_text(&huge, sender), None);
    }
}
