//! The audit store: a sidecar ships its records to the gateway under its own service-account
//! token, through a gateway outage, each record once; reading needs RBAC's leave; the chain names
//! a changed row, online and offline (`tollgate audit verify`).

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, FakeProvider, GatewayProcess, OPENAI_KEY, agent_key, model_client, setup};
use tollgate_e2e::raw_mcp::RawSession;
use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, wait_until};

/// `GET`/`POST` on the gateway's audit API with a token; the status and the body.
fn audit_api(gateway: &GatewayProcess, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &format!("{}{path}", gateway.url()), "-H", &format!("authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = String::from_utf8_lossy(&cmd.output()?.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').context("no status")?;
    Ok((status.trim().parse()?, body.to_owned()))
}

fn stored(gateway: &GatewayProcess, admin: &str, ns: &str) -> Result<Vec<Value>> {
    let (status, body) = audit_api(gateway, "GET", &format!("/audit/v1/records?namespace={ns}"), admin, None)?;
    ensure!(status == 200, "{status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["records"].as_array().cloned().unwrap_or_default())
}

/// A record as the sidecar wrote it, whatever the store added (`source`) or vouched for
/// (`agent`): keys sorted, so the same record reads the same from the sidecar and the store.
fn fingerprint(record: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), canonical(v))).collect::<std::collections::BTreeMap<_, _>>().into_iter().collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let mut r = canonical(record);
    r.as_object_mut().map(|o| (o.remove("source"), o.remove("agent")));
    r.to_string()
}

/// The sidecar's records and the store's, each as a sorted list of fingerprints.
fn emitted_and_stored(sidecar: &Sidecar, gateway: &GatewayProcess, admin: &str, ns: &str) -> Result<(Vec<String>, Vec<String>)> {
    // As stored: a control character (a NUL) becomes U+FFFD, as the docs say.
    let cleaned = |f: String| f.replace("\\u0000", "\u{FFFD}");
    let mut emitted: Vec<String> = sidecar.audit_records()?.iter().filter(|r| r.get("kind").is_some()).map(|r| cleaned(fingerprint(r))).collect();
    let mut kept: Vec<String> =
        stored(gateway, admin, ns)?.iter().filter(|l| l["record"]["source"]["writer"] == "sidecar").map(|l| fingerprint(&l["record"])).collect();
    emitted.sort();
    kept.sort();
    Ok((emitted, kept))
}

/// The whole chain as exported: what a refused batch must leave as it was.
fn export(gateway: &GatewayProcess, admin: &str) -> Result<String> {
    let (status, body) = audit_api(gateway, "GET", "/audit/v1/export", admin, None)?;
    ensure!(status == 200, "{status}: {body}");
    Ok(body)
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
    let gateway = GatewayProcess::start(cp, &url)?;
    let port = gateway.port;
    // The agent's identity (its service account, with the agent roles), as the sidecar has it.
    cp.agent_identity(&ns, "coder")?;
    let token = cp.dir().join(format!("{ns}-coder.token"));
    let sidecar_token = |path: &std::path::Path| -> Result<()> {
        Ok(std::fs::write(path, cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns, "--audience", "tollgate-gateway"])?.trim())?)
    };
    sidecar_token(&token)?;
    // The first batch is stored but its answer lost on the way back: the sidecar must send it
    // again, and the store must keep it once.
    let lossy = tollgate_e2e::proxy::AnswerDropper::start(([127, 0, 0, 1], port).into(), "/audit/v1/batches", 1)?;
    let env = [("TOLLGATE_AUDIT_URL", lossy.url()), ("TOLLGATE_AUDIT_TOKEN_FILE", token.display().to_string())];
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
    let gateway = GatewayProcess::start_on(cp, &url, port)?;
    // Every record the sidecar wrote is in the store, once, as it was written.
    let (emitted, kept) = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let (emitted, kept) = emitted_and_stored(&sidecar, &gateway, &admin, &ns)?;
        Ok((emitted.len() == 8 && kept.len() >= emitted.len()).then_some((emitted, kept)))
    })
    .with_context(|| format!("emitted vs stored: {:?}", emitted_and_stored(&sidecar, &gateway, &admin, &ns)))?;
    assert_eq!(kept, emitted, "the store does not hold exactly the records the sidecar wrote");
    assert_eq!(lossy.dropped().len(), 1, "no answer was lost, so no retry of a stored batch was tried: {:?}", lossy.dropped());
    let before = export(&gateway, &admin)?;

    // Reading needs the right to list auditrecords.tollgate.dev; an approver lacks it.
    let approver = cp.token(User::ApproverA).to_owned();
    let (status, body) = audit_api(&gateway, "GET", &format!("/audit/v1/records?namespace={ns}"), &approver, None)?;
    assert!(status == 403 && body.contains("auditrecords"), "{status}: {body}");
    // Only an agent's service account ships, as itself.
    cp.kubectl_ok(User::Admin, ["create", "serviceaccount", "intruder", "-n", &ns])?;
    let intruder = cp.kubectl_ok(User::Admin, ["create", "token", "intruder", "-n", &ns, "--audience", "tollgate-gateway"])?;
    let forged = json!({"batch_id": "x", "records": [{"kind": "decision", "tool": "echo", "decision": "allow"}]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", intruder.trim(), Some(&forged))?;
    assert!(status == 403 && body.contains("not the service account of any ManagedAgent"), "{status}: {body}");
    ensure!(export(&gateway, &admin)? == before, "a refused batch changed the store");
    let (status, _) = audit_api(&gateway, "POST", "/audit/v1/batches", "not-a-token", Some(&forged))?;
    assert_eq!(status, 401);
    ensure!(export(&gateway, &admin)? == before, "a refused batch changed the store");
    // The agent's token for the API server is not one for the gateway: refused, so a token
    // sniffed on its way to the gateway opens nothing at the API server, and the other way round.
    let api_token = cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns])?;
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", api_token.trim(), Some(&forged))?;
    assert!(status == 401 && body.contains("not valid for audience tollgate-gateway"), "{status}: {body}");
    ensure!(export(&gateway, &admin)? == before, "a refused batch changed the store");
    // The agent's own account is refused what is not a batch of records, and more than a batch.
    let own = std::fs::read_to_string(&token)?;
    let not_records = json!({"batch_id": "y", "records": [{"kind": "decision"}, 1]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", own.trim(), Some(&not_records))?;
    assert!(status == 400 && body.contains("record 1 is not a JSON object"), "{status}: {body}");
    ensure!(export(&gateway, &admin)? == before, "a refused batch changed the store");
    let flood = json!({"batch_id": "z", "records": vec![json!({}); 1001]}).to_string();
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", own.trim(), Some(&flood))?;
    assert!(status == 413 && body.contains("at most 1000"), "{status}: {body}");
    ensure!(export(&gateway, &admin)? == before, "a refused batch changed the store");

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

/// An MCP session on `url` by hand, with nothing but Python's standard library (a body of
/// megabytes cannot be a command-line argument): `initialize`, then `tools/call` of `tool`
/// with `message` of `size` bytes. The first 2 000 characters of the call's answer.
fn call_with_stdlib(url: &str, tool: &str, size: usize) -> Result<Value> {
    const SCRIPT: &str = r#"
import http.client, json, sys, urllib.parse
url, tool, size = urllib.parse.urlsplit(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
def post(body, session=None):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
    if session: h["mcp-session-id"] = session
    c.request("POST", url.path, json.dumps(body), h)
    r = c.getresponse(); text = r.read().decode()
    data = [l[5:] for l in text.splitlines() if l.startswith("data:")]
    return (json.loads(data[0]) if data else json.loads(text) if text else {"status": r.status}), r.getheader("mcp-session-id") or session
_, s = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, s)
answer, _ = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "x" * size}}}, s)
print(json.dumps({"head": json.dumps(answer)[:2000]}))
"#;
    // The tool's name as JSON: it may hold a NUL, which no command-line argument can.
    let out = Command::new("python3").args(["-c", SCRIPT, url, &Value::from(tool).to_string(), &size.to_string()]).output()?;
    ensure!(out.status.success(), "the MCP call failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Records that a database cannot take as they are (a NUL in a tool or model name, megabytes of
/// arguments, a provider reporting 10^19 tokens) are stored cleaned and bounded, on the real
/// PostgreSQL, and another agent's calls keep settling meanwhile: each used to fail its batch,
/// which was retried for ever while every later call waited behind it.
#[test]
fn bad_records_are_stored_bounded_and_never_hold_up_other_agents_on_postgres() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let pg = tollgate_e2e::postgres::Postgres::start(cp.dir())?;
    let server = Modern::start(cp)?;
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let (ns, key) = setup(cp, &fake, "audit-bad", "")?;
    cp.apply(
        User::Admin,
        &ns,
        &format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: files}}\nspec: {{url: \"{}\"}}\n", server.url()),
    )?;
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"mcpServers":["files"]}}"#])?;
    let gateway = GatewayProcess::start(cp, &pg.url())?;
    cp.agent_identity(&ns, "coder")?;
    let token = cp.dir().join(format!("{ns}-coder.token"));
    std::fs::write(&token, cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns, "--audience", "tollgate-gateway"])?.trim())?;
    let env = [("TOLLGATE_AUDIT_URL", gateway.url()), ("TOLLGATE_AUDIT_TOKEN_FILE", token.display().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_with_env(cp, &ns, "coder", "coder", "coder-pod", &env)?;
    let admin = cp.token(User::Admin).to_owned();

    // The agent's own bad records: 3 MiB of arguments, and a tool named with a NUL.
    let big = call_with_stdlib(&sidecar.url("files"), "echo", 3 << 20)?;
    ensure!(big["head"].as_str().unwrap_or_default().contains("Echo: xxx"), "{big}");
    call_with_stdlib(&sidecar.url("files"), "echo\u{0}drop", 2)?;
    // Its model calls: a model named with a NUL (refused, and audited), and a provider that
    // reports 10^19 tokens.
    let model = |key: &str, step: Value| -> Result<Value> { Ok(model_client(&gateway.agent_env(key), &json!([step]))?.remove(0)) };
    let nul = model(&key, json!({"op": "chat", "model": "gpt\u{0}x"}))?;
    ensure!(nul["status"] == 404, "{nul}");
    ensure!(model(&key, json!({"op": "chat", "model": "absurd"}))?["ok"] == true);
    // Another agent's call, after them: it settles, within seconds.
    let other = agent_key(cp, &ns, "other")?;
    ensure!(model(&other, json!({"op": "messages", "model": "sonnet"}))?["ok"] == true);
    let records = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let r = stored(&gateway, &admin, &ns)?;
        Ok(r.iter().any(|l| l["record"]["agent"]["name"] == "other" && l["record"]["kind"] == "model_call").then_some(r))
    })
    .with_context(|| format!("the other agent's call was never settled; the gateway's log:\n{}", gateway.process.log_tail()))?;
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| -> Result<Value> {
        records.iter().map(|l| l["record"].clone()).find(|r| f(r)).with_context(|| format!("no stored record {what}: {records:?}"))
    };
    let cut = find("cut down", &|r| r["truncated"]["originalBytes"].as_u64().is_some_and(|n| n > 3 << 20))?;
    ensure!(cut["tool"] == "echo" && cut.to_string().len() <= 64 << 10, "{cut}");
    find("of the NUL tool, cleaned", &|r| r["tool"] == "echo\u{FFFD}drop")?;
    find("of the NUL model's refusal, cleaned", &|r| r["tool"] == "gpt\u{FFFD}x" && r["decision"] == "deny")?;
    let absurd = find("of the absurd usage", &|r| r["tool"] == "absurd")?;
    ensure!(absurd["tokens"]["input"] == json!(1u64 << 40) && absurd["costUSD"] == json!(1_000_000.0), "{absurd}");
    ensure!(!records.iter().any(|l| l.to_string().contains("\\u0000")), "a NUL was stored");
    // Every record the sidecar wrote is stored, once.
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let (emitted, kept) = emitted_and_stored(&sidecar, &gateway, &admin, &ns)?;
        Ok((!emitted.is_empty() && kept.len() >= emitted.len()).then_some(()))
    })
    .with_context(|| format!("emitted vs stored: {:?}", emitted_and_stored(&sidecar, &gateway, &admin, &ns)))?;
    // The cut record is stored cut, so only the others can read the same at both ends.
    let (emitted, kept) = emitted_and_stored(&sidecar, &gateway, &admin, &ns)?;
    let uncut = |v: &Vec<String>| -> Vec<String> { v.iter().filter(|f| f.len() < 60_000 && !f.contains("\"truncated\"")).cloned().collect() };
    ensure!(kept.len() == emitted.len() && uncut(&kept) == uncut(&emitted), "the store does not hold the sidecar's records once each: {kept:?} vs {emitted:?}");
    let (_, verdict) = audit_api(&gateway, "GET", "/audit/v1/verify", &admin, None)?;
    ensure!(serde_json::from_str::<Value>(&verdict)?["ok"] == true, "{verdict}");

    // The agent's status says its trail has a cut record; the other agent's, that it has none.
    let audit_condition = |agent: &str| -> Result<Option<(String, String)>> {
        let out = cp.kubectl_ok(User::Admin, ["get", "managedagent", agent, "-n", &ns, "-o", "json"])?;
        let v: Value = serde_json::from_str(&out)?;
        let c = v["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "AuditComplete");
        Ok(c.map(|c| (c["reason"].as_str().unwrap_or_default().to_owned(), c["message"].as_str().unwrap_or_default().to_owned())))
    };
    let wait_reason = |agent: &str, reason: &str| {
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || Ok(audit_condition(agent)?.filter(|(r, _)| r == reason)))
            .with_context(|| format!("agent {agent}'s AuditComplete never became {reason}: {:?}", audit_condition(agent)))
    };
    let cut_stored =
        stored(&gateway, &admin, &ns)?.iter().filter(|l| l["record"]["agent"]["name"] == "coder" && l["record"].get("truncated").is_some()).count();
    let (_, said) = wait_reason("coder", "RecordsCut")?;
    ensure!(cut_stored > 0 && said.starts_with(&format!("{cut_stored} audit records")), "{cut_stored} stored cut: {said}");
    wait_reason("other", "Complete")?;
    // Records a sidecar lost (its queue overflowed) are said by a gap record, and then in status.
    let gap = json!({"batch_id": "gap-1", "records": [{"kind": "audit-gap", "agent": {"name": "coder"}, "lost": 42, "reason": "overflowed"}]});
    let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", std::fs::read_to_string(&token)?.trim(), Some(&gap.to_string()))?;
    ensure!(status == 200, "{status}: {body}");
    let (_, said) = wait_reason("coder", "RecordsLost")?;
    ensure!(said.contains("42 audit records") && said.contains(&format!("{cut_stored} were stored cut")), "{said}");
    // `kubectl get` shows it.
    let table = cp.kubectl_ok(User::Admin, ["get", "managedagents", "-n", &ns])?;
    ensure!(table.lines().next().is_some_and(|h| h.contains("AUDIT")) && table.contains("RecordsLost") && table.contains("Complete"), "{table}");
    Ok(())
}

/// The audit chain's signed checkpoints: the operator makes a Gateway's signing key and shows its
/// public key in the Gateway's status; the gateway signs the chain's head into ConfigMaps; and
/// verification names a tail cut off, a whole chain recomputed, and two rows swapped, which the
/// hash chain alone could not all see.
#[test]
fn a_truncated_rewritten_or_reordered_chain_is_named_against_signed_checkpoints() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let system = "tollgate-system";
    let gateway_name = format!("audit-{}", std::process::id());
    cp.apply(User::Admin, system, &format!("apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: {gateway_name}}}\nspec: {{replicas: 0}}\n"))?;
    let public = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let key = cp.kubectl_ok(User::Admin, ["get", "gateway", &gateway_name, "-n", system, "-o", "jsonpath={.status.auditPublicKey}"])?;
        Ok((!key.trim().is_empty()).then(|| key.trim().to_owned()))
    })
    .context("the Gateway's status shows no audit public key")?;
    let secret = format!("{gateway_name}-gateway-audit-key");
    let signing_key = cp.kubectl_ok(User::Admin, ["get", "secret", &secret, "-n", system, "-o", "jsonpath={.data.ed25519\\.pkcs8}"])?;
    let signing_key = String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signing_key.trim())?)?;

    let ns = cp.create_namespace("audit-signed")?;
    cp.apply(User::Admin, &ns, "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: coder}\nspec: {selector: {matchLabels: {app: coder}}, serviceAccountName: coder}\n")?;
    cp.agent_identity(&ns, "coder")?;
    let db = cp.dir().join(format!("{ns}-audit.db"));
    let [port] = tollgate_e2e::free_ports::<1>()?;
    let env =
        [("TOLLGATE_AUDIT_SIGNING_KEY", signing_key.as_str()), ("TOLLGATE_AUDIT_CHECKPOINT_NAMESPACE", system), ("TOLLGATE_AUDIT_CHECKPOINT_SECONDS", "1")];
    let gateway = GatewayProcess::start_with(cp, &format!("sqlite://{}?mode=rwc", db.display()), port, &env)?;
    let admin = cp.token(User::Admin).to_owned();
    let agent = cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns, "--audience", "tollgate-gateway"])?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        // The gateway takes batches once it knows the agent.
        let (status, _) = audit_api(&gateway, "POST", "/audit/v1/batches", agent.trim(), Some(r#"{"batch_id": "probe", "records": []}"#))?;
        Ok((status == 200).then_some(()))
    })?;
    for i in 1..=5 {
        let batch = json!({"batch_id": format!("b{i}"), "records": [{"kind": "decision", "tool": format!("t{i}"), "decision": "allow"}]}).to_string();
        let (status, body) = audit_api(&gateway, "POST", "/audit/v1/batches", agent.trim(), Some(&batch))?;
        ensure!(status == 200, "{status}: {body}");
    }
    // A checkpoint covers all five, and the gateway's verification says so.
    let verdict = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let (_, body) = audit_api(&gateway, "GET", "/audit/v1/verify", &admin, None)?;
        let v: Value = serde_json::from_str(&body)?;
        Ok((v["ok"] == true && v["records"] == 5 && v["checkpoints"].as_u64().unwrap_or(0) >= 1).then_some(v))
    })
    .context("no checkpoint of the chain")?;
    ensure!(verdict["publicKey"] == public.as_str(), "the gateway signs with another key than its Gateway shows: {verdict}");
    let id = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let maps = cp.kubectl_ok(User::Admin, ["get", "configmap", "-n", system, "-l", "tollgate.dev/audit-checkpoint", "-o", "json"])?;
        let v: Value = serde_json::from_str(&maps)?;
        let covering = v["items"].as_array().into_iter().flatten().find(|m| m["data"]["checkpoint"].as_str().is_some_and(|c| c.contains("\"seq\":5")));
        Ok(covering.and_then(|m| m["metadata"]["labels"]["tollgate.dev/audit-checkpoint"].as_str().map(str::to_owned)))
    })
    .context("no checkpoint ConfigMap covers record 5")?;
    // The gateway may not rewrite a checkpoint it wrote.
    let gateway_user = format!("system:serviceaccount:{system}:tollgate-gateway");
    for verb in ["update", "delete", "patch"] {
        // `can-i` answers on stdout and exits 1 for "no"; anything else (an error) is no answer.
        let out = cp.kubectl(User::Admin, ["auth", "can-i", verb, "configmaps", "-n", system, "--as", &gateway_user])?;
        let said = String::from_utf8_lossy(&out.stdout);
        ensure!(said.trim() == "no", "may the gateway {verb} its checkpoints? {said:?} {}", String::from_utf8_lossy(&out.stderr));
    }
    let listing = cp.dir().join(format!("{ns}-checkpoints.json"));
    std::fs::write(
        &listing,
        cp.kubectl_ok(User::Admin, ["get", "configmap", "-n", system, "-l", &format!("tollgate.dev/audit-checkpoint={id}"), "-o", "json"])?,
    )?;
    let (_, export) = audit_api(&gateway, "GET", "/audit/v1/export", &admin, None)?;
    let lines: Vec<Value> = export.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(lines.len() == 5, "{export}");
    let tollgate = tollgate_e2e::binary("tollgate-cli", "tollgate")?;
    let write = |name: &str, links: &[Value]| -> Result<std::path::PathBuf> {
        let path = cp.dir().join(format!("{ns}-{name}.jsonl"));
        std::fs::write(&path, links.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        Ok(path)
    };
    let check = |name: &str, links: &[Value]| -> Result<(bool, String)> {
        let path = write(name, links)?;
        let out = Command::new(&tollgate).args(["audit", "verify", "-f"]).arg(&path).arg("--checkpoints").arg(&listing).args(["--key", &public]).output()?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    // What the hash chain alone says of an export (all it could say before checkpoints).
    let chain_only = |name: &str, links: &[Value]| -> Result<bool> {
        Ok(Command::new(&tollgate).args(["audit", "verify", "-f"]).arg(write(&format!("{name}-plain"), links)?).output()?.status.success())
    };
    let (ok, said) = check("whole", &lines)?;
    ensure!(ok && said.contains("matches"), "{said}");
    // The tail cut off (and the head reset): the chain alone is whole, the checkpoint saw more.
    ensure!(chain_only("truncated", &lines[..4])?, "the chain alone should not see a tail cut off");
    let (ok, said) = check("truncated", &lines[..4])?;
    ensure!(!ok && said.contains("ends at record 4") && said.contains("removed from the end"), "{said}");
    // The whole chain recomputed after a change, as whoever writes the database could.
    let mut records: Vec<Value> = lines.iter().map(|l| l["record"].clone()).collect();
    records[1]["decision"] = json!("deny");
    let forged: Vec<Value> =
        tollgate_core::audit::chain::chain(0, tollgate_core::audit::chain::GENESIS, records).into_iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    ensure!(chain_only("rewritten", &forged)?, "the chain alone should not see a whole chain recomputed");
    let (ok, said) = check("rewritten", &forged)?;
    ensure!(!ok && said.contains("the chain was rewritten"), "{said}");
    // Two rows swapped.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let (ok, said) = check("reordered", &swapped)?;
    ensure!(!ok && said.contains("record 4"), "{said}");
    // And online: the gateway's own verification names a tail cut off in its database.
    let cut = format!(
        "import sqlite3; c = sqlite3.connect('{}'); c.execute('DELETE FROM audit WHERE seq = 5'); c.execute('UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit WHERE seq = 4) WHERE id = 1'); c.commit()",
        db.display()
    );
    let out = Command::new("python3").args(["-c", &cut]).output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, body) = audit_api(&gateway, "GET", "/audit/v1/verify", &admin, None)?;
    let v: Value = serde_json::from_str(&body)?;
    ensure!(v["ok"] == false && v["error"].as_str().unwrap_or_default().contains("removed from the end"), "{body}");
    Ok(())
}

/// What a sidecar did while nobody read its stdout.
struct Unread {
    /// Calls answered (HTTP 200) within 5 s each, of [`UNREAD_CALLS`].
    answered: usize,
    /// Of those, refused because their records could not be written.
    refused: usize,
    /// Decision and outcome records on stdout once it is read again.
    records: usize,
    /// Records the `audit-gap` lines say were left out.
    lost: u64,
    metrics: String,
    sidecar: Sidecar,
    /// Where stdout is read into.
    out: std::path::PathBuf,
    /// The answer to the built-in `request_approval`, asked once the calls were made.
    builtin: String,
    /// The error answering a `tools/call` without an id, sent after it.
    invalid: String,
}

/// The decision and outcome records among whole lines of stdout, the records `audit-gap` lines
/// say were left out (`unread`), and the calls they say were refused without a record.
fn count(text: &str) -> Result<(usize, u64, u64)> {
    let (mut records, mut lost, mut refused) = (0, 0, 0);
    // Whole lines only: the reader may be mid-write.
    for line in text.rsplit_once('\n').map_or("", |(done, _)| done).lines() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("a line of stdout that is not a record: {line:.200}"))?;
        match (v["kind"].as_str(), v["reason"].as_str()) {
            (Some("decision" | "outcome"), _) => records += 1,
            (Some("audit-gap"), Some(reason @ ("unread" | "refused_unread"))) => {
                ensure!(v["agent"]["name"] == "coder", "{v}");
                let n = v["lost"].as_u64().context("lost")?;
                if reason == "unread" { lost += n } else { refused += n }
            }
            _ => anyhow::bail!("an unexpected line: {line:.200}"),
        }
    }
    Ok((records, lost, refused))
}

const UNREAD_CALLS: usize = 400;

/// A sidecar whose stdout nobody reads takes [`UNREAD_CALLS`] denied calls (no upstream is
/// asked), each with 24 KB of arguments: a decision record of 24 KB a call (its outcome record
/// names it without repeating them), 9.6 MB in all, more than the pipe (64 KiB) and the
/// sidecar's bound (4 MiB) hold together. Then stdout is read, until
/// it accounts for every call's records (`accounted`).
fn with_stdout_unread(name: &str, env: &[(&str, &str)], accounted: impl Fn(usize, u64, usize) -> bool) -> Result<Unread> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace(name)?;
    cp.apply(
        User::Admin,
        &ns,
        "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: files}\nspec: {url: \"http://127.0.0.1:9/mcp\"}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: coder}\nspec: {selector: {matchLabels: {app: coder}}, serviceAccountName: coder, mcpServers: [files]}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: ToolPolicy\nmetadata: {name: files}\nspec: {tools: [{server: files, name: delete_everything, rules: [{action: Deny}]}]}\n",
    )?;
    let (go, out) = (cp.dir().join(format!("{ns}-read")), cp.dir().join(format!("{ns}-stdout")));
    // Reads nothing until a line comes through the pipe `go`, then everything, into `out`.
    let made = Command::new("mkfifo").arg(&go).status()?;
    ensure!(made.success(), "mkfifo {}: {made}", go.display());
    let reader = format!("(read -r line < '{}'; exec cat > '{}')", go.display(), out.display());
    let bin = tollgate_e2e::binary("tollgate-sidecar", "tollgate-sidecar")?;
    let sidecar = Sidecar::start_binary(cp, &ns, "coder", "coder", "coder-pod", &bin, tollgate_e2e::Launch::StdoutInto(&reader), &[], env)?;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "delete_everything", "arguments": {"note": "the quick brown fox jumps over the lazy dog ".repeat(550)}}});
    let body_file = cp.dir().join(format!("{ns}-body.json"));
    std::fs::write(&body_file, body.to_string())?;
    // Over one connection; the first call not answered within 5 s ends the run.
    let answers = Command::new("curl")
        .args(["-s", "--fail-early", "--max-time", "5", "-w", "\n%{http_code}\n"])
        .args(["-H", "content-type: application/json", "-H", "accept: application/json, text/event-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(format!("{}?n=[1-{UNREAD_CALLS}]", sidecar.url("files")))
        .output()?;
    let answers = String::from_utf8_lossy(&answers.stdout).into_owned();
    let answered = answers.lines().filter(|l| *l == "200").count();
    let refused = answers.matches("cannot write audit records now").count();
    ensure!(answered == UNREAD_CALLS, "{answered} of {UNREAD_CALLS} calls answered while nobody read stdout: {}", sidecar.process.log_tail());
    // The built-in tool writes records as any call does: without a store it is refused, as
    // stdout is unread; with one, decided (denied: the agent may not use the built-in server).
    let headers = ["content-type: application/json".to_owned(), "accept: application/json, text/event-stream".to_owned()];
    let ask = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "request_approval", "arguments": {"operation": "x"}}});
    let (builtin, _) = tollgate_e2e::raw_mcp::request("POST", &sidecar.url("files"), &headers, Some(&ask.to_string()))?.tool_text(&json!(7))?;
    // So does a call refused before any decision (here: no id).
    let idless = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}});
    let invalid = tollgate_e2e::raw_mcp::request("POST", &sidecar.url("files"), &headers, Some(&idless.to_string()))?.error_message()?.to_owned();

    // Opening the pipe waits for the reader to open its end.
    std::fs::write(&go, "read\n")?;
    let (records, lost) = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let (records, lost, _) = count(&std::fs::read_to_string(&out).unwrap_or_default())?;
        Ok(accounted(records, lost, refused).then_some((records, lost)))
    })
    .with_context(|| format!("stdout once read again does not account for every call ({refused} refused): {}", sidecar.process.log_tail()))?;
    let metrics = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{}/metrics", sidecar.admin_port)]).output()?;
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    Ok(Unread { answered, refused, records, lost, metrics, sidecar, out, builtin, invalid })
}

/// A container runtime that stops reading the sidecar's stdout leaves it a full pipe. Without
/// an audit store, stdout is the records' only copy: every call is still answered, those whose
/// records could not be kept are refused saying why, and no record is left out. Once stdout is
/// read again, calls are served again.
#[test]
fn without_a_store_a_sidecar_whose_stdout_nobody_reads_refuses_calls_and_loses_no_record() -> Result<()> {
    let run = with_stdout_unread("audit-unread", &[], |records, lost, refused| lost == 0 && records == 2 * (UNREAD_CALLS - refused))?;
    ensure!(run.refused > 0 && run.refused < run.answered, "{} of {} calls refused: the bound was never reached", run.refused, run.answered);
    ensure!(run.builtin.contains("cannot write audit records now"), "request_approval was not refused: {}", run.builtin);
    ensure!(run.invalid.contains("cannot write audit records now"), "a call without an id was not refused so: {}", run.invalid);
    ensure!(run.records > 0, "no record written");
    // The calls, request_approval and the call without an id.
    ensure!(
        run.metrics.contains(&format!("tollgate_tool_calls_total{{decision=\"deny\",outcome=\"audit_unwritten\"}} {}", run.refused + 2)),
        "{}",
        run.metrics
    );
    ensure!(run.sidecar.process.log_tail().contains("stdout is not being read: tools/call is refused"), "{}", run.sidecar.process.log_tail());
    // Without a session: the server's address answers nothing, and a call needs none.
    let headers = ["content-type: application/json".to_owned(), "accept: application/json, text/event-stream".to_owned()];
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}}).to_string();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let answer = tollgate_e2e::raw_mcp::request("POST", &run.sidecar.url("files"), &headers, Some(&call))?;
        let (text, _) = answer.tool_text(&json!(9))?;
        Ok((text.starts_with("Access denied") && !text.contains("cannot write audit records")).then_some(()))
    })
    .context("calls are not served again once stdout is read")?;
    // The calls refused left no record each, but the trail says how many there were.
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let (_, _, said) = count(&std::fs::read_to_string(&run.out).unwrap_or_default())?;
        // The calls refused, request_approval and the call without an id.
        let refused = run.refused as u64 + 2;
        ensure!(said <= refused, "{said} calls said refused, {refused} were");
        Ok((said == refused).then_some(()))
    })
    .context("no audit-gap line says how many calls were refused without a record")?;
    Ok(())
}

/// With an audit store (here one that is away: the records wait in the sidecar's queue for it),
/// stdout is not the only copy: every call is decided, records are left out of stdout past its
/// bound, and an `audit-gap` line says how many once it is read again, as the metric does.
#[test]
fn with_a_store_a_sidecar_whose_stdout_nobody_reads_decides_every_call_and_says_what_it_left_out() -> Result<()> {
    let token = ControlPlane::shared().dir().join("audit-unread-store.token");
    std::fs::write(&token, "not-a-token")?;
    let token = token.display().to_string();
    let env = [("TOLLGATE_AUDIT_URL", "http://127.0.0.1:9"), ("TOLLGATE_AUDIT_TOKEN_FILE", token.as_str())];
    // The calls' records, request_approval's two and the id-less call's two.
    let run = with_stdout_unread("audit-unread-store", &env, |records, lost, _| records + usize::try_from(lost).unwrap_or(0) == 2 * UNREAD_CALLS + 4)?;
    ensure!(run.refused == 0, "{} calls refused though their records ship", run.refused);
    // Denied (the agent may not use the built-in server), and its two records counted above.
    ensure!(run.builtin.starts_with("Access denied: agent coder may not use MCP server"), "{}", run.builtin);
    ensure!(run.invalid.contains("must carry an id"), "{}", run.invalid);
    ensure!(run.lost > 0 && run.records > 0, "{} records written, {} left out: the bound was never reached", run.records, run.lost);
    ensure!(run.metrics.contains(&format!("tollgate_audit_records_total{{event=\"unwritten\"}} {}", run.lost)), "{}", run.metrics);
    ensure!(run.sidecar.process.log_tail().contains("stdout was not read for a while"), "{}", run.sidecar.process.log_tail());
    Ok(())
}
