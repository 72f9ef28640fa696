//! Property tests: evaluation with hostile arguments never panics and stays bounded.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};
use tollgate_core::policy::Action;

const RULES: &str = r#"
tools:
  - name: "*"
    approvalWorkflow: ops
    rules:
      - {action: Deny, when: "args.path.matches('^/etc/')"}
      - {action: RequireApproval, when: "args.items.exists(i, i.kind == 'secret')"}
      - {action: Deny, when: "size(args.cmd) > 100 && args.cmd.contains('rm -rf')"}
      - {action: Allow, when: "args.a.b.c == 1"}
      - {action: Allow}
"#;

fn hostile_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,64}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(8, 256, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map("(path|items|cmd|a|b|c|kind|[a-z]{1,4})", inner, 0..8).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_json_arguments_never_panic(args in hostile_json()) {
        let p = tool_policy("team-a", "p", RULES);
        let d = decide(&[&p], "x", &args.to_string());
        // Whatever the arguments, errors never end in a silent Allow of a failed rule.
        if d.error.is_some() {
            prop_assert!(d.action >= Action::RequireApproval);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let p = tool_policy("team-a", "p", RULES);
        let d = tollgate_core::policy::decide(&[&p], &call(&agent(), &tollgate_core::policy::Args::raw(&bytes)), &workflows, Action::Allow);
        prop_assert!(d.action != Action::Allow || d.error.is_none());
    }
}

#[test]
fn huge_and_deep_inputs_are_bounded() {
    let p = tool_policy("team-a", "p", RULES);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("8 MiB string", format!("{{\"cmd\": \"{}rm -rf /\"}}", "x".repeat(8 << 20)).into_bytes()),
        ("10k-deep arrays", format!("{{\"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        ("10k-deep objects", format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes()),
        ("invalid UTF-8", b"{\"path\": \"/etc/\xff\xfe\"}".to_vec()),
        ("100k-item list", format!("{{\"items\": [{}{{\"kind\":\"secret\"}}]}}", "{\"kind\":\"cm\"},".repeat(100_000)).into_bytes()),
        ("lone surrogate escape", br#"{"path": "\ud800"}"#.to_vec()),
    ];
    for (name, bytes) in cases {
        let started = Instant::now();
        let d = tollgate_core::policy::decide(&[&p], &call(&agent(), &tollgate_core::policy::Args::raw(&bytes)), &workflows, Action::Allow);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
        match name {
            "8 MiB string" => assert_eq!(d.action, Action::Deny, "{name}"),
            // No `path`: the first rule errors, and an erroring Deny rule denies (rule 5).
            "100k-item list" => assert!(d.action == Action::Deny && d.error.is_some(), "{name}"),
            _ => assert!(d.action >= Action::RequireApproval, "{name}: {d:?}"),
        }
    }
}

#[test]
fn hostile_regexes_from_arguments_are_bounded() {
    let p = tool_policy("team-a", "p", "tools: [{name: x, approvalWorkflow: ops, rules: [{action: Allow, when: \"args.s.matches(args.re)\"}]}]");
    for re in ["(a+)+$", "((((a{100}){100}){100}){100})", "[", "(?P<x"] {
        let args = serde_json::json!({"s": "a".repeat(10_000) + "!", "re": re}).to_string();
        let started = Instant::now();
        let d = decide(&[&p], "x", &args);
        assert!(started.elapsed() < Duration::from_secs(2), "{re}");
        // Rust's regex engine is linear; oversized or invalid patterns are errors.
        if d.error.is_some() {
            assert!(d.action >= Action::RequireApproval);
        }
    }
}

#[test]
fn a_key_given_twice_fails_a_rule_that_reads_the_arguments() {
    // serde_json keeps the last `path`, other parsers the first: the rules read neither.
    let p = tool_policy("team-a", "p", RULES);
    let d = decide(&[&p], "x", r#"{"path": "/etc/shadow", "path": "/tmp/x", "a": {"b": {"c": 1}}}"#);
    assert!(d.action == Action::Deny && d.error.as_deref().is_some_and(|e| e.contains("duplicate key")), "{d:?}");
    let quiet = tool_policy("team-a", "q", "tools: [{name: x, rules: [{action: Allow, when: \"tool.name == 'x'\"}]}]");
    let d = decide(&[&quiet], "x", r#"{"path": 1, "path": 2}"#);
    assert_eq!((d.action, d.error), (Action::Allow, None), "a rule that does not read the arguments is not affected");
}

fn call<'a>(agent: &'a tollgate_core::policy::AgentInfo, args: &'a tollgate_core::policy::Args<'a>) -> tollgate_core::policy::Call<'a> {
    tollgate_core::policy::Call { agent, server: "s", tool: "x", args, justification: None, now: now() }
}
