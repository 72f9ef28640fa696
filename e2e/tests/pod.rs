//! The injected pod really runs: applied with plain `kubectl apply`, read back as the API server
//! stored it, and run by the e2e kubelet (`tollgate_e2e::kubelet`: its own network namespace,
//! volumes mounted at their paths, downward-API env, the native sidecar's startup probe awaited
//! before the app starts). The app is the official Python MCP SDK client, told nothing but the
//! variable injection gave it; its calls are allowed, denied and held as in the firewall tests.

mod common;

use anyhow::{Context, Result, ensure};
use common::{decide, operator, pending_request};
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;
use tollgate_e2e::kubelet::{Programs, RunningPod, run_pod};
use tollgate_e2e::{ControlPlane, Modern, User, binary, repo_file, tools_dir, wait_until};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The agent's pod: the official SDK's client calling `url`.
fn pod_yaml(url: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: coder-1, labels: {{app: coder}}}}
spec:
  serviceAccountName: coder
  containers:
    - name: agent
      image: python:3.12
      command: [python]
      args: [/run/agent/py_client.py, "{url}", "@/run/agent/scenario.json"]
      volumeMounts: [{{name: agent, mountPath: /run/agent}}]
  volumes:
    - {{name: agent, configMap: {{name: agent}}}}
"#
    )
}

const SCENARIO: &str = r#"[
  {"op": "call_tool", "name": "files__echo", "arguments": {"message": "from the pod"}},
  {"op": "call_tool", "name": "files__delete_everything", "arguments": {}},
  {"op": "call_tool", "name": "files__read_file", "arguments": {"path": "/etc/motd"}}
]"#;

/// A namespace labelled for injection with the agent `coder` (transparent or not), its service
/// account, the MCP server `files` at `url`, a workflow and a policy; and a ConfigMap `agent`
/// holding the official SDK's client and `scenario`.
fn namespace_with_agent(cp: &ControlPlane, prefix: &str, url: &str, transparent: bool, scenario: &str) -> Result<String> {
    let ns = cp.create_namespace(prefix)?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    cp.apply(
        User::Admin,
        &ns,
        &format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coder}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{url}", timeoutSeconds: 10}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: [files], injection: {{transparent: {transparent}}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {{name: ops}}
spec: {{approvers: {{users: [approver-a]}}, requiredApprovals: 1}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: files}}
spec:
  tools:
    - {{server: files, name: echo, rules: [{{action: Allow}}]}}
    - {{server: files, name: delete_everything, rules: [{{action: Deny, message: nothing is deleted here}}]}}
    - {{server: files, name: read_file, approvalWorkflow: ops, rules: [{{action: RequireApproval, message: reading files needs a person}}]}}
"#
        ),
    )?;
    let script = repo_file("e2e/clients/py_client.py");
    let scenario_file = cp.dir().join(format!("{ns}-scenario.json"));
    std::fs::write(&scenario_file, scenario)?;
    let from = |key: &str, path: &std::path::Path| format!("--from-file={key}={}", path.display());
    cp.kubectl_ok(User::Admin, ["create", "configmap", "agent", "-n", &ns, &from("py_client.py", &script), &from("scenario.json", &scenario_file)])?;
    Ok(ns)
}

fn programs() -> Result<Programs> {
    Ok(Programs::default()
        .with("/usr/local/bin/tollgate-sidecar", binary("tollgate-sidecar", "tollgate-sidecar")?)
        .with("python", tools_dir()?.join("venv/bin/python")))
}

/// The steps the agent printed, once it exited successfully.
fn agent_steps(pod: &RunningPod) -> Result<Vec<Value>> {
    let (status, log) = pod.wait_exit("agent", Duration::from_secs(90))?;
    ensure!(status.success(), "the agent failed ({status}):\n{log}\nsidecar:\n{}", pod.container("tollgate-sidecar")?.log_tail());
    Ok(log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The text and `isError` of step `i`'s tool result.
fn text(steps: &[Value], i: usize) -> (String, bool) {
    let r = &steps[i]["result"];
    let t = r["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n");
    (t, r["isError"].as_bool().unwrap_or(false))
}

#[test]
fn an_injected_pod_runs_from_its_stored_spec_and_its_agent_is_governed() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let ns = namespace_with_agent(cp, "pod", &server.url(), false, SCENARIO)?;
    cp.apply(User::Admin, &ns, &pod_yaml("$(TOLLGATE_MCP_URL)"))?;
    let pod = run_pod(cp, &ns, "coder-1", &programs()?, &[(LOOPBACK, server.port)])?;

    // The held call waits for a person; one approves it as `kubectl approve` would.
    let logs = || {
        format!(
            "agent:\n{}\nsidecar:\n{}",
            pod.container("agent").map(|p| p.log_tail()).unwrap_or_default(),
            pod.container("tollgate-sidecar").map(|p| p.log_tail()).unwrap_or_default()
        )
    };
    let request = pending_request(cp, &ns).with_context(logs)?;
    decide(cp, User::ApproverA, &ns, &request, "Approve")?;
    let steps = agent_steps(&pod)?;
    ensure!(steps.len() == 3, "three steps: {steps:?}");
    assert_eq!(text(&steps, 0), ("Echo: from the pod".to_owned(), false), "{steps:?}");
    let (denied, is_error) = text(&steps, 1);
    assert!(is_error && denied.contains("nothing is deleted here"), "{steps:?}");
    assert_eq!(text(&steps, 2), ("contents of /etc/motd".to_owned(), false), "{steps:?}");

    // The sidecar ran under the pod's projected token, as the agent's service account.
    let sidecar_log = std::fs::read_to_string(cp.dir().join(format!("pod-{ns}-coder-1/tollgate-sidecar.log")))?;
    assert!(sidecar_log.contains(&format!("system:serviceaccount:{ns}:coder")), "{sidecar_log}");
    // And the agent counts it as running.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let said = cp.kubectl_ok(User::Admin, ["get", "ma", "coder", "-n", &ns, "-o", r#"jsonpath={.status.conditions[?(@.type=="Injected")].message}"#])?;
        Ok((said.trim() == "1 pods injected with the sidecar, 1 running").then_some(()))
    })
    .context("the agent's Injected condition")?;
    Ok(())
}

#[test]
fn a_transparent_pod_that_dials_its_mcp_server_directly_is_still_decided() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    // Another pod's address, as the cluster network would route it.
    let server_ip: IpAddr = "192.0.2.10".parse()?;
    let server = Modern::start_reached_as(cp, "192.0.2.10")?;
    let url = format!("http://{server_ip}:{}/mcp", server.port);
    let scenario = r#"[
      {"op": "call_tool", "name": "echo", "arguments": {"message": "straight to the server"}},
      {"op": "call_tool", "name": "delete_everything", "arguments": {}}
    ]"#;
    let ns = namespace_with_agent(cp, "pod-transparent", &url, true, scenario)?;
    // The agent's author hard-coded the server's address: it knows nothing of a sidecar.
    cp.apply(User::Admin, &ns, &pod_yaml(&url))?;
    let stored: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "pod", "coder-1", "-n", &ns, "-o", "json"])?)?;
    let init: Vec<&str> = stored["spec"]["initContainers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(init, ["tollgate-redirect", "tollgate-sidecar"]);

    let pod = run_pod(cp, &ns, "coder-1", &programs()?, &[(server_ip, server.port)])?;
    let steps = agent_steps(&pod)?;
    ensure!(steps.len() == 2, "two steps: {steps:?}");
    assert_eq!(text(&steps, 0), ("Echo: straight to the server".to_owned(), false), "{steps:?}");
    let (denied, is_error) = text(&steps, 1);
    assert!(is_error && denied.contains("nothing is deleted here"), "the denied tool stays denied: {steps:?}");
    let rules = pod.net.run(&["iptables", "-t", "nat", "-S", "TOLLGATE_OUTPUT"])?;
    assert!(rules.contains("--uid-owner 1337 -j RETURN"), "the sidecar's own traffic is exempt: {rules}");
    Ok(())
}

/// An app container that runs as root (no `runAsUser`, as most images do) cannot become the
/// sidecar's UID, which the redirect exempts, and dial its MCP server undecided: injection takes
/// `SETUID`/`SETGID` and privilege escalation from every app container of a transparent agent,
/// and the e2e kubelet runs it with just that (as a container runtime would).
#[test]
fn a_root_app_in_a_transparent_pod_cannot_become_the_sidecar_to_skip_the_redirect() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server_ip: IpAddr = "192.0.2.10".parse()?;
    let server = Modern::start_reached_as(cp, "192.0.2.10")?;
    let url = format!("http://{server_ip}:{}/mcp", server.port);
    let ns = namespace_with_agent(cp, "pod-setuid", &url, true, "[]")?;
    let script = repo_file("e2e/clients/become_sidecar.py");
    cp.kubectl_ok(User::Admin, ["create", "configmap", "escape", "-n", &ns, &format!("--from-file=become_sidecar.py={}", script.display())])?;
    cp.apply(
        User::Admin,
        &ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: coder-1, labels: {{app: coder}}}}
spec:
  serviceAccountName: coder
  containers:
    - name: agent
      image: python:3.12
      command: [python3]
      args: [/run/escape/become_sidecar.py, "{url}", delete_everything]
      volumeMounts: [{{name: escape, mountPath: /run/escape}}]
  volumes:
    - {{name: escape, configMap: {{name: escape}}}}
"#
        ),
    )?;
    let stored: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "pod", "coder-1", "-n", &ns, "-o", "json"])?)?;
    let app = &stored["spec"]["containers"][0]["securityContext"];
    ensure!(app["allowPrivilegeEscalation"] == false, "the app may gain privileges: {app}");
    // The standard library's python, readable by any UID it might become.
    let programs = programs()?.with("python3", "/usr/bin/python3");
    let pod = run_pod(cp, &ns, "coder-1", &programs, &[(server_ip, server.port)])?;
    let (status, log) = pod.wait_exit("agent", Duration::from_secs(60))?;
    ensure!(status.success(), "the agent failed ({status}):\n{log}");
    let out: Value = log.lines().find_map(|l| serde_json::from_str(l).ok()).with_context(|| format!("the agent said nothing: {log}"))?;
    let answer = out["result"].to_string();
    ensure!(!answer.contains("everything deleted"), "the denied tool ran past the sidecar (setuid: {}): {out}", out["setuid"]);
    ensure!(answer.contains("nothing is deleted here"), "the call was not decided: {out}");
    ensure!(out["setuid"] == false && out["uid"] == 0, "the app became another UID: {out}");
    Ok(())
}
