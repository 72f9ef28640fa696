//! The demo: a local control plane, the operator, the reference MCP server, a sidecar, and a
//! scripted agent (the official Python MCP SDK) whose calls are allowed, denied, and held until a
//! person runs `kubectl approve` (or `--auto-approve`).

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::Duration;
use tollgate_e2e::{ControlPlane, Everything, Operator, Sidecar, User, py_client, py_client_with_timeout, tool_text, wait_until};

const NS: &str = "tollgate-demo";

fn main() -> Result<()> {
    let auto = std::env::args().any(|a| a == "--auto-approve");
    say("starting a control plane (kube-apiserver + etcd, RBAC on)");
    let cp = ControlPlane::start()?;
    println!("  export KUBECONFIG={}", cp.kubeconfig(User::Admin).display());
    say("starting the Tollgate operator (phase machine + validating webhook)");
    let operator = Operator::start(&cp)?;
    say("starting the reference MCP server (@modelcontextprotocol/server-everything)");
    let everything = Everything::start(&cp)?;

    say(&format!("applying the demo policy in namespace {NS}"));
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    let objects = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo/demo.yaml"))?
        .replace("http://everything.invalid/mcp", &everything.url());
    let path = cp.dir().join("demo.yaml");
    std::fs::write(&path, objects)?;
    print!("{}", cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", path.to_str().context("path")?])?);

    say("starting the agent's sidecar (the MCP firewall), as the agent's service account");
    let sidecar = Sidecar::start(&cp, NS, "coder", "coder", "coder-7d9f")?;
    let url = sidecar.url("everything");
    println!("  the agent's MCP endpoint: {url}");

    say("the agent lists its tools (get-env is hidden: it is always denied)");
    let listed = py_client(&url, &json!([{"op": "list_tools"}]))?;
    let names: Vec<&str> = listed[0]["result"]["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    println!("  {}", names.join(", "));

    for (what, name, args) in [
        ("an allowed call", "echo", json!({"message": "hello from the agent"})),
        ("a denied call", "get-env", json!({})),
        ("a call the cluster guardrail refuses", "echo", json!({"message": "the password is hunter2"})),
        ("a call without the justification its policy requires", "get-sum", json!({"a": 2, "b": 40})),
        ("the same call, justified", "get-sum", json!({"a": 2, "b": 40, "justification": "capacity planning for INC-7"})),
    ] {
        say(&format!("{what}: {name} {args}"));
        let out = py_client(&url, &json!([{"op": "call_tool", "name": name, "arguments": args}]))?;
        show(&out[0]);
    }

    say("a call held for approval: trigger-long-running-operation (the agent blocks, with progress)");
    let held_url = url.clone();
    let agent = std::thread::spawn(move || {
        // The workflow gives a person ten minutes; so does the agent.
        py_client_with_timeout(
            &held_url,
            &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}, "progress": true}]),
            610,
        )
    });
    let name: String = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let names = cp.kubectl_ok(User::Admin, ["get", "ar", "-n", NS, "-o", "jsonpath={.items[*].metadata.name}"])?;
        Ok(names.split_whitespace().next().map(str::to_owned))
    })?;
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        Ok((cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", NS, "-o", "jsonpath={.status.phase}"])?.trim() == "Pending").then_some(()))
    })?;
    print!("{}", cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", NS])?);
    if auto || !std::io::stdin().is_terminal() {
        say(&format!("approving as approver-a: kubectl approve {name} -n {NS}"));
        let out = cp.kubectl_approve(User::ApproverA, &[&name, "-n", NS, "--reason", "demo", "--wait", "10"])?;
        print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    } else {
        let path = tollgate_e2e::plugin_path()?;
        say("the call waits for you. In another shell, approve it as approver-a:");
        println!("  PATH={} kubectl approve show {name} -n {NS} --kubeconfig {}", path.to_string_lossy(), cp.kubeconfig(User::ApproverA).display());
        println!("  PATH={} kubectl approve {name} -n {NS} --kubeconfig {}", path.to_string_lossy(), cp.kubeconfig(User::ApproverA).display());
        println!("  (or deny it: kubectl approve deny {name} -n {NS} --reason \"…\" with the same PATH and --kubeconfig)");
    }
    let out = agent.join().map_err(|_| anyhow::anyhow!("the agent thread panicked"))??;
    say("the held call's answer");
    show(&out[0]);
    println!("  progress notifications while waiting and running: {}", out[0]["progress"].as_array().map_or(0, Vec::len));
    print!("{}", cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", NS])?);

    say("the audit trail (one JSON line per decision and outcome, on the sidecar's stdout)");
    let trail = sidecar.wait_audit(|a| a.iter().any(|r| r["kind"] == "outcome" && r["tool"] == "trigger-long-running-operation"))?;
    for r in trail {
        let approvers: Vec<&str> = r["approvers"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let by = if approvers.is_empty() { String::new() } else { format!(" by {}", approvers.join(", ")) };
        println!(
            "  {:<8} {:<16} {:<30} {:<10} {:<22} {}{by}",
            r["kind"].as_str().unwrap_or(""),
            r["decision"].as_str().unwrap_or(""),
            r["tool"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or("-"),
            r["rule"].as_str().unwrap_or("-"),
            r["approval_request"].as_str().unwrap_or(""),
        );
    }
    if std::io::stdin().is_terminal() && !auto {
        say("everything is still running; press Enter to stop");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    drop(sidecar);
    drop(everything);
    drop(operator);
    Ok(())
}

fn say(what: &str) {
    println!("\n==> {what}");
}

fn show(step: &Value) {
    let (text, is_error) = tool_text(step);
    println!("  {} {}", if is_error { "✗" } else { "✓" }, text.lines().next().unwrap_or_default());
}
