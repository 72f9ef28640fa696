//! Rate limits on tool calls (docs/design.md §3.1): a burst from the official MCP SDK past a
//! rule's limit is refused saying when to retry; an audited limit only records; an edited limit
//! applies within two seconds.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::time::Duration;

use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, py_client, wait_until};

fn objects(server: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{server}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: capped, labels: {{mode: enforce}}}}
spec: {{selector: {{matchLabels: {{app: capped}}}}, serviceAccountName: capped, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: watched, labels: {{mode: audit}}}}
spec: {{selector: {{matchLabels: {{app: watched}}}}, serviceAccountName: watched, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: capped}}
spec:
  agentSelector: {{matchLabels: {{mode: enforce}}}}
  tools: [{{server: files, name: echo, rules: [{{action: Allow, rateLimit: {{calls: 3, period: 1h}}}}]}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: watched}}
spec:
  enforcement: Audit
  agentSelector: {{matchLabels: {{mode: audit}}}}
  tools: [{{server: files, name: echo, rules: [{{action: Allow, rateLimit: {{calls: 3, period: 1h}}}}]}}]
"#
    )
}

/// Six calls at once through the official Python SDK: each call's result or error.
fn burst(sidecar: &Sidecar) -> Result<Vec<Value>> {
    let steps = py_client(&sidecar.url("files"), &json!([{"op": "concurrent_calls", "name": "echo", "arguments": {"message": "hi"}, "count": 6}]))?;
    steps.first().and_then(|s| s["result"]["results"].as_array()).cloned().with_context(|| format!("no results: {steps:?}"))
}

#[test]
fn a_burst_past_a_rules_limit_is_refused_saying_when_to_retry() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let ns = cp.create_namespace("limits")?;
    cp.apply(User::Admin, &ns, &objects(&server.url()))?;
    let capped = Sidecar::start(cp, &ns, "capped", "capped", "capped-pod")?;
    let watched = Sidecar::start(cp, &ns, "watched", "watched", "watched-pod")?;

    let results = burst(&capped)?;
    let (served, refused): (Vec<&Value>, Vec<&Value>) = results.iter().partition(|r| r["ok"] == true);
    assert_eq!((served.len(), refused.len()), (3, 3), "{results:?}");
    for r in &refused {
        ensure!(r["code"] == -32029, "{r}");
        let retry = r["data"]["retryAfterSeconds"].as_u64().unwrap_or_default();
        ensure!((1..=1200).contains(&retry), "retry after {retry} s: {r}");
        ensure!(r["error"].as_str().unwrap_or_default().contains(&format!("retry after {retry} s")), "{r}");
        ensure!(r["error"].as_str().unwrap_or_default().contains(&format!("ToolPolicy {ns}/capped")), "{r}");
    }
    let records = capped.wait_audit(|r| r.iter().filter(|r| r["kind"] == "decision").count() >= 6)?;
    let denied: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision" && r["decision"] == "deny").collect();
    ensure!(denied.len() == 3 && denied.iter().all(|r| r["rule"] == "spec.tools[0].rules[0]"), "{records:?}");

    // Audited: every call served; the ones past the limit say so.
    let results = burst(&watched)?;
    ensure!(results.iter().all(|r| r["ok"] == true), "an audited limit refused: {results:?}");
    let records = watched.wait_audit(|r| r.iter().filter(|r| r["kind"] == "decision").count() >= 6)?;
    let would: Vec<&Value> = records.iter().filter(|r| r["shadow"]["would"] == "deny").collect();
    ensure!(would.len() == 3, "{records:?}");
    ensure!(would.iter().all(|r| r["shadow"]["message"].as_str().unwrap_or_default().starts_with("would be rate limited")), "{would:?}");

    // A limit raised is applied within two seconds.
    let patch = r#"[{"op":"replace","path":"/spec/tools/0/rules/0/rateLimit","value":{"calls":1000,"period":"1s"}}]"#;
    cp.kubectl_ok(User::Admin, ["patch", "toolpolicy", "capped", "-n", &ns, "--type=json", "-p", patch])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        let step = py_client(&capped.url("files"), &json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "again"}}]))?;
        Ok((step[0]["ok"] == true).then_some(()))
    })
    .context("the raised limit was not applied within 2 s")?;
    Ok(())
}
