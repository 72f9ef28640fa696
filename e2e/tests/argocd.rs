//! GitOps (DESIGN §3.6): the Argo CD health checks the chart ships, run by gopher-lua (Argo CD's
//! engine) against objects read back from the real API server in each state; and no drift: the
//! examples applied twice with server-side apply change nothing the second time.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_e2e::requests::Request;
use tollgate_e2e::{ControlPlane, User, argocd_health, render_chart, wait_until};

mod common;
use common::{decide, operator};

/// The chart's health check for `kind`, as Argo CD would get it from the shipped ConfigMap.
fn script(kind: &str) -> Result<String> {
    let rendered = render_chart(&["--show-only", "templates/argocd-health.yaml"])?;
    let cm: Value = serde_yaml::from_str(&rendered)?;
    cm["data"][format!("resource.customizations.health.tollgate.dev_{kind}")].as_str().map(str::to_owned).with_context(|| format!("no health check for {kind}"))
}

/// `(status, message)` of `kind`'s health check on `object`.
fn health(cp: &ControlPlane, kind: &str, object: &Value) -> Result<(String, String)> {
    let path = cp.dir().join(format!("health-{kind}.lua"));
    std::fs::write(&path, script(kind)?)?;
    let mut child = Command::new(argocd_health()?).arg(&path).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(object.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "the {kind} health check failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["status"].as_str().unwrap_or_default().to_owned(), v["message"].as_str().unwrap_or_default().to_owned()))
}

fn get(cp: &ControlPlane, ns: &str, resource: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", resource, name, "-n", ns, "-o", "json"])?)?)
}

fn apply(cp: &ControlPlane, ns: &str, text: &str) -> Result<()> {
    cp.apply(User::Admin, ns, text).map(drop)
}

/// Waits until `kind`'s health check says `status` of the object read back.
fn wait_health(cp: &ControlPlane, ns: &str, kind: &str, resource: &str, name: &str, status: &str) -> Result<String> {
    let mut last = (String::new(), String::new());
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        last = health(cp, kind, &get(cp, ns, resource, name)?)?;
        Ok((last.0 == status).then(|| last.1.clone()))
    })
    .with_context(|| format!("{kind} {name}: not {status} within 20s; last {last:?}"))
}

#[test]
fn health_checks_read_real_objects_as_argo_cd_does() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("argocd")?;
    apply(
        cp,
        &ns,
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {name: good}
spec: {tools: [{name: "*", rules: [{action: Allow}]}]}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApprovalWorkflow
metadata: {name: one}
spec: {approvers: {users: [approver-a]}, requiredApprovals: 1}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: docs}
spec: {url: "http://127.0.0.1:9/mcp"}
"#,
    )?;
    wait_health(cp, &ns, "ToolPolicy", "toolpolicy", "good", "Healthy")?;
    // A policy that does not compile (the operator's own namespace is exempt from the webhook
    // that would refuse it, so the operator's status is what reports it).
    apply(
        cp,
        "tollgate-system",
        "apiVersion: tollgate.dev/v1alpha1\nkind: ToolPolicy\nmetadata: {name: bad}\nspec: {tools: [{name: x, rules: [{action: Deny, when: \"args.(\"}]}]}\n",
    )?;
    let why = wait_health(cp, "tollgate-system", "ToolPolicy", "toolpolicy", "bad", "Degraded")?;
    assert!(why.contains("InvalidExpression"), "{why}");

    // The agent: Healthy; its kill switch on: Suspended.
    for name in ["to-approve", "to-deny"] {
        cp.create_request(&ns, &Request::new(name, "one").call("docs", "publish", json!({})))?;
    }
    assert_eq!(health(cp, "ManagedAgent", &get(cp, &ns, "managedagent", "coder")?)?.0, "Healthy");
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"suspended":true}}"#])?;
    assert_eq!(health(cp, "ManagedAgent", &get(cp, &ns, "managedagent", "coder")?)?.0, "Suspended");

    // Requests: waiting, approved, denied.
    let waiting = wait_health(cp, &ns, "ApprovalRequest", "approvalrequest", "to-approve", "Progressing")?;
    assert!(waiting.contains("waiting for approval"), "{waiting}");
    decide(cp, User::ApproverA, &ns, "to-approve", "Approve")?;
    wait_health(cp, &ns, "ApprovalRequest", "approvalrequest", "to-approve", "Healthy")?;
    decide(cp, User::ApproverA, &ns, "to-deny", "Deny")?;
    let denied = wait_health(cp, &ns, "ApprovalRequest", "approvalrequest", "to-deny", "Degraded")?;
    assert!(denied.contains("Denied"), "{denied}");

    // A server discovery cannot reach is Degraded, with the operator's reason and message; a
    // workflow whose quorum can be reached is Healthy.
    let why = wait_health(cp, &ns, "MCPServer", "mcpserver", "docs", "Degraded")?;
    assert!(why.starts_with("Unreachable: ") && why.contains("127.0.0.1:9"), "{why}");
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let (state, why) = health(cp, "ApprovalWorkflow", &get(cp, &ns, "approvalworkflow", "one")?)?;
        Ok((state == "Healthy" && why.contains("1 approval(s) needed")).then_some(()))
    })
    .context("the workflow's Ready condition, read by its health check")?;
    // Every kind has a check that runs on an empty object without failing.
    for kind in ["ApprovalWorkflow", "Budget", "ClusterToolPolicy", "Gateway", "ModelProvider"] {
        let (state, _) = health(cp, kind, &json!({"metadata": {"name": "x"}}))?;
        assert!(["Healthy", "Progressing"].contains(&state.as_str()), "{kind}: {state}");
    }
    Ok(())
}

#[test]
fn applying_the_examples_twice_changes_nothing() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let examples = format!("{}/../examples/quickstart", env!("CARGO_MANIFEST_DIR"));
    // What an apply could change: spec, labels, annotations, generation, and the non-status
    // field managers; and resourceVersion, which only status writes may move.
    let state = || -> Result<Vec<(String, Value, Value)>> {
        let list: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "-f", &examples, "-o", "json", "--show-managed-fields"])?)?;
        Ok(list["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|o| {
                let m = &o["metadata"];
                let applied: Vec<&Value> = m["managedFields"].as_array().into_iter().flatten().filter(|f| f["subresource"] != "status").collect();
                let status_written = m["managedFields"].as_array().into_iter().flatten().any(|f| f["subresource"] == "status");
                (
                    format!("{}/{}", o["kind"].as_str().unwrap_or_default(), m["name"].as_str().unwrap_or_default()),
                    json!({"spec": o["spec"], "labels": m["labels"], "annotations": m["annotations"], "generation": m["generation"], "managers": applied}),
                    if status_written { Value::Null } else { m["resourceVersion"].clone() },
                )
            })
            .collect())
    };
    cp.kubectl_ok(User::Admin, ["apply", "--server-side", "-f", &examples])?;
    // Once the operator has written what it writes (status only), nothing moves.
    let mut previous = None;
    let settled = wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
        let now = state()?;
        let same = previous.as_ref() == Some(&now);
        previous = Some(now.clone());
        Ok(same.then_some(now))
    })?;
    cp.kubectl_ok(User::Admin, ["apply", "--server-side", "-f", &examples])?;
    let after = state()?;
    assert!(after.len() >= 6 && after.len() == settled.len(), "{after:?}");
    for ((name, applied, rv), (_, applied2, rv2)) in settled.iter().zip(&after) {
        assert_eq!(applied, applied2, "{name}: the second apply changed it");
        // A controller may write an object's first status just after the wait above settled:
        // from then on its resourceVersion is the status writer's, not the apply's.
        if !rv.is_null() && !rv2.is_null() {
            assert_eq!(rv, rv2, "{name}: its resourceVersion moved, and nobody writes its status");
        }
    }
    // The operator never writes spec: on Tollgate's kinds, kubectl's apply is the only manager of
    // anything but status.
    for (name, applied, _) in after.iter().filter(|(name, _, _)| !name.starts_with("Namespace/")) {
        for f in applied["managers"].as_array().into_iter().flatten() {
            assert_eq!(f["manager"], "kubectl", "{name}: {} wrote {}", f["manager"], f["fieldsV1"]);
        }
    }
    Ok(())
}
