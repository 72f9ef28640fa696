//! docs/design.md §3.1, audit mode: an audited rule or policy is evaluated, recorded as a
//! would-be decision, and decides nothing.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use tollgate_core::audit::ShadowRecord;
use tollgate_core::policy::{self, Action, DecidedBy};

const POLICY: &str = r#"
tools:
  - name: deploy
    approvalWorkflow: ops
    rules:
      - {action: Deny, when: "args.env == 'production'", message: "no production deploys"}
      - {action: RequireApproval, when: "args.env == 'staging'"}
      - {action: Allow}
  - name: wipe
    rules: [{action: Deny}]
"#;

fn audited(yaml: &str) -> String {
    format!("enforcement: Audit\n{yaml}")
}

/// The same calls through an enforced copy and an audited copy: the audited copy's decision is
/// the enforced copy's shadow, and its own action is what no policy would do (the default).
#[test]
fn an_audited_policy_decides_nothing_and_records_what_it_would_have_done() {
    let enforced = tool_policy("team-a", "p", POLICY);
    let shadow = tool_policy("team-a", "p", &audited(POLICY));
    for (tool, args) in [("deploy", r#"{"env":"production"}"#), ("deploy", r#"{"env":"staging"}"#), ("deploy", r#"{"env":"dev"}"#), ("wipe", "{}")] {
        let real = decide(&[&enforced], tool, args);
        let d = decide(&[&shadow], tool, args);
        assert_eq!(d.action, Action::Allow, "{tool} {args}: the cluster default decides");
        assert_eq!(d.decided_by, DecidedBy::ClusterDefault);
        match real.action {
            Action::Allow => assert!(d.shadow.is_none(), "{tool} {args}: nothing would change"),
            would => {
                let s = d.shadow.as_deref().unwrap();
                assert_eq!(s.action, would, "{tool} {args}");
                assert_eq!(s.decided_by, real.decided_by, "{tool} {args}");
            }
        }
    }
    let d = decide(&[&shadow], "deploy", r#"{"env":"production"}"#);
    let record = ShadowRecord::of(d.shadow.as_deref().unwrap());
    assert_eq!(
        serde_json::to_value(&record).unwrap(),
        serde_json::json!({"would": "deny", "policy": "ToolPolicy team-a/p", "rule": "spec.tools[0].rules[0]", "message": "no production deploys"})
    );
    // Held for approval as a shadow: nobody is asked (the call is allowed), the record says so.
    let d = decide(&[&shadow], "deploy", r#"{"env":"staging"}"#);
    assert_eq!((d.action, d.workflow.as_deref()), (Action::Allow, None));
    assert_eq!(d.shadow.as_deref().map(|s| s.action), Some(Action::RequireApproval));
}

/// One audited rule in an enforced policy: the call is decided as if the rule were absent.
#[test]
fn an_audited_rule_is_skipped_by_the_decision_and_kept_as_its_shadow() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: deploy
    rules:
      - {action: Deny, when: "args.env == 'production'", enforcement: Audit, message: "would stop production"}
      - {action: RequireApproval, when: "args.env == 'production'", approvalWorkflow: ops}
      - {action: Allow}
"#,
    );
    let d = decide(&[&p], "deploy", r#"{"env":"production"}"#);
    assert_eq!(d.action, Action::RequireApproval, "the enforced rule after it decides");
    assert_eq!(d.workflow.as_deref(), Some("ops"));
    let s = d.shadow.as_deref().unwrap();
    assert_eq!((s.action, s.message.as_deref()), (Action::Deny, Some("would stop production")));
    let d = decide(&[&p], "deploy", r#"{"env":"dev"}"#);
    assert_eq!((d.action, d.shadow.is_none()), (Action::Allow, true));
}

/// An audited CEL condition that fails raises only its shadow (rule 5 applies as if enforced).
#[test]
fn an_audited_condition_that_errors_raises_only_the_shadow() {
    let p = tool_policy(
        "team-a",
        "p",
        "tools: [{name: x, approvalWorkflow: ops, rules: [{action: Allow, enforcement: Audit, when: \"args.missing.deeper == 1\"}]}]",
    );
    let d = decide(&[&p], "x", "{}");
    assert_eq!(d.action, Action::Allow);
    assert!(d.error.is_none(), "the enforced decision met no error");
    assert_eq!(d.shadow.as_deref().map(|s| s.action), Some(Action::RequireApproval));
}

/// An audited guardrail (ClusterToolPolicy) under an enforced namespace policy; and an audited
/// Allow that would open what an enforced Deny closes.
#[test]
fn audited_guardrails_and_would_be_allows() {
    let guardrail = cluster_policy("no-wipe", "enforcement: Audit\ntools: [{name: wipe, rules: [{action: Deny, message: org-wide}]}]");
    let ns = tool_policy("team-a", "p", "tools: [{name: '*', rules: [{action: Allow}]}]");
    let d = decide(&[&guardrail, &ns], "wipe", "{}");
    assert_eq!(d.action, Action::Allow);
    let s = d.shadow.as_deref().unwrap();
    assert!(matches!(&s.decided_by, DecidedBy::Rule { policy, .. } if policy.name == "no-wipe"));
    assert_eq!(s.message.as_deref(), Some("org-wide"));

    let opening = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Allow, enforcement: Audit}, {action: Deny}]}]");
    let d = decide(&[&opening], "x", "{}");
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.shadow.as_deref().map(|s| s.action), Some(Action::Allow));
}

/// Audited rules hide no tool from `tools/list` and require no justification; the justification
/// they would require is in the shadow.
#[test]
fn audited_rules_hide_nothing_and_require_nothing() {
    let p = tool_policy(
        "team-a",
        "p",
        "enforcement: Audit\ntools: [{name: wipe, justification: Required, rules: [{action: Deny}]}, {name: ask, justification: Required, rules: [{action: Allow}]}]",
    );
    assert!(policy::visible(&[&p], &agent(), "github", "wipe", Action::Allow));
    assert_eq!(policy::justification_mode(&[&p], "github", "ask"), Some(policy::Justification::Optional));
    let d = decide_with(&[&p], &agent(), "github", "ask", "{}", None);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.shadow.as_deref().map(|s| (s.action, &s.decided_by)), Some((Action::Deny, &DecidedBy::MissingJustification)));
    let enforced = tool_policy("team-a", "p", "tools: [{name: wipe, rules: [{action: Deny}]}]");
    assert!(!policy::visible(&[&enforced], &agent(), "github", "wipe", Action::Allow), "the enforced copy hides it");
}

/// A policy that cannot be loaded denies everything, unless it was audited: then its deny is a
/// shadow too, and a broken rollout stops no call.
#[test]
fn an_unloadable_audited_policy_stops_nothing() {
    let id = policy::PolicyId { kind: policy::PolicyKind::ToolPolicy, namespace: Some("team-a".into()), name: "broken".into() };
    let enforced = policy::unloadable(id.clone(), false, false, "cannot be loaded".into());
    assert_eq!(decide(&[&enforced], "x", "{}").action, Action::Deny);
    let audited = policy::unloadable(id, false, true, "cannot be loaded".into());
    let d = decide(&[&audited], "x", "{}");
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.shadow.as_deref().map(|s| s.action), Some(Action::Deny));
}

#[test]
fn the_status_says_how_much_is_audited() {
    let spec = |yaml: &str| -> tollgate_api::ToolPolicySpec { serde_yaml::from_str(yaml).unwrap() };
    let summary = |yaml: &str| {
        let s = spec(yaml);
        policy::enforcement_summary(s.enforcement, &s.tools)
    };
    use tollgate_api::EnforcementSummary::*;
    assert_eq!(summary(POLICY), Enforce);
    assert_eq!(summary(&audited(POLICY)), Audit);
    assert_eq!(summary("tools: [{name: x, rules: [{action: Deny, enforcement: Audit}, {action: Allow}]}]"), Mixed);
    assert_eq!(summary("enforcement: Enforce\ntools: [{name: x, rules: [{action: Deny, enforcement: Enforce}]}]"), Enforce);
}

/// Rate limits: every matching rule's limit applies unless the call is denied anyway; an audited
/// rule's limit only in the shadow; a period that cannot be read is the field's error.
#[test]
fn limits_come_from_every_deciding_rule_and_audited_ones_stay_apart() {
    let guard = cluster_policy("guard", "tools: [{name: '*', rules: [{action: Allow, rateLimit: {calls: 100, period: 1m, per: Agent}}]}]");
    let ns = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: deploy
    rules:
      - {action: Deny, when: "args.env == 'production'"}
      - {action: Allow, when: "args.env == 'staging'", enforcement: Audit, rateLimit: {calls: 1, period: 1h}}
      - {action: Allow, rateLimit: {calls: 5, period: 30s, burst: 10}}
"#,
    );
    let d = decide(&[&guard, &ns], "deploy", r#"{"env":"dev"}"#);
    let rules: Vec<(&str, &str, u32)> = d.limits.iter().map(|l| (l.policy.name.as_str(), l.rule.as_str(), l.limit.burst)).collect();
    assert_eq!(rules, [("guard", "spec.tools[0].rules[0]", 100), ("p", "spec.tools[0].rules[2]", 10)]);
    assert!(d.audited_limits.is_empty());
    let d = decide(&[&guard, &ns], "deploy", r#"{"env":"staging"}"#);
    assert_eq!(d.limits.len(), 2, "the audited rule is skipped: the enforced one after it decides");
    assert_eq!(d.audited_limits.iter().map(|l| l.rule.as_str()).collect::<Vec<_>>(), ["spec.tools[0].rules[1]"]);
    let d = decide(&[&guard, &ns], "deploy", r#"{"env":"production"}"#);
    assert_eq!((d.action, d.limits.len()), (Action::Deny, 0), "a denied call counts in no bucket");

    let spec: tollgate_api::ToolPolicySpec = serde_yaml::from_str("tools: [{name: x, rules: [{action: Allow, rateLimit: {calls: 1, period: 1d}}]}]").unwrap();
    let err = policy::compile_tool_policy("team-a", "p", &spec).unwrap_err();
    assert_eq!(err.errors[0].path, "spec.tools[0].rules[0].rateLimit.period");
    assert!(err.errors[0].message.contains("30s, 5m or 1h"), "{err}");
}
