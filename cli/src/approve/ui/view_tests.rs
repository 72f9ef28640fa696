#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;
use tollgate_api::{ApprovalRequestSpec, ApprovalRequestStatus, ApprovalWorkflowSpec};

fn request(spec: serde_json::Value, status: Option<ApprovalRequestStatus>) -> ApprovalRequest {
    let mut base = json!({
        "agent": "coder", "serviceAccount": "coder", "server": "github", "tool": "merge",
        "argumentsDigest": format!("sha256:{}", "0".repeat(64)), "workflow": "ops",
        "requestedAt": "2026-12-03T10:00:00Z",
    });
    base.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    let spec: ApprovalRequestSpec = serde_json::from_value(base).unwrap();
    let mut ar = ApprovalRequest::new("x7k2", spec);
    ar.metadata.namespace = Some("team".into());
    ar.status = status;
    ar
}

fn pending(expires: &str) -> Option<ApprovalRequestStatus> {
    Some(serde_json::from_value(json!({"phase": "Pending", "approvals": "0/2", "expiresAt": expires})).unwrap())
}

fn now() -> Timestamp {
    "2026-12-03T10:01:00Z".parse().unwrap()
}

fn caller(user: &str) -> Caller {
    Caller { user: user.into(), groups: vec!["tollgate:approvers".into()] }
}

fn workflow(spec: serde_json::Value) -> Workflow {
    named_workflow("ops", spec)
}

fn named_workflow(name: &str, spec: serde_json::Value) -> Workflow {
    let spec: ApprovalWorkflowSpec = serde_json::from_value(spec).unwrap();
    Workflow::from_spec(name, &spec)
}

#[test]
fn names_with_lookalike_letters_are_spelled_out_and_flagged() {
    assert_eq!(name("deploy"), Name { text: "deploy".into(), lookalike: false });
    // A Cyrillic `е` (U+0435) in place of the Latin `e`.
    assert_eq!(name("d\u{435}ploy"), Name { text: "d\\u{435}ploy".into(), lookalike: true });
    // Bidirectional overrides and control characters never reach the page as such.
    let n = name("run\u{202e}exe.sh\u{1b}[2J");
    assert!(n.lookalike && !n.text.contains('\u{202e}') && !n.text.contains('\u{1b}'), "{n:?}");
    assert_eq!(name("a\u{7}b").text, "a\\u{7}b");
}

#[test]
fn free_text_keeps_its_lines_and_loses_its_tricks() {
    assert_eq!(text("line one\nline two"), "line one\nline two");
    assert_eq!(text("ok\u{202e}gnp.exe"), "ok\\u{202e}gnp.exe");
    // Unicode letters in prose are fine; credentials are not.
    assert_eq!(text("Grüße"), "Grüße");
    assert!(!text("use Bearer abcdefghijklmnopqrstuvwxyz0123").contains("abcdefghijklmnop"));
}

#[test]
fn arguments_are_redacted_and_long_values_folded() {
    let long = "x".repeat(1000);
    let a = arguments(Some(&json!({"path": "/etc", "password": "hunter2", "body": long})));
    assert!(!a.folded.contains("hunter2") && a.folded.contains("[REDACTED]"), "{}", a.folded);
    assert!(a.folded.contains("… (760 more characters)"), "{}", a.folded);
    let full = a.full.unwrap();
    assert!(full.contains(&long) && !full.contains("hunter2"));
    let short = arguments(Some(&json!({"n": 1})));
    assert_eq!(short.full, None);
    assert_eq!(arguments(None).folded, "—");
    // JSON already escapes control characters; format characters are spelled out too.
    assert!(arguments(Some(&json!({"m": "a\u{202e}b"}))).folded.contains("\\u{202e}"));
}

#[test]
fn the_whole_document_is_capped() {
    let many: Vec<String> = (0..2000).map(|i| format!("value-{i}")).collect();
    let a = arguments(Some(&json!({"items": many})));
    assert!(a.folded.chars().count() < MAX_ARGUMENTS_SHOWN + 200, "{}", a.folded.len());
    assert!(a.folded.ends_with("`kubectl approve show` prints them all)"));
}

#[test]
fn standing_says_who_may_decide_and_why_not() {
    let wf = workflow(json!({"approvers": {"users": ["approver-a", "approver-b"]}, "requiredApprovals": 2, "requireReason": true}));
    let ar = request(json!({}), pending("2026-12-03T10:05:00Z"));
    assert_eq!(standing(&ar, &caller("approver-a"), Some(&wf), now()), Standing::MayDecide { reason_required_to_approve: true });
    assert_eq!(standing(&ar, &caller("outsider"), Some(&wf), now()), Standing::Closed("you (outsider) are not an approver of workflow ops".into()));
    // Without the workflow the page cannot tell, and leaves it to the API server.
    assert_eq!(standing(&ar, &caller("outsider"), None, now()), Standing::MayDecide { reason_required_to_approve: false });
    let expired = request(json!({}), pending("2026-12-03T10:00:30Z"));
    assert_eq!(
        standing(&expired, &caller("approver-a"), Some(&wf), now()),
        Standing::Closed("team/x7k2 expired at 2026-12-03T10:00:30Z; it no longer takes decisions".into())
    );
    let decided: ApprovalRequestStatus = serde_json::from_value(json!({"phase": "Pending", "decisions": [
        {"user": "approver-a", "decision": "Approve", "time": "2026-12-03T10:00:10Z", "via": "browser"}]}))
    .unwrap();
    let ar = request(json!({}), Some(decided));
    assert!(matches!(standing(&ar, &caller("approver-a"), Some(&wf), now()), Standing::Closed(w) if w.starts_with("you (approver-a) already decided")));
    assert!(matches!(standing(&ar, &caller("approver-b"), Some(&wf), now()), Standing::MayDecide { .. }));
}

#[test]
fn the_inbox_splits_mine_from_others_oldest_first() {
    let wf = workflow(json!({"approvers": {"users": ["approver-a"]}}));
    let mut b = request(json!({"requestedAt": "2026-12-03T09:00:00Z", "justification": "x".repeat(200)}), pending("2026-12-03T10:05:00Z"));
    b.metadata.name = Some("older".into());
    let mut other = request(json!({"workflow": "finance"}), pending("2026-12-03T10:05:00Z"));
    other.metadata.name = Some("finance-1".into());
    let done = request(json!({}), Some(serde_json::from_value(json!({"phase": "Approved"})).unwrap()));
    let items = vec![request(json!({}), pending("2026-12-03T10:05:00Z")), b, other, done];
    let lookup = |ar: &ApprovalRequest| {
        (ar.spec.workflow == "ops").then(|| wf.clone()).or_else(|| Some(named_workflow("finance", json!({"approvers": {"users": ["cfo"]}}))))
    };
    let rows = inbox(&items, &caller("approver-a"), lookup, now());
    let names: Vec<&str> = rows.mine.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["older", "x7k2"]);
    assert_eq!(rows.others.len(), 1);
    assert_eq!(rows.others[0].why_not, "you (approver-a) are not an approver of workflow finance");
    assert_eq!(rows.mine[0].justification_short.chars().count(), 80);
    assert_eq!(rows.mine[1].time_left, "in 4m0s");
}

#[test]
fn only_object_names_reach_the_api_server() {
    for ok in ["team-a", "x7k2", "trigger-long-running-operation-4590dfcf", "a.b"] {
        assert!(is_object_name(ok), "{ok}");
    }
    for bad in ["", "../secrets", "a/b", "A", "-a", "a-", "a%2Fb", &"a".repeat(254)] {
        assert!(!is_object_name(bad), "{bad}");
    }
}
