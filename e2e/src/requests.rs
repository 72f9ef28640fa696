//! Approval requests as a sidecar writes them, and their phases: one builder and one set of waits
//! for every test, so a change to the request's shape is made once.

use crate::{ControlPlane, User, wait_until};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;

/// An `ApprovalRequest`: by default agent `coder` (service account `coder`) asking to run
/// `deploy` on server `s` under `workflow`, with no arguments, requested now.
#[derive(Debug, Clone)]
pub struct Request(Value);

impl Request {
    pub fn new(name: &str, workflow: &str) -> Request {
        Request(json!({
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "ApprovalRequest", "metadata": {"name": name},
            "spec": {
                "agent": "coder", "serviceAccount": "coder", "server": "s", "tool": "deploy",
                "argumentsDigest": format!("sha256:{}", "1".repeat(64)),
                "workflow": workflow, "requestedAt": jiff::Timestamp::now().to_string(),
            },
        }))
    }

    /// The agent and service account that asked.
    pub fn agent(self, agent: &str, service_account: &str) -> Request {
        self.spec("agent", json!(agent)).spec("serviceAccount", json!(service_account))
    }

    /// The call held: server, tool and arguments.
    pub fn call(self, server: &str, tool: &str, arguments: Value) -> Request {
        self.spec("server", json!(server)).spec("tool", json!(tool)).spec("arguments", arguments)
    }

    /// Requested `seconds` ago.
    pub fn aged(self, seconds: i64) -> Request {
        let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds);
        self.spec("requestedAt", json!(at.to_string()))
    }

    /// Any other field of the spec.
    pub fn spec(mut self, field: &str, value: Value) -> Request {
        self.0["spec"][field] = value;
        self
    }

    /// Any field of the metadata.
    pub fn meta(mut self, field: &str, value: Value) -> Request {
        self.0["metadata"][field] = value;
        self
    }

    pub fn json(&self) -> &Value {
        &self.0
    }

    fn name(&self) -> &str {
        self.0["metadata"]["name"].as_str().unwrap_or_default()
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ControlPlane {
    /// Creates `request` in `namespace` as its agent's service account, as the sidecar does
    /// (only that account may); kubectl's output, whether or not it was allowed.
    pub fn create_request_output(&self, namespace: &str, request: &Request) -> Result<std::process::Output> {
        let spec = &request.json()["spec"];
        let (agent, account) = (spec["agent"].as_str().unwrap_or("coder"), spec["serviceAccount"].as_str().unwrap_or("coder"));
        let path = self.dir().join(format!("{namespace}-request-{}-{}.json", request.name(), crate::random_hex(4)?));
        std::fs::write(&path, request.to_string())?;
        self.kubectl_as_agent(namespace, agent, account, &["create", "-f", path.to_str().context("path")?])
    }

    /// As [`ControlPlane::create_request_output`], failing when it was refused.
    pub fn create_request(&self, namespace: &str, request: &Request) -> Result<()> {
        let out = self.create_request_output(namespace, request)?;
        ensure!(out.status.success(), "creating request {}: {}", request.name(), String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// The phase of request `name` ("" before the operator gave it one).
    pub fn phase(&self, namespace: &str, name: &str) -> Result<String> {
        Ok(self.kubectl_ok(User::Admin, ["get", "ar", name, "-n", namespace, "-o", "jsonpath={.status.phase}"])?.trim().to_owned())
    }

    /// Waits at most `within` until request `name` is in phase `want`, saying where it stayed.
    pub fn wait_phase(&self, namespace: &str, name: &str, want: &str, within: Duration) -> Result<()> {
        let mut last = String::new();
        wait_until(within, Duration::from_millis(50), || {
            last = self.phase(namespace, name)?;
            Ok((last == want).then_some(()))
        })
        .with_context(|| format!("request {namespace}/{name} is {last:?}, not {want}"))
    }
}
