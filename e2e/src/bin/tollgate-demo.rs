//! The demo: a local control plane, the operator, the reference MCP server, and an agent pod
//! applied with plain `kubectl` and injected by the operator's webhook, run from its stored spec:
//! its app (the official Python MCP SDK client) makes calls that are allowed, denied, and held
//! until a person runs `kubectl approve` (or, with `--auto-approve`, clicks Approve in the Slack
//! message the operator posted: a fake Slack speaking its Web API records it, and the click is
//! signed as Slack signs it).

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::Duration;
use tollgate_e2e::gateway::{FakeProvider, GatewayProcess};
use tollgate_e2e::kubelet::{Programs, run_pod};
use tollgate_e2e::slack::FakeSlack;
use tollgate_e2e::{ControlPlane, Everything, Operator, User, free_ports, tool_text, wait_until};

const NS: &str = "tollgate-demo";
const POD: &str = "coder-7d9f";

/// What the demo runs: a control plane, the fakes of the outside services, the gateway, the
/// operator and the reference MCP server.
struct World {
    cp: ControlPlane,
    provider: FakeProvider,
    slack: FakeSlack,
    gateway: GatewayProcess,
    operator: Operator,
    everything: Everything,
}

fn main() -> Result<()> {
    let auto = std::env::args().any(|a| a == "--auto-approve");
    let w = start()?;
    apply_demo(&w)?;
    show_injected(&w.cp)?;
    say("running the pod from that spec (its own network namespace, its volumes, the sidecar's startup probe first)");
    let programs = Programs::default()
        .with("/usr/local/bin/tollgate-sidecar", tollgate_e2e::binary("tollgate-sidecar", "tollgate-sidecar")?)
        .with("python", tollgate_e2e::tools_dir()?.join("venv/bin/python"))
        .with("python3", tollgate_e2e::gateway::sdks_dir()?.join("venv/bin/python"));
    let loopback: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let pod = run_pod(&w.cp, NS, POD, &programs, &[(loopback, w.everything.port), (loopback, w.gateway.port)])?;
    print!("{}", w.cp.kubectl_ok(User::Admin, ["get", "managedagents", "-n", NS])?);
    let name = held_request(&w, &pod)?;
    decide(&w, &name, auto)?;
    show_tool_calls(&w, &pod)?;
    show_model_calls(&w, &pod)?;
    show_audit(&pod)?;
    if std::io::stdin().is_terminal() && !auto {
        say("everything is still running; press Enter to stop");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    drop(pod);
    let World { cp, provider, slack, gateway, operator, everything } = w;
    drop(everything);
    drop(operator);
    drop(gateway);
    drop(provider);
    drop(slack);
    drop(cp);
    Ok(())
}

fn start() -> Result<World> {
    say("starting a control plane (kube-apiserver + etcd, RBAC on)");
    let cp = ControlPlane::start()?;
    println!("  export KUBECONFIG={}", cp.kubeconfig(User::Admin).display());
    say("starting a fake model provider (OpenAI's and Anthropic's wire formats), a fake Slack (its Web API) and the Tollgate model gateway");
    let provider = FakeProvider::start(&cp, "sk-demo-openai", "sk-demo-anthropic")?;
    let slack = FakeSlack::start(&cp, 0)?;
    let [port] = free_ports::<1>()?;
    let slack_env = [
        ("TOLLGATE_SLACK_SIGNING_SECRET", tollgate_e2e::slack::SIGNING_SECRET),
        ("TOLLGATE_SLACK_BOT_TOKEN", tollgate_e2e::slack::BOT_TOKEN),
        ("TOLLGATE_SLACK_API_URL", &slack.api_url()),
    ];
    let gateway = GatewayProcess::start_with(&cp, &format!("sqlite://{}?mode=rwc", cp.dir().join("ledger.db").display()), port, &slack_env)?;
    println!("  the gateway: {} (Slack's interactivity URL: {}/slack/interactions)", gateway.url(), gateway.url());
    say("starting the Tollgate operator (controllers, validating and injection webhooks, notifications)");
    let operator = Operator::start_with_env(&cp, &[("TOLLGATE_GATEWAY_URL", &gateway.url()), ("TOLLGATE_SLACK_API_URL", &slack.api_url())])?;
    say("starting the reference MCP server (@modelcontextprotocol/server-everything)");
    let everything = Everything::start(&cp)?;

    Ok(World { cp, provider, slack, gateway, operator, everything })
}

/// The demo's policy, workflow, servers and providers, then the agent's pod, with plain kubectl.
fn apply_demo(w: &World) -> Result<()> {
    let World { cp, provider, everything, .. } = w;
    say(&format!("applying the demo policy in namespace {NS}"));
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    let objects = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo/demo.yaml"))?
        .replace("http://everything.invalid/mcp", &everything.url())
        .replace("http://openai.invalid/v1", &provider.openai_url())
        .replace("http://anthropic.invalid", &provider.anthropic_url())
        .replace("xoxb-demo-bot-token", tollgate_e2e::slack::BOT_TOKEN);
    let path = cp.dir().join("demo.yaml");
    std::fs::write(&path, objects)?;
    print!("{}", cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", path.to_str().context("path")?])?);

    say(&format!("labelling {NS} for injection and applying the agent's pod (plain kubectl, no sidecar in it)"));
    cp.kubectl_ok(User::Admin, ["label", "namespace", NS, "tollgate.dev/injection=enabled"])?;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo");
    let client = tollgate_e2e::repo_file("e2e/clients/py_client.py");
    let from = |key: &str, path: &str| format!("--from-file={key}={path}");
    cp.kubectl_ok(
        User::Admin,
        [
            "create",
            "configmap",
            "agent",
            "-n",
            NS,
            &from("py_client.py", &client.to_string_lossy()),
            &from("scenario.json", &format!("{examples}/agent-scenario.json")),
            &from("model_client.py", &tollgate_e2e::repo_file("e2e/clients/model_client.py").to_string_lossy()),
            &from("models.json", &format!("{examples}/models-scenario.json")),
        ],
    )?;
    print!("{}", cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", &format!("{examples}/agent-pod.yaml")])?);

    Ok(())
}

/// The pod as the API server stored it: what injection wrote.
fn show_injected(cp: &ControlPlane) -> Result<()> {
    say("the pod as the API server stored it: the injection webhook added the firewall");
    let stored: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "pod", POD, "-n", NS, "-o", "json"])?)?;
    let spec = &stored["spec"];
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        println!("  init container {} (restartPolicy {}: a native sidecar)", c["name"].as_str().unwrap_or(""), c["restartPolicy"].as_str().unwrap_or("-"));
    }
    let app = &spec["containers"][0];
    let mcp_url = app["env"].as_array().into_iter().flatten().find(|e| e["name"] == "TOLLGATE_MCP_URL").and_then(|e| e["value"].as_str()).unwrap_or("");
    println!("  app container {}: TOLLGATE_MCP_URL={mcp_url}", app["name"].as_str().unwrap_or(""));
    println!("  automountServiceAccountToken: {} (only the sidecar holds the agent's token)", spec["automountServiceAccountToken"]);
    let models = &spec["containers"][1];
    let names: Vec<&str> = models["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.starts_with("OPENAI") || n.starts_with("ANTHROPIC"))
        .collect();
    println!("  app container {}: {} (the key from the Secret the operator minted)", models["name"].as_str().unwrap_or(""), names.join(", "));

    Ok(())
}

/// The request of the agent's held call, once pending, and the Slack message about it.
fn held_request(w: &World, pod: &tollgate_e2e::kubelet::RunningPod) -> Result<String> {
    let World { cp, slack, .. } = w;
    say("the agent calls its tools; the last call is held for approval (the agent blocks, with progress)");
    let name: String = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let names = cp.kubectl_ok(User::Admin, ["get", "ar", "-n", NS, "-o", "jsonpath={.items[*].metadata.name}"])?;
        Ok(names.split_whitespace().next().map(str::to_owned))
    })
    .with_context(|| format!("no request; the agent said:\n{}", pod.log("agent").unwrap_or_default()))?;
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        Ok((cp.kubectl_ok(User::Admin, ["get", "ar", &name, "-n", NS, "-o", "jsonpath={.status.phase}"])?.trim() == "Pending").then_some(()))
    })?;
    print!("{}", cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", NS])?);
    say("the message the operator posted to Slack (#agent-approvals)");
    let posted = slack.wait_calls("the held call's message", |c| c["path"] == "/api/chat.postMessage")?;
    let message = &posted[0]["body"];
    show_slack(message);
    Ok(name)
}

/// Approve in Slack (non-interactive or `--auto-approve`), else tell the person how to.
fn decide(w: &World, name: &str, auto: bool) -> Result<()> {
    let World { cp, slack, gateway, .. } = w;
    if auto || !std::io::stdin().is_terminal() {
        say("approving in Slack: U0DEMOAPPROVER clicks Approve (the click signed with the app's signing secret)");
        let record = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let id = cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", NS, "-o", "jsonpath={.status.notifications[0].messageId}"])?;
            Ok(id.trim().split_once('/').map(|(c, t)| (c.to_owned(), t.to_owned())))
        })
        .with_context(|| {
            format!("the request records no Slack message: {}", cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", NS, "-o", "json"]).unwrap_or_default())
        })?;
        let click = serde_json::json!({
            "type": "block_actions", "user": {"id": "U0DEMOAPPROVER"}, "trigger_id": "demo",
            "container": {"type": "message", "channel_id": record.0, "message_ts": record.1},
            "actions": [{"action_id": "tollgate_approve", "value": format!("{NS}/{name}")}],
        });
        let answer = tollgate_e2e::slack::click(&gateway.url(), &click, &serde_json::json!({}))?;
        println!("  the gateway answered Slack: {}", answer.first().map(|a| a["status"].to_string()).unwrap_or_default());
        let told = slack.wait_calls("the answer to the clicker", |c| c["path"] == "/api/chat.postEphemeral")?;
        println!("  U0DEMOAPPROVER is told: {}", told[0]["body"]["text"].as_str().unwrap_or_default());
    } else {
        let path = tollgate_e2e::plugin_path()?;
        say("the call waits for you. In another shell, approve it as approver-a:");
        println!("  PATH={} kubectl approve show {name} -n {NS} --kubeconfig {}", path.to_string_lossy(), cp.kubeconfig(User::ApproverA).display());
        println!("  PATH={} kubectl approve {name} -n {NS} --kubeconfig {}", path.to_string_lossy(), cp.kubeconfig(User::ApproverA).display());
        println!("  (or deny it: kubectl approve deny {name} -n {NS} --reason \"…\" with the same PATH and --kubeconfig)");
    }
    Ok(())
}

fn show_tool_calls(w: &World, pod: &tollgate_e2e::kubelet::RunningPod) -> Result<()> {
    let World { cp, slack, .. } = w;
    let (status, log) = pod.wait_exit("agent", Duration::from_secs(660))?;
    let steps: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    anyhow::ensure!(status.success() && steps.len() == 9, "the agent failed ({status}):\n{log}");

    say("what the agent saw");
    let names: Vec<&str> = steps[0]["result"]["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    println!("  its tools (get-env is hidden: it is always denied): {}", names.join(", "));
    for (i, what) in [
        "an allowed call: echo",
        "a denied call: get-env",
        "a call the cluster guardrail refuses: echo with a password",
        "a call without the justification its policy requires: get-sum",
        "the same call, justified",
        "a call a rule in Audit would deny: echo rm -rf (served; the audit record says what Enforce would do)",
        "a third echo within the minute: over the rule's rate limit",
        "the held call, once approved: trigger-long-running-operation",
    ]
    .iter()
    .enumerate()
    {
        println!("  {what}");
        show(&steps[i + 1]);
    }
    println!("  progress notifications while waiting and running: {}", steps[8]["progress"].as_array().map_or(0, Vec::len));
    print!("{}", cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", NS])?);
    let updated =
        slack.wait_calls("the message updated with the outcome", |c| c["path"] == "/api/chat.update" && !c["body"].to_string().contains("tollgate_approve"))?;
    say("the Slack message, updated: no buttons left, and who decided");
    show_slack(&updated[updated.len() - 1]["body"]);

    Ok(())
}

fn show_model_calls(w: &World, pod: &tollgate_e2e::kubelet::RunningPod) -> Result<()> {
    let cp = &w.cp;
    say("the agent's model calls, through the gateway (official openai and anthropic SDKs)");
    let (status, log) = pod.wait_exit("models", Duration::from_secs(120))?;
    let calls: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    anyhow::ensure!(status.success() && calls.len() == 4, "the model calls failed ({status}):\n{log}");
    let said = [
        "an allowed model (fast = gpt-4o-mini)",
        "a model the agent may not use (gpt-5)",
        "Claude, streamed, within the daily budget",
        "Claude again, once the budget is spent",
    ];
    for (what, c) in said.iter().zip(&calls) {
        println!("  {what}");
        if c["ok"] == true {
            let u = &c["usage"];
            let (input, output) = (u["prompt_tokens"].as_u64().or(u["input_tokens"].as_u64()), u["completion_tokens"].as_u64().or(u["output_tokens"].as_u64()));
            println!("  ✓ {} ({} tokens in, {} out)", c["text"].as_str().unwrap_or(""), input.unwrap_or(0), output.unwrap_or(0));
        } else {
            let message: String = c["message"].as_str().unwrap_or("").chars().take(160).collect();
            println!("  ✗ {} {}: {message}", c["error"].as_str().unwrap_or(""), c["status"]);
        }
    }
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        Ok((cp.kubectl_ok(User::Admin, ["get", "budget", "claude-daily", "-n", NS, "-o", "jsonpath={.status.state}"])?.trim() == "HardExceeded").then_some(()))
    })?;
    print!("{}", cp.kubectl_ok(User::Admin, ["get", "budgets,managedagents", "-n", NS])?);

    Ok(())
}

fn show_audit(pod: &tollgate_e2e::kubelet::RunningPod) -> Result<()> {
    say("the audit trail (one JSON line per decision and outcome, on the sidecar's stdout)");
    let trail: Vec<Value> =
        pod.log("tollgate-sidecar")?.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r.get("kind").is_some()).collect();
    for r in trail {
        let approvers: Vec<&str> = r["approvers"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let by = if approvers.is_empty() { String::new() } else { format!(" by {}", approvers.join(", ")) };
        let shadow = match r["shadow"]["would"].as_str() {
            Some(would) => format!(" [Audit: would {would}: {}]", r["shadow"]["message"].as_str().unwrap_or("")),
            None => String::new(),
        };
        println!(
            "  {:<8} {:<16} {:<30} {:<10} {:<22} {}{by}{shadow}",
            r["kind"].as_str().unwrap_or(""),
            r["decision"].as_str().unwrap_or(""),
            r["tool"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or("-"),
            r["rule"].as_str().unwrap_or("-"),
            r["approval_request"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// A Slack message's blocks as a channel shows them, roughly.
fn show_slack(message: &Value) {
    for block in message["blocks"].as_array().into_iter().flatten() {
        let mut texts: Vec<String> = Vec::new();
        if let Some(t) = block["text"]["text"].as_str() {
            texts.push(t.to_owned());
        }
        for f in block["fields"].as_array().into_iter().flatten().chain(block["elements"].as_array().into_iter().flatten()) {
            match (f["type"].as_str(), f["text"].as_str(), f["text"]["text"].as_str()) {
                (Some("button"), _, Some(label)) => texts.push(format!("[{label}]")),
                (_, Some(t), _) => texts.push(t.to_owned()),
                _ => {}
            }
        }
        for line in texts.join("  ").lines() {
            println!("  │ {line}");
        }
    }
}

fn say(what: &str) {
    println!("\n==> {what}");
}

fn show(step: &Value) {
    if step["ok"] == false {
        println!("  ✗ JSON-RPC error {}: {}", step["code"], step["error"].as_str().unwrap_or_default());
        return;
    }
    let (text, is_error) = tool_text(step).unwrap_or_else(|e| (format!("{e:#}"), true));
    println!("  {} {}", if is_error { "✗" } else { "✓" }, text.lines().next().unwrap_or_default());
}
