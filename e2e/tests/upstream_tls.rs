//! HTTPS to MCP servers: the sidecar originates TLS (rustls) and trusts the platform's roots plus
//! the CA bundle an `MCPServer` names (a ConfigMap or Secret, mounted into the sidecar alone). A
//! server whose certificate nobody vouches for is an error naming it, never a silent downgrade.

mod common;

use anyhow::Result;
use serde_json::json;
use tollgate_e2e::raw_mcp::request;
use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, py_client, tool_text};

#[test]
fn https_servers_are_called_with_their_own_ca_and_refused_without_it() -> Result<()> {
    let cp = ControlPlane::shared();
    common::operator();
    let pki = tollgate_e2e::certs::server_pki(&["127.0.0.1"])?;
    let server = Modern::start_tls(cp, &pki)?;
    let ns = cp.create_namespace("upstream-tls")?;
    let url = server.url();
    cp.apply(
        User::Admin,
        &ns,
        &format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: private}}
spec:
  url: "{url}"
  tls: {{caBundle: {{configMapKeyRef: {{name: private-ca, key: ca.crt}}}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: vouched-by-secret}}
spec:
  url: "{url}"
  tls: {{caBundle: {{secretKeyRef: {{name: private-ca-secret, key: ca.pem}}}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: unvouched}}
spec: {{url: "{url}", timeoutSeconds: 5}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: ["*"]}}
"#
        ),
    )?;
    let ca_dir = cp.dir().join(format!("ca-{ns}"));
    std::fs::create_dir_all(ca_dir.join("private-ca"))?;
    std::fs::write(ca_dir.join("private-ca/ca.crt"), &pki.ca_pem)?;
    let ca_dir_flag = ca_dir.to_string_lossy().into_owned();
    let sidecar = Sidecar::start_with(cp, &ns, "coder", "coder", "coder-pod", &["--ca-dir", &ca_dir_flag])?;
    sidecar.mount_secret("private-ca-secret", "ca.pem", &pki.ca_pem)?;

    let call = json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "over tls"}}]);
    for trusted in ["private", "vouched-by-secret"] {
        let steps = py_client(&sidecar.url(trusted), &call)?;
        assert_eq!(tool_text(&steps[0])?, ("Echo: over tls".to_owned(), false), "{trusted}: {steps:?}");
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}});
    let headers = ["content-type: application/json".to_owned(), "accept: application/json, text/event-stream".to_owned()];
    let refused = request("POST", &sidecar.url("unvouched"), &headers, Some(&init.to_string()))?;
    let shown = refused.error_message()?;
    assert!(shown.contains("MCP server unvouched") && shown.contains("UnknownIssuer"), "{refused:?}");
    Ok(())
}
