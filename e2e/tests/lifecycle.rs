//! The operator owns the rest of the lifecycle: it discovers MCP servers (what they say of
//! themselves, their tools and a digest of each schema, a `Ready` condition that says what is
//! wrong, Events when tools change) and keeps approval workflows' status, applying a workflow's
//! edit to its pending requests at once.

mod common;

use anyhow::{Context, Result};
use common::{decide, operator};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_e2e::{AuthEcho, ControlPlane, Modern, User, wait_until};

fn get(cp: &ControlPlane, ns: &str, resource: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", resource, name, "-n", ns, "-o", "json"])?)?)
}

/// The server's `Ready` condition once it has `status` (and `reason`, when given).
fn wait_ready(cp: &ControlPlane, ns: &str, name: &str, status: &str, reason: Option<&str>) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let server = get(cp, ns, "mcpserver", name)?;
        let ready = server["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
        last = ready.clone();
        Ok((ready["status"] == status && reason.is_none_or(|r| ready["reason"] == r)).then_some(server))
    })
    .with_context(|| format!("MCPServer {name}: last Ready condition {last}"))
}

fn events(cp: &ControlPlane, ns: &str, reason: &str) -> Result<Vec<String>> {
    let list: Value =
        serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "events", "-n", ns, "--field-selector", &format!("reason={reason}"), "-o", "json"])?)?;
    Ok(list["items"].as_array().into_iter().flatten().filter_map(|e| e["note"].as_str().or(e["message"].as_str()).map(str::to_owned)).collect())
}

fn wait_event(cp: &ControlPlane, ns: &str, reason: &str, contains: &str) -> Result<String> {
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || Ok(events(cp, ns, reason)?.into_iter().find(|n| n.contains(contains))))
        .with_context(|| format!("no {reason} Event saying {contains:?}"))
}

#[test]
fn mcp_servers_are_discovered_and_their_changes_announced() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let auth = AuthEcho::start(cp, "s3cret")?;
    let ns = cp.create_namespace("discovery")?;
    cp.apply(
        User::Admin,
        &ns,
        &format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: down}}
spec: {{url: "http://127.0.0.1:9/mcp"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: private}}
spec:
  url: "{}"
  headers: [{{name: Authorization, prefix: "Bearer ", secretKeyRef: {{name: private-token, key: token}}}}]
"#,
            server.url(),
            auth.url()
        ),
    )?;

    // What the server says of itself and its tools, with a digest of each schema.
    let files = wait_ready(cp, &ns, "files", "True", Some("Discovered"))?;
    let status = &files["status"];
    assert_eq!(status["serverInfo"]["name"], "modern", "{status}");
    assert!(status["serverInfo"]["protocolVersion"].is_string(), "{status}");
    let tools: Vec<&str> = status["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"delete_everything"), "{tools:?}");
    let echo = status["tools"].as_array().into_iter().flatten().find(|t| t["name"] == "echo").context("echo")?;
    let digest = echo["schemaDigest"].as_str().context("schemaDigest")?.to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert!(status["lastDiscoveryTime"].is_string());
    let table = cp.kubectl_ok(User::Admin, ["get", "mcpservers", "-n", &ns, "-o", "wide"])?;
    assert!(table.lines().any(|l| l.starts_with("files") && l.contains("True") && l.contains("modern")), "{table}");
    assert_eq!(status["toolCount"].as_u64(), Some(tools.len() as u64), "{status}");

    // A server that cannot be reached says why, and an Event says it once.
    let down = wait_ready(cp, &ns, "down", "False", Some("Unreachable"))?;
    let message = down["status"]["conditions"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("127.0.0.1:9") && message.to_lowercase().contains("refused"), "{message}");
    wait_event(cp, &ns, "DiscoveryFailed", "127.0.0.1:9")?;

    // An endpoint that is not MCP: its answer's status is told, never its body (whoever may name
    // a URL must not read internal endpoints through the object's status).
    let [web_port] = tollgate_e2e::free_ports::<1>()?;
    let mut web = std::process::Command::new("python3");
    web.args(["-m", "http.server", &web_port.to_string(), "--bind", "127.0.0.1"]).current_dir(cp.dir());
    let _web = tollgate_e2e::Process::spawn(web, cp.dir().join(format!("{ns}-web.log")))?;
    cp.apply(
        User::Admin,
        &ns,
        &format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: internal}}\nspec: {{url: \"http://127.0.0.1:{web_port}/\"}}\n"),
    )?;
    let internal = wait_ready(cp, &ns, "internal", "False", Some("BadAnswer"))?;
    let said = internal["status"]["conditions"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(said.contains("HTTP 501") && !said.contains("Unsupported method") && !said.contains("<"), "{said}");

    // Credentials: missing, wrong, right; discovery follows without an edit of the server.
    let missing = wait_ready(cp, &ns, "private", "False", Some("CredentialsMissing"))?;
    assert!(missing["status"]["conditions"][0]["message"].as_str().unwrap_or_default().contains("private-token"), "{missing}");
    cp.kubectl_ok(User::Admin, ["create", "secret", "generic", "private-token", "-n", &ns, "--from-literal=token=wrong"])?;
    wait_ready(cp, &ns, "private", "False", Some("Unauthorized"))?;
    cp.kubectl_ok(User::Admin, ["delete", "secret", "private-token", "-n", &ns])?;
    cp.kubectl_ok(User::Admin, ["create", "secret", "generic", "private-token", "-n", &ns, "--from-literal=token=s3cret"])?;
    let private = wait_ready(cp, &ns, "private", "True", None)?;
    assert_eq!(private["status"]["tools"][0]["name"], "whoami", "{private}");
    // The credential itself is nowhere in what the operator wrote.
    assert!(!private.to_string().contains("s3cret"));

    // The server is upgraded under the same address: the change is announced.
    let port = server.port;
    drop(server);
    let _upgraded = Modern::start_upgraded_on(cp, port)?;
    let changed = wait_event(cp, &ns, "ToolSchemaChanged", "tool echo")?;
    assert!(changed.contains(&digest), "{changed}");
    let membership = wait_event(cp, &ns, "ToolsChanged", "write_file")?;
    assert!(membership.contains("added: write_file") && membership.contains("removed: delete_everything"), "{membership}");
    let files = get(cp, &ns, "mcpserver", "files")?;
    let echo = files["status"]["tools"].as_array().into_iter().flatten().find(|t| t["name"] == "echo").context("echo")?;
    assert_ne!(echo["schemaDigest"].as_str(), Some(digest.as_str()));
    Ok(())
}

#[test]
fn workflows_report_their_approvers_and_an_edit_applies_to_pending_requests_at_once() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("workflow")?;
    cp.apply(
        User::Admin,
        &ns,
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {name: ops}
spec: {approvers: {users: [approver-a, approver-b], groups: [sre]}, requiredApprovals: 2, timeoutSeconds: 3600}
"#,
    )?;
    let ready = |w: &Value| w["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
    let workflow = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let w = get(cp, &ns, "approvalworkflow", "ops")?;
        Ok((ready(&w)["status"] == "True").then_some(w))
    })?;
    assert_eq!((workflow["status"]["approvers"].as_i64(), workflow["status"]["approverGroups"].as_i64()), (Some(2), Some(1)), "{workflow}");
    assert!(ready(&workflow)["message"].as_str().unwrap_or_default().contains("2 approval(s) needed"), "{workflow}");

    // A request of the workflow: pending, and counted.
    cp.create_request(&ns, &tollgate_e2e::requests::Request::new("publish", "ops").call("docs", "publish", json!({})))?;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || Ok((get(cp, &ns, "approvalworkflow", "ops")?["status"]["pending"] == 1).then_some(())))
        .context("the workflow counts its pending request")?;
    let table = cp.kubectl_ok(User::Admin, ["get", "approvalworkflows", "-n", &ns])?;
    assert!(table.contains("APPROVERS") && table.lines().any(|l| l.starts_with("ops ") && l.contains("True")), "{table}");

    // One of two approvals: still pending. The quorum lowered to one: approved at once, with no
    // other decision and long before any deadline.
    decide(cp, User::ApproverA, &ns, "publish", "Approve")?;
    let phase = || -> Result<String> { Ok(get(cp, &ns, "approvalrequest", "publish")?["status"]["phase"].as_str().unwrap_or_default().to_owned()) };
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let ar = get(cp, &ns, "approvalrequest", "publish")?;
        Ok((ar["status"]["approvals"] == "1/2").then_some(()))
    })?;
    assert_eq!(phase()?, "Pending");
    cp.kubectl_ok(User::Admin, ["patch", "approvalworkflow", "ops", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"requiredApprovals":1}}"#])?;
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || Ok((phase()? == "Approved").then_some(())))
        .context("the edit was not applied to the pending request")?;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || Ok((get(cp, &ns, "approvalworkflow", "ops")?["status"]["pending"] == 0).then_some(())))
        .context("the workflow's pending count follows")?;

    // A workflow whose quorum cannot be reached after escalation says so.
    cp.apply(
        User::Admin,
        &ns,
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {name: lonely}
spec: {approvers: {users: [approver-a]}, escalation: {approvers: {users: [approver-a]}, requiredApprovals: 3}}
"#,
    )?;
    let lonely = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let w = get(cp, &ns, "approvalworkflow", "lonely")?;
        Ok((ready(&w)["reason"] == "QuorumUnreachable").then_some(w))
    })?;
    assert_eq!(ready(&lonely)["status"], "False", "{lonely}");
    Ok(())
}

/// A namespace editor's servers that accept connections and never answer hold only their
/// namespace's share of the discovery slots: another namespace's server is discovered at once,
/// not after the silent ones time out.
#[test]
fn servers_that_never_answer_hold_only_their_namespace_s_share_of_discovery() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}/mcp", silent.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    // Holds every connection open, unanswered, for as long as the test runs.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let hog = cp.create_namespace("hog")?;
    let silent_servers: String = (0..20)
        .map(|i| {
            format!(
                "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: silent-{i}}}\nspec: {{url: \"{silent_url}\", timeoutSeconds: 20}}\n---\n"
            )
        })
        .collect();
    cp.apply(User::Admin, &hog, &silent_servers)?;
    let first_silent =
        wait_until(Duration::from_secs(30), Duration::from_millis(20), || Ok((accepted.load(Ordering::SeqCst) >= 4).then(std::time::Instant::now)))
            .context("the silent servers' discovery never started")?;

    let fair = cp.create_namespace("fair")?;
    cp.apply(
        User::Admin,
        &fair,
        &format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: files}}\nspec: {{url: \"{}\"}}\n", server.url()),
    )?;
    let discovered = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let ready = get(cp, &fair, "mcpserver", "files")?["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(()))
    });
    let held = accepted.load(Ordering::SeqCst);
    discovered.with_context(|| format!("another namespace's server waited behind {held} silent discoveries"))?;
    // None of the silent discoveries has timed out yet, so these are all that ever ran at once.
    if first_silent.elapsed() < Duration::from_secs(20) {
        assert!(held <= 4, "the silent namespace ran {held} discoveries at once, over its share of 4");
    }
    Ok(())
}
