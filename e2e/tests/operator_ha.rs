//! Two operator replicas (DESIGN §3.6): one CA and serving certificate shared through a Secret, so
//! every webhook call verifies whichever replica a Service hands it to; the controllers on the
//! leader of a Lease, and a new leader within the lease duration when the leader dies.

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tollgate_e2e::requests::Request;
use tollgate_e2e::{Balancer, ControlPlane, Operator, User, wait_until};

const LEASE_SECONDS: u64 = 6;

fn holder(cp: &ControlPlane) -> Result<String> {
    Ok(cp.kubectl_ok(User::Admin, ["get", "lease", "tollgate-operator", "-n", "tollgate-system", "-o", "jsonpath={.spec.holderIdentity}"])?.trim().to_owned())
}

/// A request as the sidecar makes it, `age` seconds old.
fn request(name: &str, workflow: &str, age: i64) -> Request {
    Request::new(name, workflow).aged(age)
}

fn phase(cp: &ControlPlane, ns: &str, name: &str) -> Result<String> {
    cp.phase(ns, name)
}

/// The sum of a counter's series on a replica's metrics page; a page that does not answer, or
/// a value that does not read, is an error rather than a zero.
fn counter(op: &Operator, name: &str) -> Result<u64> {
    let out = std::process::Command::new("curl").args(["-sf", "--max-time", "5", &format!("{}/metrics", op.admin_url)]).output()?;
    anyhow::ensure!(out.status.success(), "{}/metrics did not answer", op.admin_url);
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(text.contains("# EOF"), "not a whole metrics page: {text}");
    let series = text.lines().filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
    series.map(|l| l.rsplit(' ').next().unwrap_or_default().parse::<u64>().with_context(|| format!("unreadable: {l}"))).sum()
}

/// Admission reviews a replica served.
fn reviews(op: &Operator) -> Result<u64> {
    counter(op, "tollgate_admission_reviews_total")
}

/// Reconciles a replica ran: only a leader runs controllers.
fn reconciles(op: &Operator) -> Result<u64> {
    counter(op, "tollgate_operator_reconciles_total")
}

#[test]
fn two_replicas_serve_every_webhook_call_and_hand_over_the_lead() -> Result<()> {
    let cp = ControlPlane::shared();
    // Two replicas behind one address, as a Service puts them.
    let [url_port, port_a, port_b] = tollgate_e2e::free_ports::<3>()?;
    let service = Balancer::start(url_port, vec![port_a, port_b])?;
    let lease = LEASE_SECONDS.to_string();
    let a = Operator::start_behind(cp, port_a, url_port, &[("POD_NAME", "replica-a"), ("TOLLGATE_LEASE_DURATION_SECONDS", &lease)])?;
    let b = Operator::start_behind(cp, port_b, url_port, &[("POD_NAME", "replica-b"), ("TOLLGATE_LEASE_DURATION_SECONDS", &lease)])?;
    let ns = cp.create_namespace("ha")?;
    let path = cp.dir().join(format!("{ns}-workflows.json"));
    std::fs::write(
        &path,
        r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"two"},"spec":{"approvers":{"users":["approver-a","approver-b"]},"requiredApprovals":2}},
        {"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"short"},"spec":{"approvers":{"users":["approver-a"]},"timeoutSeconds":30}}]}"#,
    )?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", &ns, "-f", path.to_str().context("path")?])?;

    // 100 policy applies and 100 decisions, each on a new connection to the next replica (the
    // API server keeps its connections to a webhook; closing them makes it dial again).
    let (before_a, before_b) = (reviews(&a)?, reviews(&b)?);
    let mut failures = Vec::new();
    for i in 0..50 {
        let name = format!("r{i}");
        cp.create_request(&ns, &request(&name, "two", 0))?;
        for (k, user) in [User::ApproverA, User::ApproverB].into_iter().enumerate() {
            wait_until(Duration::from_secs(20), Duration::from_millis(50), || Ok((phase(cp, &ns, &name)? == "Pending").then_some(())))?;
            let d = serde_json::json!({"user": user.name(), "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"});
            // The first decision makes the list, the second appends to it (as kubectl approve does).
            let op = if k == 0 {
                serde_json::json!({"op": "add", "path": "/status/decisions", "value": [d]})
            } else {
                serde_json::json!({"op": "add", "path": "/status/decisions/-", "value": d})
            };
            let patch = serde_json::json!([op]).to_string();
            service.rotate();
            let out = cp.kubectl(user, ["patch", "ar", &name, "-n", &ns, "--subresource=status", "--type=json", "-p", &patch])?;
            if !out.status.success() {
                failures.push(format!("decision on {name}: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        for j in 0..2 {
            let policy = format!(
                r#"{{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{{"name":"p{j}"}},"spec":{{"tools":[{{"name":"t{i}","rules":[{{"action":"Deny","when":"args.n > {i}"}}]}}]}}}}"#
            );
            let file = cp.dir().join(format!("{ns}-p{i}-{j}.json"));
            std::fs::write(&file, policy)?;
            service.rotate();
            let out = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", file.to_str().context("path")?])?;
            if !out.status.success() {
                failures.push(format!("policy apply: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
    }
    assert!(failures.is_empty(), "{} of 200 webhook calls failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]);
    let served = (reviews(&a)? - before_a, reviews(&b)? - before_b);
    eprintln!("admission reviews served: replica-a {}, replica-b {}", served.0, served.1);
    assert!(served.0 >= 50 && served.1 >= 50, "both replicas serve: {served:?}");
    let leader = wait_until(Duration::from_secs(20), Duration::from_millis(100), || Ok(Some(holder(cp)?).filter(|h| !h.is_empty())))?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || Ok((phase(cp, &ns, "r49")? == "Approved").then_some(())))?;

    // A request that expires (30 s after it was made, 18 s ago) once the leader is gone.
    cp.create_request(&ns, &request("expiring", "short", 18))?;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || Ok((phase(cp, &ns, "expiring")? == "Pending").then_some(())))?;
    let expires: jiff::Timestamp = cp.kubectl_ok(User::Admin, ["get", "ar", "expiring", "-n", &ns, "-o", "jsonpath={.status.expiresAt}"])?.trim().parse()?;
    // The follower served webhooks all along but reconciled nothing: it has not led.
    let (dead, follower) = if leader == "replica-a" { (&a, &b) } else { (&b, &a) };
    assert!(reconciles(dead)? > 0, "the leader reconciled nothing");
    assert_eq!(reconciles(follower)?, 0, "the follower reconciled before it led");
    // The leader dies without a word (SIGKILL: no release of the Lease).
    let pid = dead.process.pid().context("leader pid")?;
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    let killed = Instant::now();
    let next = wait_until(Duration::from_secs(LEASE_SECONDS * 3), Duration::from_millis(100), || Ok(Some(holder(cp)?).filter(|h| *h != leader)))?;
    let took = killed.elapsed();
    eprintln!("{next} took over from {leader} in {took:?} (lease {LEASE_SECONDS}s)");
    assert!(took < Duration::from_secs(LEASE_SECONDS + 3), "failover took {took:?}");
    // The new leader expires the request on time, and the webhook still answers.
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || Ok((phase(cp, &ns, "expiring")? == "Expired").then_some(())))?;
    assert!(reconciles(follower)? > 0, "the new leader expired the request without a reconcile counted");
    let late = jiff::Timestamp::now().duration_since(expires);
    assert!(late < jiff::SignedDuration::from_secs(5), "expired {late:?} after its deadline");
    let out = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", cp.dir().join(format!("{ns}-p0-0.json")).to_str().context("path")?])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
