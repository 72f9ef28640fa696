//! The firewall under attack (DESIGN §6, "attacks on the sidecar"): every way around a decision
//! that was open once, each refused here with the real sidecar, API server and server-everything.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate_e2e::raw_mcp::{Answer, RawSession};
use tollgate_e2e::{Sidecar, User, wait_until};

mod common;
use common::*;

const VERSION: &str = "2025-06-18";

fn call(s: &RawSession, id: u64, tool: &str, arguments: Value) -> Result<Answer> {
    s.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
}

fn apply(env: &Env, yaml: &str) -> Result<()> {
    env.cp.apply(User::Admin, &env.ns, yaml).map(drop)
}

/// Waits at most `within` for `check` to hold, saying what it last saw when it does not.
fn within(within: Duration, what: &str, mut check: impl FnMut() -> Result<(bool, String)>) -> Result<Duration> {
    let started = Instant::now();
    let mut last = String::new();
    wait_until(within, Duration::from_millis(20), || {
        let (done, seen) = check()?;
        last = seen;
        Ok(done.then_some(()))
    })
    .with_context(|| format!("{what}: not within {within:?}; last seen: {last}"))?;
    Ok(started.elapsed())
}

fn denied(s: &RawSession, tool: &str, arguments: Value) -> Result<(bool, String)> {
    let (text, is_error) = call(s, 9, tool, arguments)?.tool_text(&json!(9))?;
    Ok((is_error && text.starts_with("Access denied"), text))
}

#[test]
fn deleting_any_watched_object_changes_decisions_within_two_seconds() -> Result<()> {
    let env = setup("deletes", true)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let two = Duration::from_secs(2);
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"defaultAction":"Deny"}}"#])?;
    within(Duration::from_secs(10), "defaultAction Deny applies", || denied(&s, "get-tiny-image", json!({})))?;

    // A workflow deleted: the call it would hold is refused, never put to nobody.
    let (text, _) = call(&s, 1, "trigger-long-running-operation", json!({"duration": 0.1, "steps": 1}))?.tool_text(&json!(1))?;
    ensure!(text.contains("pending"), "held before the delete: {text}");
    env.cp.kubectl_ok(User::Admin, ["delete", "approvalworkflow", "ops", "-n", &env.ns])?;
    let took = within(two, "deleted ApprovalWorkflow", || denied(&s, "trigger-long-running-operation", json!({"duration": 0.1, "steps": 1})))?;
    eprintln!("ApprovalWorkflow delete enforced in {took:?}");

    // The only policy allowing echo deleted: the agent's defaultAction (Deny) decides.
    ensure!(!denied(&s, "echo", json!({"message": "hi"}))?.0, "echo allowed before the delete");
    env.cp.kubectl_ok(User::Admin, ["delete", "toolpolicy", "everything", "-n", &env.ns])?;
    let took = within(two, "deleted ToolPolicy", || denied(&s, "echo", json!({"message": "hi"})))?;
    eprintln!("ToolPolicy delete enforced in {took:?}");

    // A cluster policy that allowed it, deleted.
    let ctp = format!("allow-echo-{}", env.ns);
    apply(
        &env,
        &format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: ClusterToolPolicy
metadata: {{name: {ctp}}}
spec:
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  tools: [{{server: everything, name: echo, rules: [{{action: Allow}}]}}]
"#,
            ns = env.ns
        ),
    )?;
    within(Duration::from_secs(10), "ClusterToolPolicy applies", || denied(&s, "echo", json!({"message": "hi"})).map(|(d, t)| (!d, t)))?;
    env.cp.kubectl_ok(User::Admin, ["delete", "clustertoolpolicy", &ctp])?;
    let took = within(two, "deleted ClusterToolPolicy", || denied(&s, "echo", json!({"message": "hi"})))?;
    eprintln!("ClusterToolPolicy delete enforced in {took:?}");

    // The server deleted: nothing reaches it any more, whatever the method.
    env.cp.kubectl_ok(User::Admin, ["delete", "mcpserver", "everything", "-n", &env.ns])?;
    let took = within(two, "deleted MCPServer", || {
        let a = s.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))?;
        Ok((a.status == 404 && a.error_message().is_ok_and(|m| m.contains("no MCPServer named \"everything\"")), format!("{a:?}")))
    })?;
    eprintln!("MCPServer delete enforced in {took:?}");

    // The agent deleted: every call of every endpoint refused, saying it is no longer managed.
    env.cp.kubectl_ok(User::Admin, ["delete", "managedagent", "coder", "-n", &env.ns])?;
    let aggregate = format!("{}/mcp", env.sidecar.base);
    let took = within(two, "deleted ManagedAgent", || {
        let a = tollgate_e2e::raw_mcp::request("GET", &aggregate, &["accept: text/event-stream".into()], None)?;
        Ok((a.status == 403 && a.error_message().is_ok_and(|m| m.contains("no longer managed")), format!("{a:?}")))
    })?;
    eprintln!("ManagedAgent delete enforced in {took:?}");
    let a = tollgate_e2e::raw_mcp::request(
        "POST",
        &env.sidecar.url("down"),
        &["content-type: application/json".into()],
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
    )?;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.error_message()?.contains("agent coder is no longer managed by Tollgate"), "{a:?}");
    Ok(())
}

#[test]
fn every_method_of_every_endpoint_obeys_the_agents_rights() -> Result<()> {
    let env = setup("rights", true)?;
    apply(&env, &format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: elsewhere}}\nspec: {{url: \"{}\"}}\n", everything().url()))?;
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"mcpServers":["everything","down"]}}"#])?;
    // A server outside mcpServers: every method refused with 403 and a body that says why.
    let url = env.sidecar.url("elsewhere");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}).to_string();
    let json_headers = ["content-type: application/json".to_owned(), "accept: application/json, text/event-stream".to_owned()];
    within(Duration::from_secs(10), "mcpServers applies", || {
        let a = tollgate_e2e::raw_mcp::request("POST", &url, &json_headers, Some(&init))?;
        Ok((a.status == 403, format!("{a:?}")))
    })?;
    for (method, body) in [
        ("POST", Some(init.as_str())),
        ("POST", Some(r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#)),
        ("POST", Some(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"simple-prompt"}}"#)),
        ("POST", Some(r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#)),
        ("POST", Some(r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}"#)),
        ("POST", Some(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)),
        ("GET", None),
        ("DELETE", None),
    ] {
        let a = tollgate_e2e::raw_mcp::request(method, &url, &json_headers, body)?;
        assert_eq!(a.status, 403, "{method} {body:?}: {a:?}");
        assert!(a.error_message()?.contains("may not use MCP server \"elsewhere\""), "{method} {body:?}: {a:?}");
    }
    // On the aggregate, the server does not exist for the agent either.
    let agg = RawSession::open(&format!("{}/mcp", env.sidecar.base), VERSION)?;
    let read = agg.post(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "elsewhere+demo://resource/static/document/architecture.md"}}),
    )?;
    assert!(read.response(&json!(2)).is_some_and(|r| r.get("error").is_some()), "{read:?}");
    let (text, is_error) = call(&agg, 3, "elsewhere__echo", json!({"message": "x"}))?.tool_text(&json!(3))?;
    assert!(is_error && text.contains("may not use MCP server"), "{text}");

    // A call approved while the agent is suspended does not run until it is resumed.
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let held = call(&s, 4, "trigger-long-running-operation", json!({"duration": 0.1, "steps": 1}))?;
    let name = held.response(&json!(4)).and_then(|r| r["result"]["structuredContent"]["request_id"].as_str()).context("request_id")?.to_owned();
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let phase = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Approved").then_some(()))
    })?;
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"suspended":true}}"#])?;
    let poll = |id: u64| call(&s, id, "get_approval_status", json!({"request_id": name}));
    within(Duration::from_secs(10), "suspension applies", || {
        let a = poll(5)?;
        Ok((a.status == 403 && a.error_message().is_ok_and(|m| m.contains("is suspended")), format!("{a:?}")))
    })?;
    for (method, body) in [("GET", None), ("DELETE", None), ("POST", Some(init.as_str()))] {
        for u in [env.sidecar.url("everything"), format!("{}/mcp", env.sidecar.base)] {
            let a = tollgate_e2e::raw_mcp::request(method, &u, &json_headers, body)?;
            assert!(a.status == 403 && a.error_message()?.contains("is suspended"), "{method} {u}: {a:?}");
        }
    }
    assert_eq!(executions(&env)?, 0, "the held call ran while the agent was suspended");
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"suspended":false}}"#])?;
    within(Duration::from_secs(10), "resumed, the approved call runs", || {
        let a = poll(6)?;
        let (text, _) = a.tool_text(&json!(6))?;
        Ok((text.contains("Long running operation completed"), format!("{a:?}")))
    })?;
    assert_eq!(executions(&env)?, 1);
    Ok(())
}

#[test]
fn idless_and_ambiguous_tool_calls_are_refused_and_audited() -> Result<()> {
    let env = setup("ambiguous", false)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    for body in [
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get-env","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"get-env","arguments":{}}}"#,
    ] {
        let a = s.send("POST", Some(body), &[])?;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert!(a.error_message()?.contains("must carry an id"), "{body}: {a:?}");
    }
    let agg = RawSession::open(&format!("{}/mcp", env.sidecar.base), VERSION)?;
    let a = agg.send("POST", Some(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"everything__get-env","arguments":{}}}"#), &[])?;
    assert_eq!(a.status, 400, "aggregate: {a:?}");
    let audit = env.sidecar.wait_audit(|a| a.iter().filter(|r| r["kind"] == "outcome" && r["policy"] == "an invalid request").count() == 3)?;
    assert!(audit.iter().any(|r| r["tool"] == "get-env" && r["decision"] == "deny" && r["kind"] == "decision"), "{audit:?}");

    // Read one way by the firewall and another by the server: refused before any decision.
    for (body, says) in [
        (r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","Name":"get-env","arguments":{"message":"x"}}}"#, "case variant of \"name\""),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","message":"my secret"}}}"#,
            "duplicate key \"message\"",
        ),
        (r#"{"jsonrpc":"2.0","id":7,"method":"ping","Method":"tools/call","params":{"name":"get-env","arguments":{}}}"#, "case variant of \"method\""),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}},"params":{"name":"get-env"}}"#,
            "duplicate key \"params\"",
        ),
    ] {
        for session in [&s, &agg] {
            let a = session.send("POST", Some(body), &[])?;
            assert_eq!(a.status, 400, "{body}: {a:?}");
            assert!(a.error_message()?.contains(says), "{body}: {a:?}");
        }
    }
    let log = std::fs::read_to_string(&env.sidecar.process.log)?;
    assert!(!log.contains("my secret"), "an ambiguous call reached a decision or the server");
    Ok(())
}

#[test]
fn foreign_hosts_origins_and_content_types_are_refused() -> Result<()> {
    let env = setup("transport", false)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let aggregate = format!("{}/mcp", env.sidecar.base);
    for (headers, status, says) in [
        (vec!["Host: evil.example"], 403, "DNS rebinding"),
        (vec!["Host: 127.0.0.1.evil.example:80"], 403, "DNS rebinding"),
        (vec!["Origin: http://evil.example"], 403, "Origin \"http://evil.example\" is not allowed"),
        (vec!["Origin: null"], 403, "is not allowed"),
        (vec!["content-type: text/plain"], 400, "more than one Content-Type header"),
        (vec!["Origin: https://a.example", "Origin: https://b.example"], 400, "more than one Origin header"),
    ] {
        let a = s.send("POST", Some(ping), &headers)?;
        assert_eq!(a.status, status, "{headers:?}: {a:?}");
        assert!(a.error_message()?.contains(says), "{headers:?}: {a:?}");
        let a = tollgate_e2e::raw_mcp::request("GET", &aggregate, &headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(), None)?;
        if status == 403 {
            assert_eq!(a.status, 403, "GET {headers:?}: {a:?}");
        }
    }
    assert_eq!(s.send("POST", Some(ping), &["Host: localhost"])?.status, 200);
    // A same-origin request (a client on the very address it calls, as MCP's reference transport
    // accepts) is served; another port of loopback is another origin.
    let same = format!("Origin: {}", env.sidecar.base);
    let a = s.send("POST", Some(ping), &[same.as_str()])?;
    assert_eq!(a.status, 200, "a same-origin request was refused: {a:?}");
    let a = s.send("POST", Some(ping), &["Origin: http://127.0.0.1:3000"])?;
    assert_eq!(a.status, 403, "another loopback port's page was served: {a:?}");
    // Only the body's own type will do.
    let bare = tollgate_e2e::raw_mcp::request("POST", &env.sidecar.url("everything"), &["content-type: text/plain".into()], Some(ping))?;
    assert_eq!(bare.status, 415, "{bare:?}");
    assert!(bare.error_message()?.contains("must be application/json"), "{bare:?}");
    // A sidecar told to accept a name and an origin accepts them, and still no other.
    let other = Sidecar::start_with(
        env.cp,
        &env.ns,
        "coder",
        "coder",
        &format!("coder2-{}", env.ns),
        &["--allowed-hosts", "coder.agents.internal", "--allowed-origins", "https://console.example"],
    )?;
    let s2 = RawSession::open(&other.url("everything"), VERSION)?;
    assert_eq!(s2.send("POST", Some(ping), &["Host: coder.agents.internal:15001", "Origin: https://console.example"])?.status, 200);
    assert_eq!(s2.send("POST", Some(ping), &["Origin: https://console.example.evil"])?.status, 403);
    assert_eq!(s2.send("POST", Some(ping), &["Host: other.agents.internal"])?.status, 403);
    Ok(())
}

fn wait_phase(env: &Env, name: &str, want: &str) -> Result<()> {
    env.cp.wait_phase(&env.ns, name, want, Duration::from_secs(20))
}

fn held_request(s: &RawSession, id: u64, duration: f64) -> Result<String> {
    let a = call(s, id, "trigger-long-running-operation", json!({"duration": duration, "steps": 1}))?;
    a.response(&json!(id))
        .and_then(|r| r["result"]["structuredContent"]["request_id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no request id: {a:?}"))
}

/// Runs of the held tool that reached the server.
fn executions(env: &Env) -> Result<usize> {
    env.upstream.calls("trigger-long-running-operation")
}

#[test]
fn a_held_call_runs_only_for_the_request_it_created() -> Result<()> {
    let env = setup("decoy", true)?;
    apply(
        &env,
        "apiVersion: tollgate.dev/v1alpha1\nkind: ApprovalWorkflow\nmetadata: {name: lax}\nspec: {approvers: {users: [approver-a]}, requiredApprovals: 1, async: true}\n",
    )?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let name = held_request(&s, 1, 0.1)?;
    wait_phase(&env, &name, "Pending")?;
    // The request deleted and created again under its name, the spec copied but for a weaker
    // workflow, by the agent's own service account (a compromised agent container holds it).
    let mut decoy: Value = serde_json::from_str(&env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "json"])?)?;
    env.cp.kubectl_ok(User::Admin, ["delete", "ar", &name, "-n", &env.ns])?;
    decoy["spec"]["workflow"] = json!("lax");
    decoy["spec"]["arguments"] = json!({"duration": 0, "steps": 0});
    let meta = &mut decoy["metadata"];
    for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"] {
        meta.as_object_mut().map(|m| m.remove(field));
    }
    decoy.as_object_mut().map(|m| m.remove("status"));
    let path = env.cp.dir().join(format!("{}-decoy.json", env.ns));
    std::fs::write(&path, decoy.to_string())?;
    let agent = env.cp.service_account_kubeconfig(&env.ns, "coder")?;
    let out = std::process::Command::new("kubectl").arg("--kubeconfig").arg(&agent).args(["create", "-f"]).arg(&path).output()?;
    ensure!(out.status.success(), "the decoy could not be created: {}", String::from_utf8_lossy(&out.stderr));
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_phase(&env, &name, "Approved")?;
    let answer = call(&s, 2, "get_approval_status", json!({"request_id": name}))?;
    assert_eq!(executions(&env)?, 0, "the held call ran for a decoy request: {answer:?}");
    let (text, is_error) = answer.tool_text(&json!(2))?;
    assert!(is_error && text.contains(&format!("approval request {name} was deleted")) && text.contains("will not run"), "{text}");
    env.sidecar.wait_audit(|a| a.iter().any(|r| r["approval_request"] == name.as_str() && r["outcome"] == "approval_cancelled"))?;
    Ok(())
}

#[test]
fn a_held_call_needs_the_quorum_of_the_workflow_it_was_held_under() -> Result<()> {
    let env = setup("quorum-held", true)?;
    env.cp.kubectl_ok(User::Admin, ["patch", "approvalworkflow", "ops", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"requiredApprovals":2}}"#])?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    // Held once the sidecar knows the workflow wants two.
    within(Duration::from_secs(10), "two approvals in force", || {
        let name = held_request(&s, 1, 0.1)?;
        wait_phase(&env, &name, "Pending")?;
        let approvals = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.status.approvals}"])?;
        Ok((approvals.trim() == "0/2", name))
    })?;
    let name = env
        .cp
        .kubectl_ok(User::Admin, ["get", "ar", "-n", &env.ns, "--sort-by=.metadata.creationTimestamp", "-o", "jsonpath={.items[-1:].metadata.name}"])?
        .trim()
        .to_owned();
    // The workflow relaxed after the hold; one approval then approves it in the operator's eyes.
    env.cp.kubectl_ok(User::Admin, ["patch", "approvalworkflow", "ops", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"requiredApprovals":1}}"#])?;
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_phase(&env, &name, "Approved")?;
    let answer = call(&s, 2, "get_approval_status", json!({"request_id": name}))?;
    assert_eq!(executions(&env)?, 0, "the held call reached the server without its quorum: {answer:?}");
    let (text, is_error) = answer.tool_text(&json!(2))?;
    assert!(is_error && text.contains("do not reach the quorum of workflow ops"), "{text}");
    Ok(())
}

#[test]
fn a_poll_that_hangs_up_mid_run_neither_loses_nor_repeats_the_call() -> Result<()> {
    let env = setup("hangup-async", true)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let name = held_request(&s, 1, 3.0)?;
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_phase(&env, &name, "Approved")?;
    let poll = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_approval_status", "arguments": {"request_id": name}}});
    // The tool takes 3 s; this poll goes away after 1 s.
    let got = s.post_and_hang_up(&poll, 1)?;
    assert!(!got.contains("Long running operation completed"), "{got}");
    within(Duration::from_secs(20), "a later poll gets the result", || {
        let (text, _) = call(&s, 3, "get_approval_status", json!({"request_id": name}))?.tool_text(&json!(3))?;
        Ok((text.contains("Long running operation completed"), text))
    })?;
    let (text, _) = call(&s, 4, "get_approval_status", json!({"request_id": name}))?.tool_text(&json!(4))?;
    assert!(text.contains("Long running operation completed"), "{text}");
    assert_eq!(executions(&env)?, 1, "the held call ran more than once");
    let audit = env.sidecar.wait_audit(|a| a.iter().any(|r| r["approval_request"] == name.as_str() && r["outcome"] == "approved"))?;
    let outcomes = audit.iter().filter(|r| r["approval_request"] == name.as_str() && r["kind"] == "outcome").count();
    assert_eq!(outcomes, 1, "{audit:?}");
    Ok(())
}

#[test]
fn a_blocking_client_that_hangs_up_cancels_its_call_and_it_is_audited() -> Result<()> {
    let env = setup("hangup-blocking", false)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}}});
    let got = s.post_and_hang_up(&body, 2)?;
    assert!(!got.contains("completed"), "{got}");
    let name = pending_request(env.cp, &env.ns)?;
    wait_phase(&env, &name, "Cancelled")?;
    env.sidecar.wait_audit(|a| a.iter().any(|r| r["approval_request"] == name.as_str() && r["outcome"] == "approval_cancelled"))?;
    assert_eq!(executions(&env)?, 0);
    Ok(())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).context("VmRSS")
}

#[test]
fn a_hostile_server_costs_the_agent_clear_errors_and_the_sidecar_little() -> Result<()> {
    // The sidecar reads at most 1 MiB of any answer here, and waits 3 s for one.
    let mut env = setup("hostile", false)?;
    let hostile = tollgate_e2e::Hostile::start(env.cp)?;
    apply(
        &env,
        &format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: hostile}}\nspec: {{url: \"{}\", timeoutSeconds: 3}}\n", hostile.url()),
    )?;
    env.sidecar.process.stop();
    env.sidecar = Sidecar::start_with_env(
        env.cp,
        &env.ns,
        "coder",
        "coder",
        &format!("coder-{}", env.ns),
        &[("TOLLGATE_MAX_UPSTREAM_ANSWER", "1048576"), ("TOLLGATE_HEADER_READ_TIMEOUT_SECONDS", "1"), ("TOLLGATE_REQUEST_BODY_SECONDS", "1")],
    )?;
    let pid = env.sidecar.process.pid().context("pid")?;
    let url = env.sidecar.url("hostile");
    // The normal calls go to another server through the same sidecar.
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let timed_ok = |s: &RawSession, id: u64| -> Result<Duration> {
        let started = Instant::now();
        let (text, is_error) = call(s, id, "echo", json!({"message": "still here"}))?.tool_text(&json!(id))?;
        ensure!(text == "Echo: still here" && !is_error, "the normal call failed: {text}");
        Ok(started.elapsed())
    };
    let mut usual: Vec<Duration> = (0..5).map(|i| timed_ok(&s, 100 + i)).collect::<Result<_>>()?;
    usual.sort();
    let usual = usual[2];
    let before = rss_kib(pid)?;

    let bad = ["slow", "dribble", "huge", "endless", "malformed"];
    let calls: Vec<_> = bad
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let url = url.clone();
            let tool = tool.to_string();
            std::thread::spawn(move || -> Result<(String, (String, bool))> {
                let s = RawSession::open(&url, VERSION)?;
                let id = 10 + i as u64;
                Ok((tool.clone(), call(&s, id, &tool, json!({}))?.tool_text(&json!(id))?))
            })
        })
        .collect();
    // While the hostile answers are in flight, a normal call is not held behind them (they hold
    // for 3 s: a call waiting on them would take that long) and memory stays low. The bound is
    // far from 3 s and far above a loaded machine's jitter (a 100 ms margin failed a busy CI run).
    let mut peak = before;
    for i in 0..10 {
        let took = timed_ok(&s, 200 + i)?;
        assert!(took < usual + Duration::from_millis(1000), "a normal call took {took:?} (usually {usual:?}) beside hostile answers");
        peak = peak.max(rss_kib(pid)?);
    }
    for c in calls {
        let (tool, (text, is_error)) = c.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        peak = peak.max(rss_kib(pid)?);
        assert!(is_error, "{tool}: {text}");
        let says = match tool.as_str() {
            "slow" => "did not answer within 3s",
            "dribble" => "within 3s",
            "huge" => "more than 1048576 bytes",
            "endless" => "more than 1048576 bytes",
            _ => "without a result (10 malformed events skipped)",
        };
        assert!(text.contains("MCP server hostile") && text.contains(says), "{tool}: {text}");
    }
    eprintln!("sidecar RSS: {before} KiB before, {peak} KiB at peak");
    assert!(peak < before + 48 * 1024, "RSS grew from {before} KiB to {peak} KiB");

    // A client that never finishes its headers is cut off.
    use std::io::{Read, Write};
    let port: u16 = env.sidecar.base.rsplit(':').next().and_then(|p| p.parse().ok()).context("port")?;
    let mut slowloris = std::net::TcpStream::connect(("127.0.0.1", port))?;
    slowloris.write_all(b"POST /mcp/hostile HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
    slowloris.set_read_timeout(Some(Duration::from_secs(10)))?;
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slowloris.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5), "a client that never finished its headers was kept {:?}", started.elapsed());
    // Nor one that connects and says nothing.
    let closed = tollgate_e2e::http::silent(port, Duration::from_secs(10))?;
    assert!(closed.is_some_and(|t| t < Duration::from_secs(5)), "a silent connection was kept: closed after {closed:?}");
    // Nor one that never finishes its body.
    let status = tollgate_e2e::http::dribble(port, "/mcp/hostile", &[], Duration::from_secs(10))?;
    assert!(status.starts_with("HTTP/1.1 408"), "a client that never finished its body was answered {status:?}");
    Ok(())
}

#[test]
fn after_an_api_server_restart_the_sidecar_decides_with_fresh_objects_and_holds_survive() -> Result<()> {
    // A control plane of its own: this test restarts its API server.
    let cp: &'static tollgate_e2e::ControlPlane = Box::leak(Box::new(tollgate_e2e::ControlPlane::start()?));
    let server = tollgate_e2e::Everything::start(cp)?;
    // A leader that cannot renew its Lease for two thirds of it steps down and exits, as it must
    // (its Deployment starts it again); a restart on a loaded machine can take that long, and
    // this test is about the sidecar, so its operator's Lease outlasts the restart.
    let operator = tollgate_e2e::Operator::start_with_env(cp, &[("TOLLGATE_LEASE_DURATION_SECONDS", "90")])?;
    let env = setup_in(cp, "watch-restart", true, &server.url())?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"defaultAction":"Deny"}}"#])?;
    within(Duration::from_secs(10), "defaultAction Deny applies", || denied(&s, "get-tiny-image", json!({})))?;
    let name = held_request(&s, 1, 0.1)?;
    wait_phase(&env, &name, "Pending")?;

    cp.restart_apiserver()?;
    // The watches resume on their own: a delete made after the restart is enforced.
    env.cp.kubectl_ok(User::Admin, ["delete", "toolpolicy", "everything", "-n", &env.ns])?;
    let took = within(Duration::from_secs(30), "a delete after the restart", || denied(&s, "echo", json!({"message": "hi"})))?;
    eprintln!("after the API server restart, a delete was enforced in {took:?}");
    // The held call survived, bound to its request: approved now, it runs once.
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_phase(&env, &name, "Approved").with_context(|| format!("operator exited: {:?}; {}", operator.process.exited(), operator.process.log_tail()))?;
    let (text, _) = call(&s, 2, "get_approval_status", json!({"request_id": name}))?.tool_text(&json!(2))?;
    assert!(text.contains("Long running operation completed"), "{text}");
    assert_eq!(executions(&env)?, 1);
    drop(env);
    cp.shutdown();
    Ok(())
}

#[test]
fn secrets_in_arguments_never_reach_logs_audit_objects_or_errors() -> Result<()> {
    let env = setup("secrets", true)?;
    let s = RawSession::open(&env.sidecar.url("everything"), VERSION)?;
    let secret = |n: u8| format!("Zq{n}{}", tollgate_e2e::random_hex(12).unwrap_or_default());
    let (header, dsn, bearer, key, cel) = (secret(1), secret(2), secret(3), secret(4), secret(5));
    let mut answers = Vec::new();
    // Allowed: the server gets the call (that is its business), the audit gets none of them.
    answers.push(call(
        &s,
        1,
        "echo",
        json!({"message": "deploying", "headers": [{"name": "Authorization", "value": header}],
        "db": format!("postgres://app:{dsn}@db.internal/prod")}),
    )?);
    // A CEL error on a value: the error names types only.
    answers.push(call(&s, 2, "echo", json!({"message": {"password": cel}}))?);
    // Held: the request object gets redacted arguments and justification.
    answers.push(s.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "trigger-long-running-operation",
        "arguments": {"duration": 0.1, "steps": 1, "note": format!("curl -H 'Authorization: Bearer {bearer}'"),
            "key": format!("-----BEGIN PRIVATE KEY-----\n{key}\n-----END PRIVATE KEY-----")}}}))?);
    let name = answers[2].response(&json!(3)).and_then(|r| r["result"]["structuredContent"]["request_id"].as_str()).context("held")?.to_owned();
    wait_phase(&env, &name, "Pending")?;
    let (_, is_error) = answers[1].tool_text(&json!(2))?;
    assert!(is_error, "a rule that fails on the arguments fails closed");
    let audit = env.sidecar.wait_audit(|a| a.iter().filter(|r| r["kind"] == "outcome").count() >= 2)?;
    let failed = audit.iter().find_map(|r| r["error"].as_str().filter(|e| e.contains(".when"))).context("the CEL error is audited")?;
    assert!(failed.contains("map"), "the CEL error names the type: {failed}");

    let mut seen = vec![
        ("sidecar log and audit", std::fs::read_to_string(&env.sidecar.process.log)?),
        ("operator log", std::fs::read_to_string(&operator().process.log)?),
        ("approval requests", env.cp.kubectl_ok(User::Admin, ["get", "ar", "-n", &env.ns, "-o", "yaml"])?),
        ("events", env.cp.kubectl_ok(User::Admin, ["get", "events", "-n", &env.ns, "-o", "yaml"])?),
    ];
    seen.push(("answers to the agent", format!("{answers:?}")));
    for (what, text) in &seen {
        for s in [&header, &dsn, &bearer, &key, &cel] {
            assert!(!text.contains(s.as_str()), "{s} found in the {what}");
        }
    }
    let ar = &seen[2].1;
    assert!(ar.contains("Bearer [REDACTED]") && ar.contains("[REDACTED]"), "{ar}");
    Ok(())
}

#[test]
fn an_open_stream_ends_when_the_agent_loses_its_rights_to_it() -> Result<()> {
    let env = setup("stream-cut", false)?;
    let open = |url: String, what: &str| -> Result<tollgate_e2e::Process> {
        let s = RawSession::open(&url, VERSION)?;
        let log = env.cp.dir().join(format!("{}-{what}.log", env.ns));
        let stream = s.open_stream(&log)?;
        // server-everything sends the stream's head with its first event: have it log.
        let tool = if what == "server-stream" { "toggle-simulated-logging" } else { "everything__toggle-simulated-logging" };
        s.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "debug"}}))?;
        s.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {}}}))?;
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            Ok(std::fs::read_to_string(&log).unwrap_or_default().contains("text/event-stream").then_some(()))
        })
        .with_context(|| format!("the {what} stream did not open: {}", stream.log_tail()))?;
        Ok(stream)
    };
    let server_stream = open(env.sidecar.url("everything"), "server-stream")?;
    let aggregated_stream = open(format!("{}/mcp", env.sidecar.base), "aggregated-stream")?;
    let ended = |stream: &tollgate_e2e::Process, what: &str| {
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || Ok(stream.exited().map(|_| ())))
            .with_context(|| format!("the {what} stream is still open"))
    };

    // The server taken from the agent's servers: its stream ends, the aggregated one stays.
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"mcpServers":["down"]}}"#])?;
    ended(&server_stream, "server")?;
    assert!(aggregated_stream.exited().is_none(), "the aggregated stream ended while the agent still had rights");
    // The agent suspended: nothing stays open.
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"suspended":true}}"#])?;
    ended(&aggregated_stream, "aggregated")?;
    Ok(())
}
