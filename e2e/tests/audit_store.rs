//! The audit store: a sidecar ships its records to the gateway under its own service-account
//! token, through a gateway outage, each record once; reading needs RBAC's leave; the chain names
//! a changed row, online and offline (`tollgate audit verify`).

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use tollgate_e2e::gateway::Gateway;
use tollgate_e2e::raw_mcp::RawSession;
use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, wait_until};

/// `GET`/`POST` on the gateway's audit API with a token; the status and the body.
fn audit_api(gateway: &Gateway, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &format!("{}{path}", gateway.url()), "-H", &format!("authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = String::from_utf8_lossy(&cmd.output()?.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').context("no status")?;
    Ok((status.trim().parse()?, body.to_owned()))
}

fn stored(gateway: &Gateway, admin: &str, ns: &str) -> Result<Vec<Value>> {
    let (status, body) = audit_api(gateway, "GET", &format!("/audit/v1/records?namespace={ns}"), admin, None)?;
    ensure!(status == 200, "{status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["records"].as_array().cloned().unwrap_or_default())
}

#[test]
fn sidecars_ship_audit_records_once_through_an_outage_and_a_changed_row_is_named() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let ns = cp.create_namespace("audit")?;
    cp.apply(
        User::Admin,
        &ns,
        &format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: files}}\nspec: {{url: \"{}\"}}\n---\n\
             apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {{name: coder}}\nspec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: [files]}}\n---\n\
             apiVersion: tollgate.dev/v1alpha1\nkind: ToolPolicy\nmetadata: {{name: files}}\nspec: {{tools: [{{server: files, name: delete_everything, rules: [{{action: Deny}}]}}]}}\n",
            server.url()
        ),
    )?;
    let db = cp.dir().join(format!("{ns}-audit.db"));
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let gateway = Gateway::start(cp, &url)?;
    let port = gateway.port;
    // The agent's identity (its service account, with the agent roles), as the sidecar has it.
    cp.agent_identity(&ns, "coder")?;
    let token = cp.dir().join(format!("{ns}-coder.token"));
    let sidecar_token =
        |path: &std::path::Path| -> Result<()> { Ok(std::fs::write(path, cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns])?.trim())?) };
    sidecar_token(&token)?;
    let env = [("TOLLGATE_AUDIT_URL", gateway.url()), ("TOLLGATE_AUDIT_TOKEN_FILE", token.display().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_with_env(cp, &ns, "coder", "coder", "coder-pod", &env)?;
    let admin = cp.token(User::Admin).to_owned();
    let call = |id: i64, tool: &str| -> Result<()> {
        let s = RawSession::open(&sidecar.url("files"), "2025-06-18")?;
        s.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "hi"}}}))?;
        Ok(())
    };
    call(1, "echo")?;
    call(2, "delete_everything")?;
    let records = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = stored(&gateway, &admin, &ns)?;
        Ok((r.len() >= 4).then_some(r))
    })
    .context("the sidecar's records in the store")?;
    // The identity is the one the API server vouched for, not what a record says.
    assert!(records.iter().all(|r| r["record"]["source"] == json!({"namespace": ns, "serviceAccount": "coder", "writer": "sidecar"})), "{records:?}");
    assert!(records.iter().any(|r| r["record"]["tool"] == "delete_everything" && r["record"]["decision"] == "deny"));

    // The gateway is killed (SIGKILL) while the sidecar ships; calls go on; it comes back on its
    // address and every record arrives once.
    call(3, "echo")?;
    gateway.process.kill();
    drop(gateway);
    call(4, "echo")?;
    let gateway = Gateway::start_on(cp, &url, port)?;
    let emitted = || sidecar.audit_records().into_iter().filter(|r| r.get("kind").is_some()).count();
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || Ok((stored(&gateway, &admin, &ns)?.len() == emitted()).then_some(())))
        .with_context(|| format!("stored vs emitted: {:?} vs {}", stored(&gateway, &admin, &ns).map(|r| r.len()), emitted()))?;
    assert_eq!(emitted(), 8);

    // Reading needs the right to list auditrecords.tollgate.dev; an approver lacks it.
    let approver = cp.token(User::ApproverA).to_owned();
    let (status, body) = audit_api(&gateway, "GET", &format!("/audit/v1/records?namespace={ns}"), &approver, None)?;
    assert!(status == 403 && body.contains("auditrecords"), "{status}: {body}");
    // Only an agent's service account ships, as itself.
    cp.kubectl_ok(User::Admin, ["create", "serviceaccount", "intruder", "-n", &ns])?;
    let intruder = cp.kubectl_ok(User::Admin, ["create", "token", "intruder", "-n", &ns])?;
    let forged = json!({"batch_id": "x", "records": [{"kind": "decision", "tool": "echo", "decision": "allow"}]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", intruder.trim(), Some(&forged))?;
    assert!(status == 403 && body.contains("not the service account of any ManagedAgent"), "{status}: {body}");
    let (status, _) = audit_api(&gateway, "POST", "/audit/v1/batches", "not-a-token", Some(&forged))?;
    assert_eq!(status, 401);
    // The agent's own account is refused what is not a batch of records, and more than a batch.
    let own = std::fs::read_to_string(&token)?;
    let not_records = json!({"batch_id": "y", "records": [{"kind": "decision"}, 1]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", own.trim(), Some(&not_records))?;
    assert!(status == 400 && body.contains("record 1 is not a JSON object"), "{status}: {body}");
    let flood = json!({"batch_id": "z", "records": vec![json!({}); 1001]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", own.trim(), Some(&flood))?;
    assert!(status == 413 && body.contains("at most 1000"), "{status}: {body}");

    // The chain is whole; exported, it checks offline too.
    let (_, verdict) = audit_api(&gateway, "GET", "/audit/v1/verify", &admin, None)?;
    assert_eq!(serde_json::from_str::<Value>(&verdict)?["ok"], true, "{verdict}");
    let export = |name: &str| -> Result<std::path::PathBuf> {
        let (status, body) = audit_api(&gateway, "GET", "/audit/v1/export", &admin, None)?;
        ensure!(status == 200, "{status}");
        let path = cp.dir().join(format!("{ns}-{name}.jsonl"));
        std::fs::write(&path, body)?;
        Ok(path)
    };
    let tollgate = tollgate_e2e::binary("tollgate-cli", "tollgate")?;
    let whole = Command::new(&tollgate).args(["audit", "verify", "-f"]).arg(export("whole")?).output()?;
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stdout));

    // One stored row changed behind the gateway's back: verification names it.
    let tamper = format!(
        "import sqlite3; c = sqlite3.connect('{}'); c.execute(\"UPDATE audit SET record = replace(record, 'delete_everything', 'echo') WHERE tool = 'delete_everything'\"); c.commit()",
        db.display()
    );
    let out = Command::new("python3").args(["-c", &tamper]).output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let changed = records.iter().find(|r| r["record"]["tool"] == "delete_everything").and_then(|r| r["seq"].as_i64()).context("seq")?;
    let (_, verdict) = audit_api(&gateway, "GET", "/audit/v1/verify", &admin, None)?;
    let v: Value = serde_json::from_str(&verdict)?;
    assert!(v["ok"] == false && v["error"].as_str().unwrap_or_default().contains(&format!("record {changed}")), "{verdict}");
    let broken = Command::new(&tollgate).args(["audit", "verify", "-f"]).arg(export("tampered")?).output()?;
    let said = String::from_utf8_lossy(&broken.stdout);
    assert!(!broken.status.success() && said.contains(&format!("record {changed}")), "{said}");
    Ok(())
}
