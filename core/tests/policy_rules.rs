//! DESIGN §3.1, one test (at least) per numbered rule, plus the cases that make rules hard.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use tollgate_core::policy::{self, Action, DecidedBy, PolicyKind};

const BASIC: &str = r#"
tools:
  - name: read_*
    rules: [{action: Allow}]
  - name: delete_repo
    rules: [{action: Deny, message: "never delete repositories"}]
  - name: deploy
    approvalWorkflow: prod-deploy
    rules:
      - action: RequireApproval
        when: "args.env == 'production'"
        message: production deploys need approval
      - action: Allow
"#;

// Rule 1: applicable policies.
#[test]
fn rule1_policies_apply_by_namespace_and_selectors() {
    let same_ns = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Deny}]}]");
    let other_ns = tool_policy("team-b", "p", "tools: [{name: x, rules: [{action: Deny}]}]");
    let matching = tool_policy("team-a", "m", "agentSelector: {matchLabels: {team: a}}\ntools: [{name: x, rules: [{action: Deny}]}]");
    let not_matching = tool_policy("team-a", "n", "agentSelector: {matchLabels: {team: b}}\ntools: [{name: x, rules: [{action: Deny}]}]");
    let expr = tool_policy(
        "team-a",
        "e",
        "agentSelector: {matchExpressions: [{key: tier, operator: In, values: [prod, staging]}]}\ntools: [{name: x, rules: [{action: Deny}]}]",
    );
    let cluster_all = cluster_policy("all", "tools: [{name: x, rules: [{action: Deny}]}]");
    let cluster_prod = cluster_policy("prod", "namespaceSelector: {matchLabels: {env: prod}}\ntools: [{name: x, rules: [{action: Deny}]}]");
    let cluster_dev = cluster_policy("dev", "namespaceSelector: {matchLabels: {env: dev}}\ntools: [{name: x, rules: [{action: Deny}]}]");
    let a = agent();
    assert!(same_ns.applies_to(&a));
    assert!(!other_ns.applies_to(&a));
    assert!(matching.applies_to(&a));
    assert!(!not_matching.applies_to(&a));
    assert!(expr.applies_to(&a));
    assert!(cluster_all.applies_to(&a));
    assert!(cluster_prod.applies_to(&a));
    assert!(!cluster_dev.applies_to(&a));
    // A policy in another namespace has no effect on the decision.
    assert_eq!(decide(&[&other_ns], "x", "{}").action, Action::Allow);
    assert_eq!(decide(&[&cluster_dev, &not_matching], "x", "{}").action, Action::Allow);
    assert_eq!(decide(&[&same_ns], "x", "{}").action, Action::Deny);
}

// Rule 2: first matching entry, first matching rule.
#[test]
fn rule2_first_entry_and_first_rule_decide() {
    let p = tool_policy("team-a", "p", BASIC);
    let cases = [
        ("read_file", "{}", Action::Allow),
        ("delete_repo", "{}", Action::Deny),
        ("deploy", r#"{"env":"production"}"#, Action::RequireApproval),
        ("deploy", r#"{"env":"staging"}"#, Action::Allow),
        ("unlisted", "{}", Action::Allow), // no entry: cluster default
    ];
    for (tool, args, want) in cases {
        assert_eq!(decide(&[&p], tool, args).action, want, "{tool} {args}");
    }
    let d = decide(&[&p], "delete_repo", "{}");
    assert_eq!(d.message.as_deref(), Some("never delete repositories"));
    assert_eq!(d.decided_by, DecidedBy::Rule { policy: p.id.clone(), rule: "spec.tools[1].rules[0]".into(), fallback: false });
}

#[test]
fn rule2_first_match_wins_though_a_later_rule_would_allow() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: "*"
    rules:
      - {action: Deny, when: "tool.name.startsWith('drop_')", message: no drops}
      - {action: Allow}
  - name: drop_table
    rules: [{action: Allow}]
"#,
    );
    // The second entry would allow, but the first entry matches first.
    assert_eq!(decide(&[&p], "drop_table", "{}").action, Action::Deny);
    // Within an entry: an earlier Allow beats a later Deny.
    let q = tool_policy("team-a", "q", "tools: [{name: x, rules: [{action: Allow}, {action: Deny}]}]");
    assert_eq!(decide(&[&q], "x", "{}").action, Action::Allow);
}

#[test]
fn rule2_no_rule_matched_means_no_decision() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Deny, when: \"args.n > 10\"}]}]");
    let d = decide(&[&p], "x", r#"{"n": 3}"#);
    assert_eq!((d.action, d.decided_by), (Action::Allow, DecidedBy::ClusterDefault));
}

// Rule 3: most restrictive across policies; fallbacks only when nothing else decided.
#[test]
fn rule3_most_restrictive_wins_across_policies() {
    let allow = tool_policy("team-a", "a-allow", "tools: [{name: x, rules: [{action: Allow}]}]");
    let approve = tool_policy("team-a", "b-approve", "tools: [{name: x, approvalWorkflow: ops, rules: [{action: RequireApproval}]}]");
    let deny = tool_policy("team-a", "c-deny", "tools: [{name: x, rules: [{action: Deny}]}]");
    assert_eq!(decide(&[&allow, &approve], "x", "{}").action, Action::RequireApproval);
    assert_eq!(decide(&[&approve, &allow], "x", "{}").action, Action::RequireApproval);
    assert_eq!(decide(&[&allow, &approve, &deny], "x", "{}").action, Action::Deny);
    assert_eq!(decide(&[&deny, &allow], "x", "{}").action, Action::Deny);
}

#[test]
fn rule3_namespace_cannot_relax_a_cluster_guardrail() {
    let guard = cluster_policy("guardrail", "tools: [{name: drop_*, rules: [{action: Deny, message: guardrail}]}]");
    let relax = tool_policy("team-a", "relax", "tools: [{name: '*', rules: [{action: Allow}]}]");
    let d = decide(&[&relax, &guard], "drop_db", "{}");
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.message.as_deref(), Some("guardrail"));
}

#[test]
fn rule3_ties_resolve_cluster_first_then_by_name() {
    let ns_a = tool_policy("team-a", "aaa", "tools: [{name: x, rules: [{action: Deny, message: ns-aaa}]}]");
    let ns_b = tool_policy("team-a", "bbb", "tools: [{name: x, rules: [{action: Deny, message: ns-bbb}]}]");
    let cl_z = cluster_policy("zzz", "tools: [{name: x, rules: [{action: Deny, message: cluster-zzz}]}]");
    assert_eq!(decide(&[&ns_b, &ns_a], "x", "{}").message.as_deref(), Some("ns-aaa"));
    assert_eq!(decide(&[&ns_b, &ns_a, &cl_z], "x", "{}").message.as_deref(), Some("cluster-zzz"));
    let d = decide(&[&ns_a, &cl_z], "x", "{}");
    assert!(matches!(d.decided_by, DecidedBy::Rule { ref policy, .. } if policy.kind == PolicyKind::ClusterToolPolicy));
}

#[test]
fn rule3_fallback_only_when_nothing_else_decided() {
    let fallback = tool_policy("team-a", "defaults", "fallback: true\ntools: [{name: '*', rules: [{action: Deny, message: default deny}]}]");
    let allow_reads = tool_policy("team-a", "reads", "tools: [{name: read_*, rules: [{action: Allow}]}]");
    // A non-fallback policy decided: the fallback is not consulted even though it is stricter.
    assert_eq!(decide(&[&fallback, &allow_reads], "read_file", "{}").action, Action::Allow);
    // Nothing else decided: the fallback decides.
    let d = decide(&[&fallback, &allow_reads], "write_file", "{}");
    assert_eq!((d.action, d.message.as_deref()), (Action::Deny, Some("default deny")));
    assert!(matches!(d.decided_by, DecidedBy::Rule { fallback: true, .. }));
    // A cluster fallback is overridable by a namespace policy.
    let cluster_fallback = cluster_policy("defaults", "fallback: true\ntools: [{name: '*', rules: [{action: Deny}]}]");
    assert_eq!(decide(&[&cluster_fallback, &allow_reads], "read_x", "{}").action, Action::Allow);
}

#[test]
fn rule3_then_agent_default_then_cluster_default() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Allow}]}]");
    let mut a = agent();
    a.default_action = Some(Action::Deny);
    let d = decide_with(&[&p], &a, "github", "y", "{}", None);
    assert_eq!((d.action, d.decided_by), (Action::Deny, DecidedBy::AgentDefault));
    let d = decide_with(&[&p], &agent(), "github", "y", "{}", None);
    assert_eq!((d.action, d.decided_by), (Action::Allow, DecidedBy::ClusterDefault));
    let (agent, args) = (agent(), policy::Args::raw(b"{}"));
    let call = policy::Call { agent: &agent, server: "github", tool: "y", args: &args, justification: None, now: now() };
    let d = policy::decide(&[&p], &call, &workflows, Action::Deny);
    assert_eq!((d.action, d.decided_by), (Action::Deny, DecidedBy::ClusterDefault));
}

// Rule 4: what CEL sees.
#[test]
fn rule4_cel_context() {
    let cases = [
        ("tool.name == 'x' && tool.server == 'github'", true),
        ("agent.name == 'coder' && agent.namespace == 'team-a'", true),
        ("agent.labels.team == 'a' && agent.serviceAccount == 'coder'", true),
        ("'tier' in agent.labels", true),
        ("justification == null", true),
        ("now > timestamp('2026-01-01T00:00:00Z')", true),
        ("now.getFullYear() == 2026", true),
        ("args.path.startsWith('/etc/')", true),
        ("args.path.matches('^/etc/(passwd|shadow)$')", true),
        ("matches(args.path, 'shadow')", false),
        ("args.path.lowerAscii().contains('passwd')", true),
        ("args.path.split('/').size() == 3", true),
        ("args.items.exists(i, i.kind == 'secret')", true),
        ("args.items.all(i, i.size > 1)", false),
        ("size(args) == 2", true),
        ("has(args.missing)", false),
    ];
    for (expr, want) in cases {
        let yaml = format!("tools: [{{name: x, rules: [{{action: Deny, when: {expr:?}}}]}}]");
        let p = tool_policy("team-a", "p", &yaml);
        let d = decide(&[&p], "x", r#"{"path": "/etc/passwd", "items": [{"kind": "secret", "size": 1}, {"kind": "cm", "size": 5}]}"#);
        assert_eq!(d.error, None, "{expr}");
        assert_eq!(d.action == Action::Deny, want, "{expr}");
    }
}

#[test]
fn rule4_justification_is_visible_to_cel() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: x
    justification: Optional
    rules:
      - {action: Deny, when: "justification == null || size(justification) < 10", message: explain yourself}
      - {action: Allow}
"#,
    );
    assert_eq!(decide_with(&[&p], &agent(), "s", "x", "{}", Some("because the ticket INC-1 says so")).action, Action::Allow);
    assert_eq!(decide_with(&[&p], &agent(), "s", "x", "{}", Some("why not")).action, Action::Deny);
    assert_eq!(decide_with(&[&p], &agent(), "s", "x", "{}", None).action, Action::Deny);
}

#[test]
fn rule4_compile_errors_carry_the_field_path() {
    let spec: tollgate_api::ToolPolicySpec = serde_yaml::from_str(
        r#"
tools:
  - {name: a, rules: [{action: Allow}]}
  - {name: b, rules: [{action: Allow}]}
  - name: c
    rules:
      - {action: Deny, when: "args.x ==== 1"}
      - {action: Deny, when: "request.user == 'x'"}
      - {action: Deny, when: "args.p.matches('[unclosed')"}
"#,
    )
    .unwrap();
    let err = policy::compile_tool_policy("ns", "p", &spec).unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.tools[2].rules[0].when", "spec.tools[2].rules[1].when", "spec.tools[2].rules[2].when"]);
    assert!(err.errors[1].message.contains("'request'"), "{}", err.errors[1].message);
    assert!(err.errors[2].message.contains("invalid regex"), "{}", err.errors[2].message);
    assert_eq!(err.reason(), "InvalidExpression");
    assert!(err.to_string().starts_with("spec.tools[2].rules[0].when: "), "{err}");
}

// Rule 5: errors fail closed.
#[test]
fn rule5_missing_field_raises_allow_to_approval_never_allows() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: x
    approvalWorkflow: ops
    rules:
      - {action: Allow, when: "args.branch != 'main'"}
      - {action: Deny}
"#,
    );
    let d = decide(&[&p], "x", r#"{"other": 1}"#);
    assert_eq!(d.action, Action::RequireApproval);
    assert_eq!(d.workflow.as_deref(), Some("ops"));
    let err = d.error.unwrap();
    assert!(err.starts_with("spec.tools[0].rules[0].when: "), "{err}");
}

#[test]
fn rule5_error_without_workflow_denies() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Allow, when: \"args.branch != 'main'\"}]}]");
    let d = decide(&[&p], "x", "{}");
    assert_eq!(d.action, Action::Deny);
    assert!(d.error.is_some());
    assert!(d.deny_message().contains("names no approvalWorkflow"), "{}", d.deny_message());
}

#[test]
fn rule5_deny_rule_that_errors_stays_deny() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, approvalWorkflow: ops, rules: [{action: Deny, when: \"args.n > 1\"}, {action: Allow}]}]");
    assert_eq!(decide(&[&p], "x", "{}").action, Action::Deny);
}

#[test]
fn rule5_require_approval_with_unknown_workflow_denies_and_says_so() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, approvalWorkflow: nope, rules: [{action: RequireApproval}]}]");
    let d = decide(&[&p], "x", "{}");
    assert_eq!(d.action, Action::Deny);
    assert!(d.deny_message().contains("\"nope\" does not exist in namespace team-a"), "{}", d.deny_message());
    // The rule's own workflow overrides the entry's.
    let q = tool_policy("team-a", "q", "tools: [{name: x, approvalWorkflow: nope, rules: [{action: RequireApproval, approvalWorkflow: ops}]}]");
    assert_eq!(decide(&[&q], "x", "{}").workflow.as_deref(), Some("ops"));
}

#[test]
fn rule5_non_boolean_and_invalid_arguments_fail_closed() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Allow, when: \"args.n\"}]}]");
    assert_eq!(decide(&[&p], "x", r#"{"n": 1}"#).action, Action::Deny);
    let q = tool_policy("team-a", "q", "tools: [{name: x, rules: [{action: Allow, when: \"args.n == 1\"}]}]");
    let d = decide(&[&q], "x", "{not json");
    assert_eq!(d.action, Action::Deny);
    assert!(d.error.unwrap().contains("not valid JSON"));
}

#[test]
fn numeric_strings_are_strings() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, approvalWorkflow: ops, rules: [{action: Allow, when: \"args.count < 5\"}, {action: Deny}]}]");
    assert_eq!(decide(&[&p], "x", r#"{"count": 3}"#).action, Action::Allow);
    assert_eq!(decide(&[&p], "x", r#"{"count": 9}"#).action, Action::Deny);
    // "3" is a string: comparing it with an int errors, which fails closed.
    let d = decide(&[&p], "x", r#"{"count": "3"}"#);
    assert_eq!(d.action, Action::RequireApproval);
    assert!(d.error.is_some());
    let q = tool_policy("team-a", "q", "tools: [{name: x, rules: [{action: Allow, when: \"int(args.count) < 5\"}, {action: Deny}]}]");
    assert_eq!(decide(&[&q], "x", r#"{"count": "3"}"#).action, Action::Allow);
}

#[test]
fn floats_and_big_numbers() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Deny, when: \"args.ratio > 0.5\"}]}]");
    assert_eq!(decide(&[&p], "x", r#"{"ratio": 0.75}"#).action, Action::Deny);
    assert_eq!(decide(&[&p], "x", r#"{"ratio": 0.25}"#).action, Action::Allow);
    let q = tool_policy("team-a", "q", "tools: [{name: x, rules: [{action: Deny, when: \"args.n == 18446744073709551615u\"}]}]");
    assert_eq!(decide(&[&q], "x", r#"{"n": 18446744073709551615}"#).action, Action::Deny);
}

#[test]
fn unicode_in_arguments_and_names() {
    let p = tool_policy("team-a", "p", "tools: [{name: 'ünï*', rules: [{action: Deny, when: \"args.msg.contains('🚀') && size(args.msg) == 3\"}]}]");
    assert_eq!(decide(&[&p], "ünïcode", r#"{"msg": "a🚀é"}"#).action, Action::Deny);
    assert_eq!(decide(&[&p], "ünïcode", r#"{"msg": "abc"}"#).action, Action::Allow);
    assert_eq!(decide(&[&p], "unicode", r#"{"msg": "a🚀é"}"#).action, Action::Allow);
}

#[test]
fn deeply_nested_arguments() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Deny, when: \"args.a.a.a.a.a.a.a.a.a.a.v == 1\"}]}]");
    let mut v = serde_json::json!({"v": 1});
    for _ in 0..10 {
        v = serde_json::json!({"a": v});
    }
    assert_eq!(decide(&[&p], "x", &v.to_string()).action, Action::Deny);
    // Past serde_json's recursion limit: an error, so a rule reading args fails closed.
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let d = decide(&[&p], "x", &format!("{{\"a\": {deep}}}"));
    assert_eq!(d.action, Action::Deny);
    assert!(d.error.unwrap().contains("recursion limit"));
}

#[test]
fn glob_matching_of_server_and_tool() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - {server: "prod-*", name: "*", rules: [{action: Deny, message: prod}]}
  - {server: github, name: "delete_?epo", rules: [{action: Deny, message: gh}]}
  - {name: "*", rules: [{action: Allow}]}
"#,
    );
    let a = agent();
    let cases = [
        ("prod-db", "query", Some("prod")),
        ("production", "query", None),
        ("github", "delete_repo", Some("gh")),
        ("github", "delete_repos", None),
        ("gitlab", "delete_repo", None),
    ];
    for (server, tool, want) in cases {
        let d = decide_with(&[&p], &a, server, tool, "{}", None);
        assert_eq!(d.message.as_deref(), want, "{server}/{tool}");
    }
}

#[test]
fn arguments_are_parsed_only_when_a_rule_reads_them() {
    // Invalid JSON, but no rule reads args: the decision stands.
    let p = tool_policy("team-a", "p", "tools: [{name: x, rules: [{action: Allow, when: \"tool.name == 'x'\"}]}]");
    let d = decide(&[&p], "x", "\u{0}garbage");
    assert_eq!((d.action, d.error), (Action::Allow, None));
}

// §3.2 steps before the policies.
#[test]
fn kill_switch_and_server_access() {
    let p = tool_policy("team-a", "p", "tools: [{name: '*', rules: [{action: Allow}]}]");
    let mut a = agent();
    a.suspended = true;
    let d = decide_with(&[&p], &a, "github", "x", "{}", None);
    assert_eq!((d.action, d.decided_by), (Action::Deny, DecidedBy::Suspended));
    let mut a = agent();
    a.mcp_servers = vec![tollgate_core::glob::Glob::new("git*")];
    assert_eq!(decide_with(&[&p], &a, "github", "x", "{}", None).action, Action::Allow);
    let d = decide_with(&[&p], &a, "postgres", "x", "{}", None);
    assert_eq!((d.action, d.decided_by), (Action::Deny, DecidedBy::ServerNotAllowed));
}

#[test]
fn run_time_errors_name_types_never_values() {
    let secret = "hunter2-do-not-print";
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - name: x
    approvalWorkflow: ops
    rules:
      - {action: Allow, when: "args.count > 5"}
      - {action: Allow, when: "args.items[args.key] == 1"}
      - {action: Allow, when: "args.a + args.b == 'x'"}
      - {action: Allow, when: "args.count"}
      - {action: Allow, when: "int(args.count) > 1"}
"#,
    );
    let args = format!(r#"{{"count": "{secret}", "items": {{"k": 1}}, "key": "{secret}", "a": "{secret}", "b": 1}}"#);
    // Each rule in turn: the ones before it are dropped by making them pass over.
    let d = decide(&[&p], "x", &args);
    let err = d.error.clone().unwrap_or_default();
    assert!(err.contains("string") && err.contains("int"), "the types are named: {err}");
    for rule in 1..5 {
        let only = tool_policy(
            "team-a",
            "p",
            &format!(
                "tools: [{{name: x, approvalWorkflow: ops, rules: [{}]}}]",
                [
                    r#"{action: Allow, when: "args.count > 5"}"#,
                    r#"{action: Allow, when: "args.items[args.key] == 1"}"#,
                    r#"{action: Allow, when: "args.a + args.b == 'x'"}"#,
                    r#"{action: Allow, when: "args.count"}"#,
                    r#"{action: Allow, when: "int(args.count) > 1"}"#,
                ][rule]
            ),
        );
        let d = decide(&[&only], "x", &args);
        let err = d.error.unwrap_or_default();
        assert!(!err.is_empty(), "rule {rule} should fail at run time");
        assert!(!err.contains(secret), "rule {rule} prints a value: {err}");
        assert!(!d.message.unwrap_or_default().contains(secret));
    }
    assert!(!err.contains(secret), "{err}");
}
