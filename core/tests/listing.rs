//! DESIGN §3.1 rules 6 and 7: what `tools/list` shows, and justification.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use tollgate_core::glob::Glob;
use tollgate_core::json_tree::Tree;
use tollgate_core::policy::{self, Action, DecidedBy, Justification};

#[test]
fn rule6_hides_unconditionally_denied_tools_only() {
    let p = tool_policy(
        "team-a",
        "p",
        r#"
tools:
  - {name: delete_repo, rules: [{action: Deny}]}
  - {name: drop_*, rules: [{action: Deny, when: "args.force"}, {action: Deny}]}
  - {name: deploy, rules: [{action: Deny, when: "args.env == 'prod'"}, {action: Allow}]}
  - {name: maybe, rules: [{action: Deny, when: "args.x"}]}
  - {name: approve_me, approvalWorkflow: ops, rules: [{action: RequireApproval}]}
"#,
    );
    let a = agent();
    let cases = [("delete_repo", false), ("drop_table", false), ("deploy", true), ("maybe", true), ("approve_me", true), ("read_file", true)];
    for (tool, want) in cases {
        assert_eq!(policy::visible(&[&p], &a, "github", tool, Action::Allow), want, "{tool}");
    }
}

#[test]
fn rule6_fallback_and_defaults_hide_only_when_nothing_else_decides() {
    let fallback = tool_policy("team-a", "f", "fallback: true\ntools: [{name: '*', rules: [{action: Deny}]}]");
    let reads = tool_policy("team-a", "r", "tools: [{name: read_*, rules: [{action: Allow}]}]");
    let a = agent();
    assert!(policy::visible(&[&fallback, &reads], &a, "s", "read_file", Action::Allow));
    assert!(!policy::visible(&[&fallback, &reads], &a, "s", "write_file", Action::Allow));
    let mut strict = agent();
    strict.default_action = Some(Action::Deny);
    assert!(!policy::visible(&[&reads], &strict, "s", "write_file", Action::Allow));
    assert!(policy::visible(&[&reads], &strict, "s", "read_file", Action::Allow));
    assert!(!policy::visible(&[], &a, "s", "anything", Action::Deny));
}

#[test]
fn rule6_hides_servers_the_agent_may_not_use() {
    let mut a = agent();
    a.mcp_servers = vec![Glob::new("github")];
    assert!(policy::visible(&[], &a, "github", "x", Action::Allow));
    assert!(!policy::visible(&[], &a, "postgres", "x", Action::Allow));
    a.mcp_servers.clear();
    assert!(!policy::visible(&[], &a, "github", "x", Action::Allow));
}

#[test]
fn rule7_justification_mode_and_schema() {
    let opt = tool_policy("team-a", "o", "tools: [{name: x, justification: Optional, rules: [{action: Allow}]}]");
    let req = tool_policy("team-a", "r", "tools: [{name: x, justification: Required, rules: [{action: Allow}]}]");
    assert_eq!(policy::justification_mode(&[&opt], "s", "x"), Some(Justification::Optional));
    assert_eq!(policy::justification_mode(&[&opt, &req], "s", "x"), Some(Justification::Required));
    assert_eq!(policy::justification_mode(&[&opt], "s", "y"), None);

    let mut schema = json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]});
    policy::add_justification_property(&mut schema, Justification::Required);
    assert_eq!(schema["required"], json!(["path", "justification"]));
    assert_eq!(schema["properties"]["justification"]["type"], "string");
    let mut schema = json!({"type": "object"});
    policy::add_justification_property(&mut schema, Justification::Optional);
    assert!(schema["properties"]["justification"].is_object());
    assert!(schema.get("required").is_none());
}

#[test]
fn rule7_justification_is_stripped_and_empty_counts_as_missing() {
    let args = json!({"path": "/x", "justification": "ticket INC-42"});
    let j = policy::split_justification(Tree::borrowed(&args), Some(Justification::Optional));
    assert_eq!(j.justification.as_deref(), Some("ticket INC-42"));
    assert_eq!(j.arguments.to_value(), json!({"path": "/x"}));
    for empty in [json!(""), json!("   "), json!(null), json!(42)] {
        let call = json!({"justification": empty});
        let j = policy::split_justification(Tree::borrowed(&call), Some(Justification::Required));
        assert_eq!(j.justification, None, "{empty}");
        assert_eq!(j.arguments.to_value(), json!({}));
    }
    // No justification mode: a `justification` argument is the tool's own and stays.
    let j = policy::split_justification(Tree::borrowed(&args), None);
    assert_eq!((j.justification, j.arguments.to_value()), (None, args));
}

#[test]
fn rule7_required_justification_missing_is_refused() {
    let req = tool_policy("team-a", "r", "tools: [{name: x, justification: Required, rules: [{action: Allow}]}]");
    let a = agent();
    for missing in [None, Some(""), Some("  ")] {
        let d = decide_with(&[&req], &a, "s", "x", "{}", missing);
        assert_eq!((d.action, d.decided_by.clone()), (Action::Deny, DecidedBy::MissingJustification), "{missing:?}");
        assert!(d.deny_message().contains("requires a justification"));
    }
    assert_eq!(decide_with(&[&req], &a, "s", "x", "{}", Some("needed for INC-7")).action, Action::Allow);
    let opt = tool_policy("team-a", "o", "tools: [{name: x, justification: Optional, rules: [{action: Allow}]}]");
    assert_eq!(decide_with(&[&opt], &a, "s", "x", "{}", None).action, Action::Allow);
}
