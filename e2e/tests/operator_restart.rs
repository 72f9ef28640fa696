//! The operator is stopped and started again while requests are pending (DESIGN §6, nothing
//! lost): decisions are refused while its webhook is down (fail closed), a request that expired
//! meanwhile ends Expired, and a pending one is approved once it is back.

use anyhow::Result;
use std::time::Duration;
use tollgate_e2e::requests::Request;
use tollgate_e2e::{ControlPlane, Operator, User, wait_until};

fn apply(cp: &ControlPlane, ns: &str, json: &str) -> Result<()> {
    cp.apply(User::Admin, ns, json).map(drop)
}

/// Creates a request as the agent's sidecar does (only its service account may).
fn request(cp: &ControlPlane, ns: &str, name: &str, age: i64) -> Result<()> {
    cp.create_request(ns, &Request::new(name, "ops").aged(age))
}

fn phase(cp: &ControlPlane, ns: &str, name: &str) -> Result<String> {
    cp.phase(ns, name)
}

fn wait_phase(cp: &ControlPlane, ns: &str, name: &str, want: &str) -> Result<()> {
    cp.wait_phase(ns, name, want, Duration::from_secs(30))
}

#[test]
fn pending_requests_survive_an_operator_restart() -> Result<()> {
    let cp = ControlPlane::shared();
    let first = Operator::start(cp)?;
    let ns = cp.create_namespace("restart")?;
    apply(
        cp,
        &ns,
        r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"ops"},
        "spec":{"approvers":{"users":["approver-a"]},"timeoutSeconds":30}}"#,
    )?;
    request(cp, &ns, "long", 0)?;
    request(cp, &ns, "short", 25)?;
    wait_phase(cp, &ns, "long", "Pending")?;
    wait_phase(cp, &ns, "short", "Pending")?;

    first.stop();
    // With the webhook down, a decision is refused rather than admitted unchecked.
    let out = cp.kubectl_approve(User::ApproverA, &["long", "-n", &ns, "--wait", "0"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a decision was admitted while the webhook was down");
    // Refused by the API server because the webhook could not be called (failurePolicy: Fail),
    // not by RBAC or the plugin, and nothing was stored.
    assert!(said.contains("failed calling webhook \"approvals.tollgate.dev\""), "refused for another reason: {said}");
    let stored = cp.kubectl_ok(User::Admin, ["get", "ar", "long", "-n", &ns, "-o", "jsonpath={.status.decisions}"])?;
    assert!(stored.trim().is_empty(), "a decision was stored while the webhook was down: {stored}");
    // "short" passes its deadline while nobody watches.
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let expires: jiff::Timestamp = cp.kubectl_ok(User::Admin, ["get", "ar", "short", "-n", &ns, "-o", "jsonpath={.status.expiresAt}"])?.trim().parse()?;
        Ok((jiff::Timestamp::now() > expires).then_some(()))
    })?;
    assert_eq!(phase(cp, &ns, "short")?, "Pending");

    let _second = Operator::start(cp)?;
    wait_phase(cp, &ns, "short", "Expired")?;
    assert_eq!(phase(cp, &ns, "long")?, "Pending");
    let out = cp.kubectl_approve(User::ApproverA, &["long", "-n", &ns, "--reason", "after the restart", "--wait", "0"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_phase(cp, &ns, "long", "Approved")?;
    Ok(())
}
