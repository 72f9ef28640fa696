//! The MCP firewall end to end (DESIGN §3.1–§3.3): the official Python and TypeScript MCP SDK
//! clients talk to the reference server-everything through `tollgate-sidecar`, which runs as the
//! agent's service account against the real API server, with the operator deciding approvals.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_e2e::raw_mcp::RawSession;
use tollgate_e2e::{ControlPlane, Everything, Sidecar, User, py_client, tool_text, ts_client, wait_until};

mod common;
use common::*;

#[test]
fn allow_deny_hide_justify_and_pass_through() -> Result<()> {
    let env = setup("firewall", false)?;
    let url = env.sidecar.url("everything");
    let steps = py_client(
        &url,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "hello"}},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "my secret"}},
            {"op": "call_tool", "name": "get-env", "arguments": {}},
            {"op": "call_tool", "name": "get-sum", "arguments": {"a": 2, "b": 3}},
            {"op": "call_tool", "name": "get-sum", "arguments": {"a": 2, "b": 3, "justification": "checking arithmetic for INC-7"}},
            {"op": "list_prompts"},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "demo://resource/static/document/architecture.md"},
            {"op": "ping"},
        ]),
    )?;
    let tools: Vec<&str> = step(&steps, 0)["result"]["tools"].as_array().context("tools")?.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "{tools:?}");
    assert!(!tools.contains(&"get-env"), "an unconditionally denied tool is hidden: {tools:?}");
    assert!(tools.contains(&"get_approval_status"), "{tools:?}");
    let sum = step(&steps, 0)["result"]["tools"].as_array().into_iter().flatten().find(|t| t["name"] == "get-sum").context("get-sum")?;
    assert_eq!(sum["inputSchema"]["properties"]["justification"]["type"], "string");
    assert!(sum["inputSchema"]["required"].as_array().context("required")?.contains(&json!("justification")));

    assert_eq!(tool_text(step(&steps, 1))?, ("Echo: hello".to_owned(), false));
    assert_eq!(tool_text(step(&steps, 2))?, ("Access denied: echoing secrets is not allowed".to_owned(), true));
    assert_eq!(tool_text(step(&steps, 3))?, ("Access denied: the environment is private".to_owned(), true));
    let (text, is_error) = tool_text(step(&steps, 4))?;
    assert!(is_error && text.contains("requires a justification"), "{text}");
    let (text, is_error) = tool_text(step(&steps, 5))?;
    assert!(!is_error && text.contains("5"), "{text}");
    for i in 6..10 {
        assert_eq!(step(&steps, i)["ok"], true, "pass-through step {i}: {}", step(&steps, i));
    }
    assert!(step(&steps, 8).to_string().contains("architecture"), "{}", step(&steps, 8));

    // One decision record per call, the denied ones with their policy and rule.
    let audit = env.sidecar.wait_audit(|a| a.iter().any(|r| r["tool"] == "get-sum" && r["kind"] == "outcome" && r["decision"] == "allow"))?;
    let denied: Vec<&Value> = audit.iter().filter(|r| r["kind"] == "decision" && r["decision"] == "deny").collect();
    assert!(denied.iter().any(|r| r["tool"] == "get-env" && r["rule"] == "spec.tools[1].rules[0]"), "{audit:?}");
    assert!(audit.iter().any(|r| r["tool"] == "get-sum" && r["justification"] == "checking arithmetic for INC-7"), "{audit:?}");
    // The outcome names its decision record (correlation id, digest) and repeats neither the
    // arguments nor the justification.
    let of_sum = |kind: &str| audit.iter().find(|r| r["tool"] == "get-sum" && r["kind"] == kind && r["decision"] == "allow").cloned();
    let (decision, outcome) = (of_sum("decision").context("get-sum's decision")?, of_sum("outcome").context("get-sum's outcome")?);
    assert!(decision["arguments"].is_object() && decision["justification"].is_string(), "{decision}");
    assert_eq!((&outcome["correlation_id"], &outcome["arguments_digest"]), (&decision["correlation_id"], &decision["arguments_digest"]), "{outcome}");
    assert!(outcome.get("arguments").is_none() && outcome.get("justification").is_none(), "{outcome}");
    assert_eq!((&outcome["outcome"], &outcome["is_error"]), (&json!("forwarded"), &json!(false)), "{outcome}");
    Ok(())
}

#[test]
fn blocking_approval_granted_with_kubectl_and_progress_while_waiting() -> Result<()> {
    let env = setup("blocking", false)?;
    let url = env.sidecar.url("everything");
    let call = std::thread::spawn(move || {
        py_client(&url, &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 0.2, "steps": 1}, "progress": true}]))
    });
    let name = pending_request(env.cp, &env.ns)?;
    let spec =
        env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.spec.tool} {.spec.server} {.spec.agent} {.spec.workflow}"])?;
    assert_eq!(spec.trim(), "trigger-long-running-operation everything coder ops");
    // Approve once the client has been sent a progress notification while it waits.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok(env.sidecar.process.log_tail().contains("progress notification sent").then_some(()))
    })?;
    wait_for_pending(env.cp, &env.ns, &name)?;
    // `kubectl approve` with the plugin on PATH, as approver-a would type it.
    let out = env.cp.kubectl_approve(User::ApproverA, &[&name, "-n", &env.ns, "--reason", "checked the diff", "--wait", "10"])?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("approved {}/{name}", env.ns)), "{said}");
    let steps = call.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let (text, is_error) = tool_text(step(&steps, 0))?;
    assert!(!is_error && text.contains("Long running operation completed"), "{}", step(&steps, 0));
    let progress = step(&steps, 0)["progress"].as_array().cloned().unwrap_or_default();
    // Ours while waiting (no total), then the server's own while it ran the call (with a total).
    assert!(progress.iter().any(|p| p.get("total").is_none_or(Value::is_null)), "no progress while waiting: {}", step(&steps, 0));
    assert!(progress.iter().any(|p| p["total"].as_f64() == Some(1.0)), "the server's progress was not relayed: {}", step(&steps, 0));
    // The held call's outcome is audited with who approved it, under the request's name.
    let outcome = |a: &[Value]| a.iter().find(|r| r["kind"] == "outcome" && r["approval_request"] == name.as_str()).cloned();
    let audit = env.sidecar.wait_audit(|a| outcome(a).is_some())?;
    let record = outcome(&audit).context("outcome record")?;
    assert_eq!((&record["outcome"], &record["approvers"], &record["is_error"]), (&json!("approved"), &json!(["approver-a"]), &json!(false)), "{record}");
    let decisions: Vec<&Value> = audit.iter().filter(|r| r["kind"] == "decision" && r["tool"] == "trigger-long-running-operation").collect();
    assert_eq!(decisions.len(), 1, "one decision record per held call: {decisions:?}");
    assert_eq!(decisions[0]["approval_request"], name.as_str());
    Ok(())
}

#[test]
fn a_denied_approval_is_an_error_result() -> Result<()> {
    let env = setup("vetoed", false)?;
    let url = env.sidecar.url("everything");
    let call = std::thread::spawn(move || {
        py_client(&url, &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}}]))
    });
    let name = pending_request(env.cp, &env.ns)?;
    wait_for_pending(env.cp, &env.ns, &name)?;
    let out = env.cp.kubectl_approve(User::ApproverB, &["deny", &name, "-n", &env.ns, "--reason", "not during the freeze", "--wait", "0"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An outsider is told plainly, and nothing changes.
    let out = env.cp.kubectl_approve(User::Outsider, &[&name, "-n", &env.ns])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("you (outsider) may not decide approval requests"), "{err}");
    let steps = call.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let (text, is_error) = tool_text(step(&steps, 0))?;
    assert!(is_error && text.contains(&format!("approval request {name} was denied by approver-b: not during the freeze")), "{text}");
    env.sidecar.wait_audit(|a| a.iter().any(|r| r["approval_request"] == name.as_str() && r["outcome"] == "approval_denied"))?;
    Ok(())
}

#[test]
fn async_approval_runs_the_call_once_under_concurrent_polls() -> Result<()> {
    let env = setup("async", true)?;
    let url = env.sidecar.url("everything");
    let steps = py_client(&url, &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}}]))?;
    let result = &step(&steps, 0)["result"];
    assert_eq!(result["structuredContent"]["status"], "pending", "{result}");
    let name = result["structuredContent"]["request_id"].as_str().context("request_id")?.to_owned();
    let poll = json!([{"op": "call_tool", "name": "get_approval_status", "arguments": {"request_id": name}}]);
    let pending = py_client(&url, &poll)?;
    assert!(tool_text(step(&pending, 0))?.0.contains("is pending"), "{}", step(&pending, 0));

    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let phase = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Approved").then_some(()))
    })?;
    let polls = py_client(&url, &json!([{"op": "concurrent_calls", "name": "get_approval_status", "arguments": {"request_id": name}, "count": 5}]))?;
    // Exactly once: the server saw one run of the tool for the five polls (and a later poll),
    // counted where it arrives.
    let again = py_client(&url, &poll)?;
    let runs = env.upstream.calls("trigger-long-running-operation")?;
    assert_eq!(runs, 1, "the held call reached the server {runs} times");
    let results = step(&polls, 0)["result"]["results"].as_array().context("results")?.clone();
    assert_eq!(results.len(), 5);
    for r in results.iter().chain([step(&again, 0)]) {
        let (text, is_error) = tool_text(r)?;
        assert!(!is_error && text.contains("Long running operation completed"), "{r}");
    }
    Ok(())
}

#[test]
fn request_approval_standalone() -> Result<()> {
    let env = setup("standalone", true)?;
    let url = env.sidecar.url("everything");
    let steps = py_client(
        &url,
        &json!([{"op": "call_tool", "name": "request_approval",
        "arguments": {"operation": "rotate the database password", "context": "prod", "reasoning": "quarterly rotation"}}]),
    )?;
    let name = step(&steps, 0)["result"]["structuredContent"]["request_id"].as_str().context("request_id")?.to_owned();
    let spec = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.spec.tool}/{.spec.justification}"])?;
    assert_eq!(spec.trim(), "request_approval/quarterly rotation");
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    poll_status(&url, &name, |text| text.starts_with("Approved"))?;
    Ok(())
}

#[test]
fn policy_edits_apply_without_restart_and_the_kill_switch() -> Result<()> {
    let env = setup("live", false)?;
    let url = env.sidecar.url("everything");
    let echo = json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "hi"}}]);
    assert_eq!(tool_text(step(&py_client(&url, &echo)?, 0))?, ("Echo: hi".to_owned(), false));
    let patch = r#"[{"op":"replace","path":"/spec/tools/0/rules/1/action","value":"Deny"}]"#;
    env.cp.kubectl_ok(User::Admin, ["patch", "tp", "everything", "-n", &env.ns, "--type=json", "-p", patch])?;
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || Ok(tool_text(step(&py_client(&url, &echo)?, 0))?.1.then_some(())))?;
    assert!(started.elapsed() < Duration::from_secs(5), "policy took {:?} to apply", started.elapsed());

    // The kill switch: every request of every method refused, saying why.
    env.cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"suspended":true}}"#])?;
    let sum = json!([{"op": "call_tool", "name": "get-sum", "arguments": {"a": 1, "b": 1, "justification": "x"}}]);
    let mut last = String::new();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        last = match py_client(&url, &sum) {
            Ok(steps) => json!(steps).to_string(),
            Err(e) => format!("{e:#}"),
        };
        Ok((last.contains("403") || last.contains("is suspended")).then_some(()))
    })
    .with_context(|| last.clone())?;
    let call =
        tollgate_e2e::raw_mcp::request("POST", &url, &["content-type: application/json".into()], Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#))?;
    assert_eq!(call.status, 403, "{call:?}");
    assert!(call.error_message()?.contains(&format!("agent {}/coder is suspended", env.ns)), "{call:?}");
    Ok(())
}

#[test]
fn a_down_server_is_an_error_result_naming_it_and_bad_input_is_refused() -> Result<()> {
    let env = setup("down", false)?;
    // The down server cannot even initialize: the client reports the sidecar's JSON-RPC error.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &env.sidecar.url("down"),
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#,
        ])
        .output()?;
    let body: Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    let text = body["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(body["result"]["isError"], true, "{body}");
    assert!(text.contains("MCP server down is unreachable"), "{body}");

    for (bad, code) in [("{not json", -32700), ("[]", -32600)] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-X", "POST", &env.sidecar.url("everything"), "-H", "content-type: application/json", "-d", bad])
            .output()?;
        let body: Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }
    Ok(())
}

#[test]
fn a_sidecar_restart_cancels_its_pending_requests() -> Result<()> {
    let mut env = setup("restart", true)?;
    let url = env.sidecar.url("everything");
    let steps = py_client(&url, &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}}]))?;
    let name = step(&steps, 0)["result"]["structuredContent"]["request_id"].as_str().context("request_id")?.to_owned();
    env.sidecar.process.stop();
    env.sidecar = Sidecar::start(env.cp, &env.ns, "coder", "coder", &format!("coder-{}", env.ns))?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let phase = env.cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", &env.ns, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Cancelled").then_some(()))
    })
    .with_context(|| operator().log_tail())?;
    let out = py_client(&env.sidecar.url("everything"), &json!([{"op": "call_tool", "name": "get_approval_status", "arguments": {"request_id": name}}]))?;
    let (text, is_error) = tool_text(step(&out, 0))?;
    assert!(is_error && text.contains("never run"), "{text}");
    Ok(())
}

#[test]
fn the_typescript_sdk_client_works_through_the_sidecar() -> Result<()> {
    let env = setup("typescript", false)?;
    let steps = ts_client(
        &env.sidecar.url("everything"),
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "from typescript"}},
            {"op": "call_tool", "name": "get-env", "arguments": {}},
        ]),
    )?;
    assert_eq!(step(&steps, 0)["ok"], true, "{}", step(&steps, 0));
    assert_eq!(tool_text(step(&steps, 1))?, ("Echo: from typescript".to_owned(), false));
    assert_eq!(tool_text(step(&steps, 2))?, ("Access denied: the environment is private".to_owned(), true));
    Ok(())
}

#[test]
fn the_aggregated_endpoint_serves_every_allowed_server_under_policy() -> Result<()> {
    let env = setup("aggregate", true)?;
    let url = format!("{}/mcp", env.sidecar.base);
    let steps = py_client(
        &url,
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "everything__echo", "arguments": {"message": "via the aggregate"}},
            {"op": "call_tool", "name": "everything__get-env", "arguments": {}},
            {"op": "call_tool", "name": "everything__get-sum", "arguments": {"a": 1, "b": 2}},
            {"op": "call_tool", "name": "down__anything", "arguments": {}},
            {"op": "call_tool", "name": "no-such-tool", "arguments": {}},
            {"op": "call_tool", "name": "everything__trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}},
            {"op": "ping"},
        ]),
    )?;
    let tools: Vec<&str> = step(&steps, 0)["result"]["tools"].as_array().context("tools")?.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(tools.contains(&"everything__echo") && tools.contains(&"get_approval_status"), "{tools:?}");
    assert!(!tools.contains(&"everything__get-env"), "hidden on the aggregate too: {tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("down__")), "a down server contributes nothing: {tools:?}");
    assert_eq!(tool_text(step(&steps, 1))?, ("Echo: via the aggregate".to_owned(), false));
    assert_eq!(tool_text(step(&steps, 2))?, ("Access denied: the environment is private".to_owned(), true));
    assert!(tool_text(step(&steps, 3))?.0.contains("requires a justification"), "{}", step(&steps, 3));
    let (text, is_error) = tool_text(step(&steps, 4))?;
    assert!(is_error && text.contains("MCP server down is unreachable"), "{text}");
    assert!(tool_text(step(&steps, 5))?.1);
    let name = step(&steps, 6)["result"]["structuredContent"]["request_id"].as_str().context("request_id")?.to_owned();
    assert_eq!(step(&steps, 7)["ok"], true);

    // The held call runs once approved, polled through the aggregate.
    decide(env.cp, User::ApproverA, &env.ns, &name, "Approve")?;
    poll_status(&url, &name, |text| text.contains("Long running operation completed"))?;
    Ok(())
}

#[test]
fn batches_are_split_and_every_call_in_them_decided() -> Result<()> {
    let env = setup("batch", true)?;
    // Batches exist in protocol 2025-03-26 (later revisions dropped them).
    let s = RawSession::open(&env.sidecar.url("everything"), "2025-03-26")?;
    let call = |id: u64, name: &str, args: Value| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}});
    let batch = json!([
        call(1, "echo", json!({"message": "in a batch"})),
        call(2, "get-env", json!({})),
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 4, "method": "ping"},
        call(5, "echo", json!({"message": "a secret"})),
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        42,
        call(6, "trigger-long-running-operation", json!({"duration": 0.1, "steps": 1})),
    ]);
    let answer = s.post(&batch)?;
    assert_eq!(answer.status, 200, "{answer:?}");
    let text = |id: u64| answer.tool_text(&json!(id));
    assert_eq!(text(1)?, ("Echo: in a batch".to_owned(), false));
    assert_eq!(text(2)?, ("Access denied: the environment is private".to_owned(), true));
    assert_eq!(text(5)?, ("Access denied: echoing secrets is not allowed".to_owned(), true));
    let tools: Vec<&str> = answer
        .response(&json!(3))
        .and_then(|r| r["result"]["tools"].as_array())
        .context("tools/list answered")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get_approval_status") && !tools.contains(&"get-env"), "{tools:?}");
    assert_eq!(answer.response(&json!(4)).map(|r| &r["result"]), Some(&json!({})), "ping passed through: {answer:?}");
    let invalid = answer.messages.iter().find(|m| m["id"].is_null()).context("the invalid element is answered")?;
    assert_eq!(invalid["error"]["code"], -32600);
    let held = answer.response(&json!(6)).context("held call answered")?;
    let name = held["result"]["structuredContent"]["request_id"].as_str().context("a held call in a batch is held too")?;
    wait_for_pending(env.cp, &env.ns, name)?;
    assert_eq!(answer.messages.iter().filter(|m| m.get("id").is_some()).count(), 7, "one answer per request: {:?}", answer.messages);

    // Only notifications: nothing to answer.
    let quiet = s.post(&json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]))?;
    assert_eq!(quiet.status, 202, "{quiet:?}");
    let echo_decisions = |a: &[Value]| a.iter().filter(|r| r["kind"] == "decision" && r["tool"] == "echo").count();
    let audit = env.sidecar.wait_audit(|a| echo_decisions(a) >= 2)?;
    assert_eq!(echo_decisions(&audit), 2, "each call of the batch audited once: {audit:?}");
    Ok(())
}

#[test]
fn the_aggregated_endpoint_merges_prompts_and_resources_and_relays_server_requests() -> Result<()> {
    let env = setup("aggregate-more", false)?;
    let url = format!("{}/mcp", env.sidecar.base);
    let steps = tollgate_e2e::py_client_with_args(
        &url,
        &["--sampling-reply", "sampled by the client", "--elicit-accept", r#"{"name": "Ada"}"#],
        &json!([
            {"op": "initialize_result"},
            {"op": "list_prompts"},
            {"op": "get_prompt", "name": "everything__args-prompt", "arguments": {"city": "Lisbon"}},
            {"op": "get_prompt", "name": "everything__resource-prompt", "arguments": {"resourceType": "Text", "resourceId": "2"}},
            {"op": "list_resources"},
            {"op": "read_resource", "uri": "everything+demo://resource/static/document/features.md"},
            {"op": "list_resource_templates"},
            {"op": "read_resource", "uri": "everything+demo://resource/dynamic/text/3"},
            {"op": "read_resource", "uri": "demo://resource/dynamic/text/3"},
            {"op": "call_tool", "name": "everything__get-resource-links", "arguments": {"count": 2}},
            {"op": "call_tool", "name": "everything__trigger-sampling-request", "arguments": {"prompt": "say hi", "maxTokens": 10}},
            {"op": "call_tool", "name": "everything__trigger-elicitation-request", "arguments": {}},
        ]),
    )?;
    let caps = &step(&steps, 0)["result"]["capabilities"];
    assert!(caps.get("prompts").is_some() && caps.get("resources").is_some() && caps.get("tools").is_some(), "merged capabilities: {caps}");
    let prompts: Vec<&str> = step(&steps, 1)["result"]["prompts"].as_array().context("prompts")?.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(prompts.contains(&"everything__simple-prompt") && prompts.contains(&"everything__args-prompt"), "{prompts:?}");
    assert!(step(&steps, 2).to_string().contains("What's weather in Lisbon?"), "{}", step(&steps, 2));
    let embedded = &step(&steps, 3)["result"]["messages"][1]["content"]["resource"]["uri"];
    assert_eq!(embedded, "everything+demo://resource/dynamic/text/2", "{}", step(&steps, 3));
    let uris: Vec<&str> = step(&steps, 4)["result"]["resources"].as_array().context("resources")?.iter().filter_map(|r| r["uri"].as_str()).collect();
    assert!(uris.contains(&"everything+demo://resource/static/document/features.md"), "{uris:?}");
    assert!(uris.iter().all(|u| u.starts_with("everything+")), "{uris:?}");
    let read = &step(&steps, 5)["result"]["contents"][0];
    assert_eq!(read["uri"], "everything+demo://resource/static/document/features.md");
    assert!(read["text"].as_str().is_some_and(|t| !t.is_empty()), "{read}");
    let templates = step(&steps, 6).to_string();
    assert!(templates.contains("everything+demo://resource/dynamic/text/{resourceId}"), "{templates}");
    assert_eq!(step(&steps, 7)["result"]["contents"][0]["uri"], "everything+demo://resource/dynamic/text/3", "{}", step(&steps, 7));
    assert_eq!(step(&steps, 8)["ok"], false, "an unprefixed URI names no server: {}", step(&steps, 8));
    assert!(step(&steps, 8)["error"].as_str().unwrap_or_default().contains("<server>+<uri>"), "{}", step(&steps, 8));
    let links: Vec<&str> = step(&steps, 9)["result"]["content"].as_array().context("links")?.iter().filter_map(|c| c["uri"].as_str()).collect();
    assert!(!links.is_empty() && links.iter().all(|u| u.starts_with("everything+")), "{}", step(&steps, 9));
    // The server asked the client to sample mid-call; the client's answer found its way back.
    let (sampled, is_error) = tool_text(step(&steps, 10))?;
    assert!(!is_error && sampled.contains("sampled by the client"), "{}", step(&steps, 10));
    assert!(step(&steps, 11).to_string().contains("Ada"), "elicitation answered: {}", step(&steps, 11));
    Ok(())
}

#[test]
fn the_aggregated_stream_merges_server_notifications_and_batches_work_there() -> Result<()> {
    let env = setup("aggregate-stream", false)?;
    let s = RawSession::open(&format!("{}/mcp", env.sidecar.base), "2025-03-26")?;
    let stream_log = env.cp.dir().join(format!("{}-stream.log", env.ns));
    let stream = s.open_stream(&stream_log)?;
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        Ok(std::fs::read_to_string(&stream_log).unwrap_or_default().contains("text/event-stream").then_some(()))
    })
    .with_context(|| format!("the GET stream did not open: {}", stream.log_tail()))?;
    let call = |id: u64, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}}});
    let answer = s.post(&json!([
        {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "debug"}},
        {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": "everything+demo://resource/dynamic/text/1"}},
        call(3, "everything__toggle-simulated-logging"),
        call(4, "everything__toggle-subscriber-updates"),
        call(5, "everything__get-env"),
    ]))?;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.response(&json!(1)).map(|r| &r["result"]), Some(&json!({})), "{answer:?}");
    assert!(answer.response(&json!(2)).is_some_and(|r| r.get("result").is_some()), "{answer:?}");
    let denied = answer.tool_text(&json!(5))?;
    assert_eq!(denied, ("Access denied: the environment is private".to_owned(), true));
    // The server's own notifications arrive on the merged stream, URIs in aggregated form.
    let seen = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let text = std::fs::read_to_string(&stream_log).unwrap_or_default();
        let msgs = tollgate_e2e::raw_mcp::messages(&text, true);
        let log = msgs.iter().any(|m| m["method"] == "notifications/message");
        let updated = msgs.iter().find(|m| m["method"] == "notifications/resources/updated").map(|m| m["params"]["uri"].clone());
        Ok(log.then_some(updated).flatten())
    })
    .with_context(|| format!("stream so far: {}", stream.log_tail()))?;
    assert_eq!(seen, json!("everything+demo://resource/dynamic/text/1"));
    stream.stop();
    Ok(())
}

#[test]
fn fails_closed_when_the_api_server_is_gone_and_an_approval_is_needed() -> Result<()> {
    // A control plane of its own: this test stops its API server.
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()?));
    let server = Everything::start(cp)?;
    let env = setup_in(cp, "no-apiserver", false, &server.url())?;
    let url = env.sidecar.url("everything");
    let before = py_client(&url, &json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "before"}}]))?;
    assert_eq!(tool_text(step(&before, 0))?, ("Echo: before".to_owned(), false));
    cp.kill_component("kube-apiserver")?;
    let after = py_client(
        &url,
        &json!([
            {"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 0.1, "steps": 1}},
            {"op": "call_tool", "name": "get-env", "arguments": {}},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "after"}},
        ]),
    )?;
    // The held call cannot be put to anyone: refused, saying why; it never runs.
    let (text, is_error) = tool_text(step(&after, 0))?;
    assert!(is_error && text.starts_with("Access denied: approval is required, but the approval request could not be created"), "{text}");
    // The policies last seen still decide the rest.
    assert_eq!(tool_text(step(&after, 1))?, ("Access denied: the environment is private".to_owned(), true));
    assert_eq!(tool_text(step(&after, 2))?, ("Echo: after".to_owned(), false));
    let audit = env.sidecar.wait_audit(|a| a.iter().any(|r| r["tool"] == "trigger-long-running-operation" && r["kind"] == "outcome"))?;
    let held = audit.iter().find(|r| r["tool"] == "trigger-long-running-operation" && r["kind"] == "outcome").context("outcome")?;
    assert_eq!((&held["outcome"], &held["is_error"]), (&json!("denied"), &json!(true)), "{held}");
    let decisions = audit.iter().filter(|r| r["tool"] == "trigger-long-running-operation" && r["kind"] == "decision").count();
    assert_eq!(decisions, 1, "{audit:?}");
    drop(env);
    cp.shutdown();
    Ok(())
}

#[test]
fn upstream_credentials_come_from_secrets_mounted_into_the_sidecar_only() -> Result<()> {
    let env = setup("credentials", false)?;
    let server = tollgate_e2e::AuthEcho::start(env.cp, "t0ken-1")?;
    let objects = format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: private}}
spec:
  url: "{url}"
  headers: [{{name: Authorization, prefix: "Bearer ", secretKeyRef: {{name: private-token, key: token}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: unmounted}}
spec:
  url: "{url}"
  headers: [{{name: Authorization, secretKeyRef: {{name: nowhere, key: token}}}}]
"#,
        url = server.url()
    );
    let path = env.cp.dir().join(format!("{}-private.yaml", env.ns));
    std::fs::write(&path, objects)?;
    env.cp.kubectl_ok(User::Admin, ["apply", "-n", &env.ns, "-f", path.to_str().context("path")?])?;
    // The server refuses anyone without the token, the agent included.
    let direct = py_client(&server.url(), &json!([{"op": "list_tools"}]));
    assert!(direct.is_err(), "the server must refuse a client without its token: {direct:?}");

    env.sidecar.mount_secret("private-token", "token", "t0ken-1\n")?;
    let whoami = json!([{"op": "call_tool", "name": "whoami", "arguments": {}}]);
    let steps = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let steps = py_client(&env.sidecar.url("private"), &whoami);
        Ok(steps.ok().filter(|s| tool_text(step(s, 0)).is_ok_and(|(text, _)| text == "authorized as t0ken-1")))
    })
    .context("the sidecar never called the server with its token")?;
    assert_eq!(tool_text(step(&steps, 0))?, ("authorized as t0ken-1".to_owned(), false));

    // A Secret that is not mounted: the call fails at the sidecar, naming what is missing.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &env.sidecar.url("unmounted"),
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#,
        ])
        .output()?;
    let body: Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    let text = body["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("MCP server unmounted cannot be called: header Authorization: Secret nowhere key token is not mounted into the sidecar"), "{body}");
    // Nothing of the token reaches the audit trail or the log.
    let output = std::fs::read_to_string(&env.sidecar.process.log)?;
    assert!(!output.contains("t0ken-1"), "the token leaked into the sidecar's output");
    Ok(())
}
