//! Audit mode (docs/design.md §3.1): an audited policy, rule or budget decides nothing, records
//! what it would have done, counts it into its status, and is switched on by a plain edit.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate_e2e::gateway::{GatewayProcess, Scene, get, model_client};
use tollgate_e2e::raw_mcp::RawSession;
use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, wait_until};

/// The same rules for two agents: enforced for `strict`, audited (`enforcement: Audit`) for
/// `rollout`; and an audited guardrail over the namespace.
fn objects(ns: &str, server: &str) -> String {
    let rules = r#"
    - name: echo
      server: files
      approvalWorkflow: ops
      rules:
        - {action: Deny, when: "args.message == 'deny me'", message: "denied for the test"}
        - {action: RequireApproval, when: "args.message.startsWith('hold')"}
        - {action: Deny, when: "args.message.matches('^cel-[0-9]+$')"}
        - {action: Allow}"#;
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{server}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {{name: ops}}
spec: {{approvers: {{users: [approver-a]}}, requiredApprovals: 1}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: strict, labels: {{mode: enforce}}}}
spec: {{selector: {{matchLabels: {{app: strict}}}}, serviceAccountName: strict, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: rollout, labels: {{mode: audit}}}}
spec: {{selector: {{matchLabels: {{app: rollout}}}}, serviceAccountName: rollout, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: strict}}
spec:
  agentSelector: {{matchLabels: {{mode: enforce}}}}
  tools:{rules}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: rollout}}
spec:
  enforcement: Audit
  agentSelector: {{matchLabels: {{mode: audit}}}}
  tools:{rules}
---
apiVersion: tollgate.dev/v1alpha1
kind: ClusterToolPolicy
metadata: {{name: guard-{ns}}}
spec:
  enforcement: Audit
  namespaceSelector: {{matchLabels: {{shadow-test: "{ns}"}}}}
  tools: [{{name: echo, rules: [{{action: Deny, when: "args.message == 'wipe'", message: "no wiping, org-wide"}}]}}]
"#
    )
}

/// A GET of the gateway's audit API with a token: the body.
fn read_audit(url: &str, token: &str) -> Result<String> {
    let out = std::process::Command::new("curl").args(["-sf", url, "-H", &format!("authorization: Bearer {token}")]).output()?;
    ensure!(out.status.success(), "GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// `tollgate audit shadow` over the audit store's would-be decisions in `ns`.
fn shadow_report(cp: &ControlPlane, gateway: &GatewayProcess, ns: &str) -> Result<String> {
    let body = read_audit(&format!("{}/audit/v1/records?namespace={ns}&shadow=true", gateway.url()), cp.token(User::Admin))?;
    let path = cp.dir().join(format!("{ns}-shadow.json"));
    std::fs::write(&path, body)?;
    let out = std::process::Command::new(tollgate_e2e::binary("tollgate-cli", "tollgate")?).args(["audit", "shadow", "-f"]).arg(&path).output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// A `tools/call` of `echo`: its text and whether it was refused.
fn echo(sidecar: &Sidecar, id: i64, message: &str) -> Result<(String, bool)> {
    let s = RawSession::open(&sidecar.url("files"), "2025-06-18")?;
    let answer = s.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": message}}}))?;
    answer.tool_text(&json!(id))
}

#[test]
fn an_audited_policy_decides_nothing_records_and_counts_what_it_would_have_done() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let ns = cp.create_namespace("shadow")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, &format!("shadow-test={ns}")])?;
    cp.apply(User::Admin, &ns, &objects(&ns, &server.url()))?;
    let gateway = GatewayProcess::start(cp, &format!("sqlite://{}?mode=rwc", cp.dir().join(format!("{ns}.db")).display()))?;
    cp.agent_identity(&ns, "rollout")?;
    let token = cp.dir().join(format!("{ns}-rollout.token"));
    std::fs::write(&token, cp.kubectl_ok(User::Admin, ["create", "token", "rollout", "-n", &ns, "--audience", "tollgate-gateway"])?.trim())?;
    let ship = [("TOLLGATE_AUDIT_URL", gateway.url()), ("TOLLGATE_AUDIT_TOKEN_FILE", token.display().to_string())];
    let ship: Vec<(&str, &str)> = ship.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let strict = Sidecar::start(cp, &ns, "strict", "strict", "strict-pod")?;
    let rollout = Sidecar::start_with_env(cp, &ns, "rollout", "rollout", "rollout-pod", &ship)?;

    // The enforced copy refuses; the audited copy lets every call through, at once (nobody is
    // asked to approve anything).
    for (id, message) in [(1, "deny me"), (2, "cel-42")] {
        let (text, refused) = echo(&strict, id, message)?;
        ensure!(refused && text.starts_with("Access denied"), "{message}: {text}");
    }
    for (id, message) in [(1, "deny me"), (2, "cel-42"), (3, "hold on"), (4, "wipe"), (5, "fine")] {
        let (text, refused) = echo(&rollout, id, message)?;
        ensure!(!refused && text.contains(message), "the audited policy decided {message:?}: {text}");
    }
    let requests = cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", &ns, "-o", "name"])?;
    ensure!(requests.trim().is_empty(), "an audited rule asked for approval: {requests}");

    // Each decision record says what would have happened instead.
    let decisions = rollout.wait_audit(|r| r.iter().filter(|r| r["kind"] == "decision").count() >= 5)?;
    let shadow_of = |message: &str| -> Result<Value> {
        let r =
            decisions.iter().find(|r| r["kind"] == "decision" && r["arguments"]["message"] == message).with_context(|| format!("no decision for {message}"))?;
        ensure!(r["decision"] == "allow", "{r}");
        Ok(r.get("shadow").cloned().unwrap_or(Value::Null))
    };
    let policy = format!("ToolPolicy {ns}/rollout");
    assert_eq!(shadow_of("deny me")?, json!({"would": "deny", "policy": policy, "rule": "spec.tools[0].rules[0]", "message": "denied for the test"}));
    assert_eq!(shadow_of("hold on")?["would"], "require_approval");
    assert_eq!(shadow_of("cel-42")?["rule"], "spec.tools[0].rules[2]");
    assert_eq!(
        shadow_of("wipe")?,
        json!({"would": "deny", "policy": format!("ClusterToolPolicy guard-{ns}"), "rule": "spec.tools[0].rules[0]", "message": "no wiping, org-wide"})
    );
    assert_eq!(shadow_of("fine")?, Value::Null, "nothing would change: no shadow");

    // Counted into status from the audit store, and shown by `kubectl get`.
    let status = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let p = get(cp, &ns, "toolpolicy", "rollout")?;
        Ok((p["status"]["shadow"]["wouldDeny"] == 2).then_some(p))
    })
    .context("the audited policy's counts in status")?;
    assert_eq!(status["status"]["shadow"]["wouldRequireApproval"], 1, "{status}");
    assert_eq!(status["status"]["enforcement"], "Audit");
    assert_eq!(get(cp, &ns, "toolpolicy", "strict")?["status"]["enforcement"], "Enforce");
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let g = cp.kubectl_ok(User::Admin, ["get", "clustertoolpolicy", &format!("guard-{ns}"), "-o", "jsonpath={.status.shadow.wouldDeny}"])?;
        Ok((g.trim() == "1").then_some(()))
    })
    .context("the audited guardrail's count")?;
    let report = shadow_report(cp, &gateway, &ns)?;
    let line = |rule: &str| report.lines().find(|l| l.contains(&policy) && l.contains(rule)).unwrap_or_default().to_owned();
    let denied = line("spec.tools[0].rules[0]");
    ensure!(
        denied.trim_start().starts_with("1 ") && denied.contains("deny") && denied.contains(&format!("{ns}/rollout")) && denied.contains("echo"),
        "{report}"
    );
    ensure!(line("spec.tools[0].rules[1]").contains("require_approval"), "{report}");
    let table = cp.kubectl_ok(User::Admin, ["get", "toolpolicies", "-n", &ns])?;
    let row = table.lines().find(|l| l.starts_with("rollout")).context("no row")?;
    ensure!(table.contains("MODE") && table.contains("WOULD-DENY") && row.contains("Audit"), "{table}");

    // Switched on by a plain edit: enforced within 2 s.
    cp.kubectl_ok(User::Admin, ["patch", "toolpolicy", "rollout", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"enforcement":"Enforce"}}"#])?;
    let edited = Instant::now();
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || Ok(echo(&rollout, 9, "deny me")?.1.then_some(())))
        .context("the policy switched to Enforce was not enforced within 2 s")?;
    println!("Audit → Enforce enforced after {:?}", edited.elapsed());
    Ok(())
}

#[test]
fn an_audited_budget_never_refuses_and_says_what_it_would_have_refused() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let budget =
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: rollout}\nspec: {period: Total, hardLimitUSD: 0.000001, enforcement: Audit}\n";
    let scene = Scene::new(cp, "shadow-budget", budget)?;
    let gateway = GatewayProcess::start(cp, &scene.ledger_url())?;
    let Scene { ns, key, .. } = scene;
    let env = gateway.agent_env(&key);
    // The limit is passed by the first call: an enforced budget would refuse the next two.
    let out = model_client(&env, &json!([{"op": "chat", "model": "fast"}, {"op": "chat", "model": "fast"}, {"op": "messages", "model": "sonnet"}]))?;
    ensure!(out.iter().all(|s| s["ok"] == true), "an audited budget refused: {out:?}");
    let admin = cp.token(User::Admin).to_owned();
    let shadows = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let body = read_audit(&format!("{}/audit/v1/records?namespace={ns}&shadow=true", gateway.url()), &admin)?;
        let v: Value = serde_json::from_str(&body)?;
        let records = v["records"].as_array().cloned().unwrap_or_default();
        Ok((records.len() >= 2).then_some(records))
    })
    .context("the would-be refusals in the audit store")?;
    for r in &shadows {
        let s = &r["record"]["shadow"];
        ensure!(r["record"]["kind"] == "model_call" && r["record"]["decision"] == "allow", "{r}");
        ensure!(s["would"] == "deny" && s["policy"] == format!("Budget {ns}/rollout"), "{r}");
        ensure!(s["message"].as_str().unwrap_or_default().contains("budget rollout would have refused"), "{r}");
    }
    let status = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let b = get(cp, &ns, "budget", "rollout")?;
        Ok((b["status"]["state"] == "HardExceeded" && b["status"]["shadow"]["wouldDeny"] == 2).then_some(b))
    })
    .context("the audited budget's status")?;
    assert_eq!(status["status"]["enforcement"], "Audit", "{status}");
    let event = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let e =
            cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=HardLimitReached", "-o", "jsonpath={.items[*].message}"])?;
        Ok((!e.trim().is_empty()).then_some(e))
    })?;
    ensure!(event.contains("it is in Audit, so they are served"), "{event}");

    // Switched on: the next call is refused, as the SDK reports it.
    cp.kubectl_ok(User::Admin, ["patch", "budget", "rollout", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"enforcement":"Enforce"}}"#])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        let s = model_client(&env, &json!([{"op": "chat", "model": "fast"}]))?.remove(0);
        Ok((s["status"] == 403 && s["message"].as_str().unwrap_or_default().contains("budget rollout is spent")).then_some(()))
    })
    .context("the budget switched to Enforce did not refuse within 2 s")?;
    Ok(())
}
