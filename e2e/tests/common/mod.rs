//! What the firewall tests share: a namespace with server-everything, an agent, a policy, a
//! workflow and a sidecar; and the waits on approval requests.
#![allow(dead_code)]

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate_e2e::proxy::CountingProxy;
use tollgate_e2e::{ControlPlane, Everything, Operator, Sidecar, User, py_client, tool_text, wait_until};

pub fn operator() -> &'static Operator {
    static OP: OnceLock<Operator> = OnceLock::new();
    OP.get_or_init(|| Operator::start(ControlPlane::shared()).unwrap_or_else(|e| panic!("starting the operator: {e:#}")))
}

pub fn everything() -> &'static Everything {
    static E: OnceLock<Everything> = OnceLock::new();
    E.get_or_init(|| Everything::start(ControlPlane::shared()).unwrap_or_else(|e| panic!("starting server-everything: {e:#}")))
}

pub const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {name: everything}
spec:
  tools:
    - server: everything
      name: echo
      rules:
        - {action: Deny, when: "args.message.contains('secret')", message: echoing secrets is not allowed}
        - {action: Allow}
    - {server: everything, name: get-env, rules: [{action: Deny, message: the environment is private}]}
    - {server: everything, name: get-sum, justification: Required, rules: [{action: Allow}]}
    - server: everything
      name: trigger-long-running-operation
      approvalWorkflow: ops
      rules: [{action: RequireApproval, message: long operations need a person}]
    - server: tollgate
      name: request_approval
      approvalWorkflow: ops
      rules: [{action: RequireApproval}]
"#;

pub struct Env {
    pub cp: &'static ControlPlane,
    pub ns: String,
    pub sidecar: Sidecar,
    /// In front of the everything server: what reached it, counted there.
    pub upstream: CountingProxy,
}

/// A namespace with the everything server, an agent, the policy above, a workflow, a sidecar.
pub fn setup(prefix: &str, workflow_async: bool) -> Result<Env> {
    operator();
    setup_in(ControlPlane::shared(), prefix, workflow_async, &everything().url())
}

pub fn setup_in(cp: &'static ControlPlane, prefix: &str, workflow_async: bool, everything_url: &str) -> Result<Env> {
    let ns = cp.create_namespace(prefix)?;
    let (host, path) = everything_url.strip_prefix("http://").and_then(|r| r.split_once('/')).context("an http:// URL with a path")?;
    let upstream = CountingProxy::start(host.parse().context("the server's address")?)?;
    let everything_url = upstream.url(&format!("/{path}"));
    let objects = format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: everything}}
spec: {{url: "{url}", timeoutSeconds: 10}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: down}}
spec: {{url: "http://127.0.0.1:9/mcp", timeoutSeconds: 2}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: ["*"]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {{name: ops}}
spec: {{approvers: {{users: [approver-a, approver-b]}}, requiredApprovals: 1, async: {workflow_async}}}
---
{POLICY}"#,
        url = everything_url
    );
    let path = cp.dir().join(format!("{ns}-objects.yaml"));
    std::fs::write(&path, objects)?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", &ns, "-f", path.to_str().context("path")?])?;
    let sidecar = Sidecar::start(cp, &ns, "coder", "coder", &format!("coder-{ns}"))?;
    Ok(Env { cp, ns, sidecar, upstream })
}

pub fn step(steps: &[Value], i: usize) -> &Value {
    steps.get(i).unwrap_or(&Value::Null)
}

/// Polls `get_approval_status` for request `name` until its text satisfies `done`.
pub fn poll_status(url: &str, name: &str, done: impl Fn(&str) -> bool) -> Result<()> {
    let mut last = String::new();
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let out = py_client(url, &json!([{"op": "call_tool", "name": "get_approval_status", "arguments": {"request_id": name}}]))?;
        last = tool_text(step(&out, 0))?.0;
        Ok(done(&last).then_some(()))
    })
    .with_context(|| format!("last status: {last}"))
}

/// The one request of the namespace once the sidecar created it.
pub fn pending_request(cp: &ControlPlane, ns: &str) -> Result<String> {
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let names = cp.kubectl_ok(User::Admin, ["get", "ar", "-n", ns, "-o", "jsonpath={.items[*].metadata.name}"])?;
        Ok(names.split_whitespace().next().map(str::to_owned))
    })
}

pub fn wait_for_pending(cp: &ControlPlane, ns: &str, name: &str) -> Result<()> {
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let phase = cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", ns, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Pending").then_some(()))
    })
}

/// A decision as `kubectl approve` writes it (a JSON patch on the status subresource).
pub fn decide(cp: &ControlPlane, user: User, ns: &str, name: &str, verdict: &str) -> Result<()> {
    let d = json!({"user": user.name(), "decision": verdict, "reason": "e2e", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"});
    // The operator writes status (phase, approvals) first; wait for it so the list exists.
    wait_for_pending(cp, ns, name)?;
    let patch = json!([{"op": "add", "path": "/status/decisions", "value": [d]}]).to_string();
    cp.kubectl_ok(user, ["patch", "ar", name, "-n", ns, "--subresource=status", "--type=json", "-p", &patch])?;
    Ok(())
}
