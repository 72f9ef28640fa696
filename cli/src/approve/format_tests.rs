#![allow(clippy::unwrap_used)]
use super::*;
use tollgate_api::ApprovalRequestStatus;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2025-05-01T10:00:00Z";

fn request(status: serde_json::Value) -> ApprovalRequest {
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "deploy-x7k2", "namespace": "tollgate-demo",
                     "creationTimestamp": "2025-05-01T09:58:30Z"},
        "spec": {
            "agent": "release-bot", "serviceAccount": "release-bot", "pod": "release-bot-7d9f",
            "server": "platform-tools", "tool": "deploy",
            "arguments": {"service": "checkout", "env": "prod"},
            "argumentsDigest": format!("sha256:{}", "0".repeat(64)),
            "justification": "ship 1.4.2: fixes the\ncheckout timeout",
            "policy": {"kind": "ToolPolicy", "name": "prod-guardrails", "namespace": "tollgate-demo"},
            "rule": "spec.tools[0].rules[1]",
            "message": "production deploys need a human",
            "workflow": "prod-deploy", "requestedAt": "2025-05-01T09:58:30Z",
        },
        "status": status,
    }))
    .unwrap()
}

#[test]
fn ages_read_like_kubectl() {
    assert_eq!(age(-5), "<invalid>");
    assert_eq!(age(-1), "0s");
    assert_eq!(age(42), "42s");
    assert_eq!(age(119), "119s");
    assert_eq!(age(150), "2m30s");
    assert_eq!(age(300), "5m");
    assert_eq!(age(45 * 60), "45m");
    assert_eq!(age(4 * 3600 + 5 * 60), "4h5m");
    assert_eq!(age(20 * 3600), "20h");
    assert_eq!(age(3 * 86400 + 7200), "3d2h");
    assert_eq!(age(30 * 86400), "30d");
    assert_eq!(age(3 * 365 * 86400), "3y");
}

#[test]
fn countdowns_are_precise() {
    assert_eq!(countdown(0), "0s");
    assert_eq!(countdown(59), "59s");
    assert_eq!(countdown(252), "4m12s");
    assert_eq!(countdown(3600 + 180 + 5), "1h3m");
    assert_eq!(countdown(2 * 86400 + 3 * 3600), "2d3h");
}

#[test]
fn expiry_column() {
    let now = ts(NOW);
    let pending = request(json!({"phase": "Pending", "expiresAt": "2025-05-01T10:04:12Z"}));
    assert_eq!(expires_column(&pending, now), "in 4m12s");
    let late = request(json!({"expiresAt": "2025-05-01T09:59:00Z"}));
    assert_eq!(expires_column(&late, now), "expired");
    let approved = request(json!({"phase": "Approved", "expiresAt": "2025-05-01T10:04:12Z"}));
    assert_eq!(expires_column(&approved, now), "-");
    assert_eq!(expires_column(&request(json!(null)), now), "<none>");
}

#[test]
fn truncation_keeps_cells_on_one_line() {
    assert_eq!(truncate("short", 10), "short");
    assert_eq!(truncate("a\nb", 10), "a b");
    assert_eq!(truncate("abcdefghijkl", 8), "abcde...");
    assert_eq!(truncate("ééééééééé", 5), "éé...");
}

#[test]
fn list_tables() {
    let now = ts(NOW);
    let items = [request(json!({"phase": "Pending", "approvals": "0/2", "expiresAt": "2025-05-01T10:04:12Z"}))];
    assert_eq!(
        list_table(&items, now, false, false),
        "NAME          TOOL     AGENT         PHASE     APPROVALS   EXPIRES    AGE\n\
         deploy-x7k2   deploy   release-bot   Pending   0/2         in 4m12s   90s\n"
    );
    let wide = list_table(&items, now, true, true);
    let lines: Vec<&str> = wide.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE       NAME"), "{wide}");
    assert!(lines[0].ends_with("SERVER           WORKFLOW      JUSTIFICATION"), "{wide}");
    assert!(lines[1].starts_with("tollgate-demo   deploy-x7k2"), "{wide}");
    assert!(lines[1].ends_with("platform-tools   prod-deploy   ship 1.4.2: fixes the checkout timeout"), "{wide}");
}

#[test]
fn list_documents_look_like_kubectls() {
    let doc = list_document(&[request(json!({"phase": "Pending"}))]).unwrap();
    assert_eq!(doc["kind"], "List");
    assert_eq!(doc["items"][0]["apiVersion"], "tollgate.dev/v1alpha1");
    assert_eq!(doc["items"][0]["kind"], "ApprovalRequest");
    assert_eq!(doc["items"][0]["spec"]["tool"], "deploy");
    assert_eq!(name_line(&request(json!(null))), "approvalrequest.tollgate.dev/deploy-x7k2");
}

#[test]
fn the_human_view() {
    let ar = request(json!({
        "phase": "Pending", "approvals": "1/2", "expiresAt": "2025-05-01T10:04:12Z",
        "decisions": [{"user": "approver-a", "decision": "Approve", "reason": "diff checked",
                       "time": "2025-05-01T09:59:00Z", "via": "kubectl"}],
    }));
    let text = show(&ar, ts(NOW));
    let expected = r#"Name:            tollgate-demo/deploy-x7k2
Phase:           Pending
Approvals:       1/2
Expires:         in 4m12s (2025-05-01T10:04:12Z)
Requested:       90s ago (2025-05-01T09:58:30Z)
Tool:            deploy
Server:          platform-tools
Agent:           release-bot
Service account: release-bot
Pod:             release-bot-7d9f
Workflow:        prod-deploy
Policy:          ToolPolicy tollgate-demo/prod-guardrails, rule spec.tools[0].rules[1]
Message:         production deploys need a human
Justification:   ship 1.4.2: fixes the
                 checkout timeout
Arguments:
  {
    "env": "prod",
    "service": "checkout"
  }
Decisions:
  USER         DECISION   VIA       TIME                             REASON
  approver-a   Approve    kubectl   60s ago (2025-05-01T09:59:00Z)   diff checked
"#;
    assert_eq!(text, expected);
}

#[test]
fn resolved_requests_say_when() {
    let ar = request(json!({"phase": "Denied", "resolvedAt": "2025-05-01T09:59:30Z"}));
    let text = show(&ar, ts(NOW));
    assert!(text.contains("Resolved:        30s ago (2025-05-01T09:59:30Z)\n"), "{text}");
    assert!(text.contains("Decisions:       <none>\n"), "{text}");
    let expired = request(json!({"expiresAt": "2025-05-01T09:59:00Z"}));
    assert!(show(&expired, ts(NOW)).contains("Expires:         expired 60s ago"));
}

#[test]
fn decided_lines_count_approvals_over_the_quorum() {
    let status: ApprovalRequestStatus = serde_json::from_value(json!({
        "approvals": "0/2",
        "decisions": [{"user": "approver-a", "decision": "Approve", "time": NOW, "via": "kubectl"}],
    }))
    .unwrap();
    let mut ar = request(json!(null));
    ar.status = Some(status);
    assert_eq!(decided_line(Verdict::Approve, &ar), "approved tollgate-demo/deploy-x7k2 (1/2 approvals)");
    assert_eq!(decided_line(Verdict::Deny, &ar), "denied tollgate-demo/deploy-x7k2");
    assert!(!may_resolve(Verdict::Approve, &ar));
    assert!(may_resolve(Verdict::Deny, &ar));
    ar.status = None;
    assert_eq!(decided_line(Verdict::Approve, &ar), "approved tollgate-demo/deploy-x7k2 (0 approvals)");
    assert!(may_resolve(Verdict::Approve, &ar));
}

#[test]
fn watch_lines_end_with_the_command_to_run() {
    let line = watch_line(&request(json!(null)));
    assert_eq!(
        line,
        "pending tollgate-demo/deploy-x7k2: tool=deploy server=platform-tools agent=release-bot \
         justification=\"ship 1.4.2: fixes the checkout timeout\"  ->  kubectl approve deploy-x7k2 -n tollgate-demo"
    );
}

#[test]
fn nothing_an_agent_wrote_can_drive_the_terminal() {
    let hidden = "\u{1b}[8m";
    let mut ar = request(serde_json::json!({"phase": "Pending", "approvals": "0/1"}));
    ar.spec.justification = Some(format!("routine cleanup{hidden}\nreally: drop every table\u{1b}[0m"));
    ar.spec.tool = format!("read_file{hidden}");
    ar.spec.message = Some("ok\r\u{202e}evil".into());
    ar.spec.arguments = Some(serde_json::json!({"path": format!("/tmp{hidden}")}));
    let now = ts("2026-01-01T00:00:00Z");
    for (what, text) in [("show", show(&ar, now)), ("list", list_table(std::slice::from_ref(&ar), now, true, true)), ("watch", watch_line(&ar))] {
        for bad in ['\u{1b}', '\r', '\u{202e}'] {
            assert!(!text.contains(bad), "{what} prints {bad:?} raw:\n{text}");
        }
        assert!(text.contains("\\u{1b}[8m"), "{what} shows the escape for what it is:\n{text}");
    }
    assert!(show(&ar, now).contains("\\r\\u{202e}evil"));
    assert_eq!(terminal_safe("a\tb\nc\u{1b}[2J\u{7f}"), "a\tb\nc\\u{1b}[2J\\u{7f}");
    assert_eq!(safe("plain text", false), std::borrow::Cow::Borrowed("plain text"));
}
