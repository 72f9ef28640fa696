//! The tasks extension of MCP 2026-07-28 through the firewall (DESIGN §3.2, §3.3): a held call
//! made by a client that declared the extension answers as a task the sidecar owns (whatever the
//! workflow's mode), which `tasks/get` runs exactly once when approved and `tasks/cancel` ends
//! unrun; a server's own tasks pass through, polled under their routing headers.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_e2e::raw_mcp::{Answer, RawSession, request};
use tollgate_e2e::{TasksServer, User, wait_until};

mod common;
use common::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tasks}
spec:
  tools:
    - {server: tasks, name: report, rules: [{action: Allow}]}
    - {server: tasks, name: wipe, approvalWorkflow: ops, rules: [{action: RequireApproval, message: wiping needs a person}]}
"#;

/// A namespace whose agent may use the tasks server; its workflow `ops` is blocking, so a task
/// answer shows the client's declaration, not the workflow, chose it.
fn tasks_env(prefix: &str) -> Result<(Env, TasksServer)> {
    let env = setup(prefix, false)?;
    let server = TasksServer::start(env.cp)?;
    let yaml = format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: tasks}}\nspec: {{url: \"{}\"}}\n---\n{POLICY}", server.url());
    let path = env.cp.dir().join(format!("{}-tasks.yaml", env.ns));
    std::fs::write(&path, yaml)?;
    env.cp.kubectl_ok(User::Admin, ["apply", "-n", &env.ns, "-f", path.to_str().context("path")?])?;
    Ok((env, server))
}

/// One stateless request as a 2026-07-28 client that declared the tasks extension sends it: the
/// `_meta` of the revision and its routing headers (`Mcp-Name` as given).
fn stateless(url: &str, id: u64, method: &str, mut params: Value, name: Option<&str>) -> Result<Answer> {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    });
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    let mut headers: Vec<String> = ["content-type: application/json", "accept: application/json, text/event-stream", "mcp-protocol-version: 2026-07-28"]
        .iter()
        .map(|h| (*h).to_owned())
        .collect();
    headers.push(format!("mcp-method: {method}"));
    if let Some(name) = name {
        headers.push(format!("mcp-name: {name}"));
    }
    request("POST", url, &headers, Some(&body))
}

fn result(answer: &Answer, id: u64) -> Result<Value> {
    let message = answer.response(&json!(id)).with_context(|| format!("no answer to {id}: {answer:?}"))?;
    message.get("result").cloned().with_context(|| format!("not a result: {message}"))
}

fn error(answer: &Answer, id: u64) -> Result<Value> {
    let message = answer.response(&json!(id)).with_context(|| format!("no answer to {id}: {answer:?}"))?;
    message.get("error").cloned().with_context(|| format!("not an error: {message}"))
}

fn tasks_get(url: &str, id: u64, task: &str) -> Result<Value> {
    result(&stateless(url, id, "tasks/get", json!({"taskId": task}), Some(task))?, id)
}

/// Polls `tasks/get` until the task's status is `status`.
fn wait_status(url: &str, task: &str, status: &str) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        last = tasks_get(url, 90, task)?;
        Ok((last["status"] == status).then(|| last.clone()))
    })
    .with_context(|| format!("task {task} never became {status}: {last}"))
}

fn wipes(server: &TasksServer) -> Result<Vec<Value>> {
    Ok(server.calls()?.into_iter().filter(|c| c["name"] == "wipe").collect())
}

/// Holds `wipe` and returns the sidecar's task id and the approval request's name.
fn hold_wipe(env: &Env, server: &TasksServer) -> Result<(String, String)> {
    let url = env.sidecar.url("tasks");
    let created = result(&stateless(&url, 1, "tools/call", json!({"name": "wipe", "arguments": {"target": "staging"}}), Some("wipe"))?, 1)?;
    ensure!(created["resultType"] == "task" && created["status"] == "working", "a held call from a task-declaring client is a task: {created}");
    let task = created["taskId"].as_str().context("taskId")?.to_owned();
    let name = pending_request(env.cp, &env.ns)?;
    ensure!(task == format!("tollgate-held-{name}"), "task {task} names its approval request {name}");
    ensure!(created["pollIntervalMs"].as_u64().is_some_and(|p| p > 0) && created["ttlMs"].as_u64().is_some_and(|t| t > 0), "{created}");
    ensure!(wipes(server)?.is_empty(), "a held call is not forwarded: {:?}", server.calls()?);
    Ok((task, name))
}

#[test]
fn a_held_call_answers_as_a_task_that_runs_once_when_approved() -> Result<()> {
    let (env, server) = tasks_env("tasks-held")?;
    let url = env.sidecar.url("tasks");
    let (task, name) = hold_wipe(&env, &server)?;

    let pending = tasks_get(&url, 2, &task)?;
    assert_eq!((pending["status"].as_str(), pending["resultType"].as_str()), (Some("working"), Some("complete")), "{pending}");
    assert!(pending["statusMessage"].as_str().unwrap_or_default().contains(&name), "{pending}");
    assert!(pending.get("result").is_none(), "{pending}");
    let update = error(&stateless(&url, 3, "tasks/update", json!({"taskId": task, "inputResponses": {}}), Some(&task))?, 3)?;
    assert_eq!(update["code"], -32602, "a held task takes no input: {update}");

    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    let done = wait_status(&url, &task, "completed")?;
    let text = done["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(text, r#"wipe: {"target": "staging"}"#, "the call's own result, not a task of the server's: {done}");
    assert_eq!(done["result"]["isError"], false, "{done}");

    // Polled again, and on the aggregated endpoint: the same answer; the call ran once, as a
    // plain call (the client's task is the sidecar's).
    assert_eq!(tasks_get(&url, 4, &task)?["result"], done["result"]);
    let aggregated = RawSession::open(&format!("{}/mcp", env.sidecar.base), "2025-06-18")?;
    let there = result(&aggregated.post(&json!({"jsonrpc": "2.0", "id": 6, "method": "tasks/get", "params": {"taskId": task}}))?, 6)?;
    assert_eq!((&there["status"], &there["result"]), (&json!("completed"), &done["result"]), "{there}");
    let ran = wipes(&server)?;
    assert_eq!(ran.len(), 1, "exactly once: {ran:?}");
    assert_eq!(ran[0]["declared_tasks"], false, "{ran:?}");
    let late = error(&stateless(&url, 5, "tasks/cancel", json!({"taskId": task}), Some(&task))?, 5)?;
    assert!(late["message"].as_str().unwrap_or_default().contains("already ended"), "{late}");

    let audit = env.sidecar.wait_audit(|a| a.iter().any(|r| r["tool"] == "wipe" && r["kind"] == "outcome" && r["outcome"] == "approved"))?;
    let outcomes = audit.iter().filter(|r| r["tool"] == "wipe" && r["kind"] == "outcome").count();
    assert_eq!(outcomes, 1, "one outcome record: {audit:?}");
    Ok(())
}

#[test]
fn a_task_the_agent_cancels_never_runs() -> Result<()> {
    let (env, server) = tasks_env("tasks-cancel")?;
    let url = env.sidecar.url("tasks");
    let (task, name) = hold_wipe(&env, &server)?;

    let cancelled = result(&stateless(&url, 2, "tasks/cancel", json!({"taskId": task}), Some(&task))?, 2)?;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // The operator withdraws the request, so no approver acts on it.
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let phase = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Cancelled").then_some(()))
    })
    .context("the request is cancelled")?;
    let after = tasks_get(&url, 3, &task)?;
    assert_eq!(after["status"], "cancelled", "{after}");
    assert!(after.get("result").is_none(), "{after}");
    assert!(wipes(&server)?.is_empty(), "a cancelled task never runs: {:?}", server.calls()?);
    env.sidecar.wait_audit(|a| a.iter().any(|r| r["tool"] == "wipe" && r["outcome"] == "approval_cancelled"))?;

    // The aggregated endpoint knows the sidecar's tasks, and no others.
    let aggregated = RawSession::open(&format!("{}/mcp", env.sidecar.base), "2025-06-18")?;
    let there = result(&aggregated.post(&json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": {"taskId": task}}))?, 4)?;
    assert_eq!(there["status"], "cancelled", "{there}");
    let other = error(&aggregated.post(&json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/get", "params": {"taskId": "786512e2"}}))?, 5)?;
    assert!(other["message"].as_str().unwrap_or_default().contains("polled on /mcp/<server>"), "{other}");
    Ok(())
}

#[test]
fn a_servers_own_tasks_pass_through_under_their_routing_headers() -> Result<()> {
    let (env, server) = tasks_env("tasks-own")?;
    let url = env.sidecar.url("tasks");
    let created = result(&stateless(&url, 1, "tools/call", json!({"name": "report", "arguments": {"topic": "q3"}}), Some("report"))?, 1)?;
    assert_eq!(created["resultType"], "task", "the server's task, passed through: {created}");
    let task = created["taskId"].as_str().context("taskId")?.to_owned();
    assert!(!task.starts_with("tollgate-held-"), "{task}");
    assert_eq!(server.calls()?.first().map(|c| c["declared_tasks"].clone()), Some(json!(true)), "forwarded as sent");

    // `tasks/get` names its task in Mcp-Name, as the revision requires; the server answers.
    let done = wait_status(&url, &task, "completed")?;
    assert_eq!(done["result"]["content"][0]["text"], r#"report: {"topic": "q3"}"#, "{done}");

    // A header naming another task than the body is refused before anything is forwarded.
    let forged = stateless(&url, 2, "tasks/get", json!({"taskId": task}), Some("tollgate-held-someone-else"))?;
    assert_eq!(forged.status, 400, "{forged:?}");
    assert_eq!(error(&forged, 2)?["code"], -32020);
    // A held-task id the sidecar never made is answered here, never forwarded.
    let unknown = error(&stateless(&url, 3, "tasks/get", json!({"taskId": "tollgate-held-nope"}), Some("tollgate-held-nope"))?, 3)?;
    assert!(unknown["message"].as_str().unwrap_or_default().contains("no call held here"), "{unknown}");
    Ok(())
}
