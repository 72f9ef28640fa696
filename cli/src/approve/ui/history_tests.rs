#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;
use tollgate_api::ApprovalRequestSpec;

fn request(name: &str, tool: &str, phase: &str, resolved: &str) -> Arc<ApprovalRequest> {
    let spec: ApprovalRequestSpec = serde_json::from_value(json!({
        "agent": "coder", "serviceAccount": "coder", "server": "github", "tool": tool,
        "argumentsDigest": format!("sha256:{}", "0".repeat(64)), "workflow": "ops",
        "requestedAt": "2026-12-03T10:00:00Z", "arguments": {"body": "x".repeat(10_000)},
    }))
    .unwrap();
    let mut ar = ApprovalRequest::new(name, spec);
    ar.metadata.namespace = Some("team".into());
    ar.status = Some(serde_json::from_value(json!({"phase": phase, "resolvedAt": resolved, "approvals": "1/1"})).unwrap());
    Arc::new(ar)
}

#[test]
fn filters() {
    let approved = request("a", "merge", "Approved", "2026-12-03T10:01:00Z");
    let open = request("b", "merge", "Pending", "2026-12-03T10:01:00Z");
    let all = Filter::default();
    assert!(all.keeps(&approved) && !all.keeps(&open));
    assert!(Filter { phase: "approved".into(), ..Filter::default() }.keeps(&approved));
    assert!(!Filter { phase: "Denied".into(), ..Filter::default() }.keeps(&approved));
    assert!(Filter { q: "MER".into(), ..Filter::default() }.keeps(&approved));
    assert!(!Filter { q: "slack".into(), ..Filter::default() }.keeps(&approved));
    assert!(!Filter { namespace: "other".into(), ..Filter::default() }.keeps(&approved));
    assert!(Filter { phase: "Pending".into(), ..Filter::default() }.keeps(&open));
}

#[test]
fn newest_first_a_page_at_a_time_with_links_that_keep_the_filters() {
    // 250 decided requests, one a second, and one of another tool.
    let mut items: Vec<_> = (0..250).map(|i| request(&format!("r{i:03}"), "merge", "Denied", &format!("2026-12-03T11:{:02}:{:02}Z", i / 60, i % 60))).collect();
    items.push(request("other", "deploy", "Denied", "2026-12-03T12:00:00Z"));
    let filter = Filter { q: "merge".into(), phase: "Denied".into(), ..Filter::default() };
    let first = page(&items, &filter);
    assert_eq!(first.rows.len(), PAGE_ROWS);
    assert_eq!(first.rows[0].name, "r249");
    assert_eq!(first.rows[99].name, "r150");
    assert_eq!(first.newer, None);
    assert_eq!(first.older.as_deref(), Some("phase=Denied&namespace=&q=merge&page=1"));
    let last = page(&items, &Filter { page: 2, ..filter.clone() });
    assert_eq!(last.rows.len(), 50);
    assert_eq!(last.rows[49].name, "r000");
    assert_eq!(last.older, None);
    assert_eq!(last.newer.as_deref(), Some("phase=Denied&namespace=&q=merge&page=1"));
    // Past the end: nothing, and a way back.
    let beyond = page(&items, &Filter { page: usize::MAX, ..filter });
    assert!(beyond.rows.is_empty() && beyond.newer.is_some() && beyond.older.is_none());
    // A row carries what the table shows, not the arguments.
    assert_eq!(first.rows[0].approvals, "1/1");
    assert_eq!(first.rows[0].tool.text, "merge");
}

#[test]
fn filter_values_are_encoded_in_the_links() {
    let filter = Filter { q: "a&page=9#x".into(), namespace: "team".into(), ..Filter::default() };
    assert_eq!(filter.at(1), "phase=&namespace=team&q=a%26page%3D9%23x&page=1");
}
