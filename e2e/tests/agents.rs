//! The `ManagedAgent` controller (DESIGN §3.6): an agent's service account gets exactly what its
//! sidecar needs, from a RoleBinding the agent owns and the agents' ClusterRoleBinding, and loses
//! the cluster-wide part as soon as the agent is deleted; `Ready` says so.

use anyhow::{Context, Result};
use std::time::Duration;
use tollgate_e2e::{ControlPlane, User, wait_until};

mod common;
use common::operator;

/// `kubectl auth can-i`: it answers "yes" (exit 0) or "no" (exit 1) on stdout; anything else (a
/// misspelled resource, an unreachable server) is an error, never a "no".
fn can(cp: &ControlPlane, who: &str, args: &[&str]) -> Result<bool> {
    let mut all = vec!["auth", "can-i", "--as", who];
    all.extend_from_slice(args);
    let out = cp.kubectl(User::Admin, all)?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match (out.status.code(), said.as_str()) {
        (Some(0), "yes") => Ok(true),
        // kubectl says "no" to a resource it does not know, with only a warning.
        (Some(1), "no") if !stderr.contains("doesn't have a resource type") => Ok(false),
        _ => anyhow::bail!("kubectl auth can-i {args:?} as {who} gave no answer: {said} {stderr}"),
    }
}

#[test]
fn an_agent_gets_exactly_the_rbac_its_sidecar_needs_and_loses_it_when_deleted() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("agent-rbac")?;
    let other = cp.create_namespace("agent-rbac-other")?;
    let path = cp.dir().join(format!("{ns}-builder.yaml"));
    std::fs::write(
        &path,
        "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: builder}\nspec: {selector: {matchLabels: {app: builder}}, serviceAccountName: builder-sa}\n",
    )?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", &ns, "-f", path.to_str().context("path")?])?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let ready = cp.kubectl_ok(User::Admin, ["get", "ma", "builder", "-n", &ns, "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#])?;
        Ok((ready.trim() == "Bound").then_some(()))
    })
    .context("Ready: Bound")?;
    let columns = cp.kubectl_ok(User::Admin, ["get", "ma", "builder", "-n", &ns])?;
    assert!(columns.lines().nth(1).is_some_and(|l| l.contains("True")), "kubectl get shows it ready: {columns}");

    let uid = cp.kubectl_ok(User::Admin, ["get", "ma", "builder", "-n", &ns, "-o", "jsonpath={.metadata.uid}"])?;
    let owner = cp.kubectl_ok(
        User::Admin,
        ["get", "rolebinding", "tollgate-agent-builder", "-n", &ns, "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}"],
    )?;
    assert_eq!(owner.trim(), format!("ManagedAgent/{}", uid.trim()), "the binding goes with the agent");

    let sa = format!("system:serviceaccount:{ns}:builder-sa");
    // The agents' cluster binding follows the set of agents as it changes.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok(can(cp, &sa, &["list", "clustertoolpolicies.tollgate.dev"])?.then_some(())))
        .with_context(|| format!("the agent's account joins the cluster binding: {}", operator().log_tail()))?;
    for needed in [
        &["list", "toolpolicies.tollgate.dev", "-n", ns.as_str()][..],
        &["watch", "managedagents.tollgate.dev", "-n", &ns],
        &["create", "approvalrequests.tollgate.dev", "-n", &ns],
        &["list", "clustertoolpolicies.tollgate.dev"],
        &["watch", "namespaces"],
    ] {
        assert!(can(cp, &sa, needed)?, "the sidecar needs {needed:?}");
    }
    for refused in [
        &["patch", "approvalrequests.tollgate.dev", "--subresource=status", "-n", ns.as_str()][..],
        &["list", "toolpolicies.tollgate.dev", "-n", &other],
        &["create", "approvalrequests.tollgate.dev", "-n", &other],
        &["get", "secrets", "-n", &ns],
    ] {
        assert!(!can(cp, &sa, refused)?, "the sidecar must not: {refused:?}");
    }

    // Deleted: the cluster-wide part goes at once (the RoleBinding goes with its owner, by the
    // garbage collector, which this control plane does not run).
    cp.kubectl_ok(User::Admin, ["delete", "ma", "builder", "-n", &ns])?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok((!can(cp, &sa, &["list", "clustertoolpolicies.tollgate.dev"])?).then_some(())))
        .context("the deleted agent's account leaves the cluster binding")?;
    Ok(())
}
