//! Approvals as Kubernetes objects (DESIGN §3.3) against the real API server: the operator's
//! phase machine, its validating webhook, and every forgery the webhook must refuse.

use anyhow::{Context, Result};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate_e2e::requests::Request;
use tollgate_e2e::{ControlPlane, Operator, User, wait_until};

fn operator() -> &'static Operator {
    static OP: OnceLock<Operator> = OnceLock::new();
    OP.get_or_init(|| match Operator::start(ControlPlane::shared()) {
        Ok(op) => op,
        Err(e) => panic!("starting the operator: {e:#}"),
    })
}

fn setup(prefix: &str) -> Result<(&'static ControlPlane, String)> {
    let cp = ControlPlane::shared();
    operator();
    let ns = cp.create_namespace(prefix)?;
    Ok((cp, ns))
}

fn apply(cp: &ControlPlane, user: User, ns: &str, json: &str) -> Result<std::process::Output> {
    cp.apply_output(user, ns, json)
}

fn workflow(cp: &ControlPlane, ns: &str, name: &str, spec: &str) -> Result<()> {
    let out = apply(
        cp,
        User::Admin,
        ns,
        &format!(r#"{{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{{"name":"{name}"}},"spec":{spec}}}"#),
    )?;
    anyhow::ensure!(out.status.success(), "workflow: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Creates a request as the sidecar would, `age` seconds old.
fn request(cp: &ControlPlane, ns: &str, name: &str, workflow: &str, age: i64) -> Result<()> {
    cp.create_request(ns, &Request::new(name, workflow).call("platform-tools", "deploy", serde_json::json!({"environment": "production"})).aged(age))
}

fn get(cp: &ControlPlane, ns: &str, name: &str, path: &str) -> Result<String> {
    Ok(cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", ns, "-o", &format!("jsonpath={{{path}}}")])?.trim().to_owned())
}

fn wait_for(cp: &ControlPlane, ns: &str, name: &str, path: &str, want: &str) -> Result<()> {
    let mut last = String::new();
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        last = get(cp, ns, name, path)?;
        Ok((last == want).then_some(()))
    })
    .with_context(|| format!("{name}: {path} is {last:?}, want {want:?}; operator log:\n{}", operator().log_tail()))
}

fn decision(user: &str, verdict: &str, reason: Option<&str>, via: &str) -> String {
    let reason = reason.map(|r| format!(r#","reason":"{r}""#)).unwrap_or_default();
    format!(r#"{{"user":"{user}","decision":"{verdict}","time":"{}","via":"{via}"{reason}}}"#, jiff::Timestamp::now())
}

/// Appends a decision as `as_user` (a JSON patch on the status subresource, what
/// `kubectl approve` does).
fn append(cp: &ControlPlane, as_user: User, ns: &str, name: &str, decision: &str) -> Result<std::process::Output> {
    let has_decisions = !get(cp, ns, name, ".status.decisions")?.is_empty();
    let patch = if has_decisions {
        format!(r#"[{{"op":"add","path":"/status/decisions/-","value":{decision}}}]"#)
    } else {
        format!(r#"[{{"op":"add","path":"/status/decisions","value":[{decision}]}}]"#)
    };
    cp.kubectl(as_user, ["patch", "ar", name, "-n", ns, "--subresource=status", "--type=json", "-p", &patch])
}

fn refused(out: &std::process::Output, want: &str) {
    assert!(!want.is_empty(), "a refusal is checked by what it says: any failure would do otherwise");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted, but expected a refusal containing {want:?}");
    assert!(stderr.contains(want), "expected {want:?} in:\n{stderr}");
}

fn accepted(out: &std::process::Output) {
    assert!(out.status.success(), "refused: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn quorum_of_two_approves_with_events() -> Result<()> {
    let (cp, ns) = setup("quorum")?;
    // admin is an approver who never votes below: after the end, its first vote is refused by
    // the webhook's rule, not by the list's one-entry-per-person schema.
    workflow(cp, &ns, "prod-deploy", r#"{"approvers":{"users":["approver-a","approver-b","admin"]},"requiredApprovals":2}"#)?;
    request(cp, &ns, "deploy-1", "prod-deploy", 0)?;
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Pending")?;
    assert_eq!(get(cp, &ns, "deploy-1", ".status.approvals")?, "0/2");
    assert!(!get(cp, &ns, "deploy-1", ".status.expiresAt")?.is_empty());

    // Real `kubectl approve`, through the webhook.
    let out = cp.kubectl_approve(User::ApproverA, &["deploy-1", "-n", &ns, "--reason", "looks fine", "--wait", "0"])?;
    accepted(&out);
    wait_for(cp, &ns, "deploy-1", ".status.approvals", "1/2")?;
    let out = cp.kubectl_approve(User::ApproverA, &["deploy-1", "-n", &ns, "--wait", "0"])?;
    assert!(!out.status.success(), "a second vote by the plugin was accepted");
    assert_eq!(get(cp, &ns, "deploy-1", ".status.phase")?, "Pending");
    accepted(&append(cp, User::ApproverB, &ns, "deploy-1", &decision("approver-b", "Approve", None, "kubectl"))?);
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Approved")?;
    assert_eq!(get(cp, &ns, "deploy-1", ".status.approvals")?, "2/2");
    assert!(!get(cp, &ns, "deploy-1", ".status.resolvedAt")?.is_empty());

    let events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "-o", "jsonpath={.items[*].reason}"])?;
    assert!(events.contains("Approved"), "events: {events}");
    // After the end, nothing more is taken.
    refused(
        &append(cp, User::Admin, &ns, "deploy-1", &decision("admin", "Deny", Some("too late"), "kubectl"))?,
        "request deploy-1 is already Approved; it no longer takes decisions",
    );
    assert_eq!(get(cp, &ns, "deploy-1", ".status.approvals")?, "2/2");
    Ok(())
}

#[test]
fn a_single_deny_vetoes() -> Result<()> {
    let (cp, ns) = setup("veto")?;
    workflow(cp, &ns, "prod-deploy", r#"{"approvers":{"users":["approver-a","approver-b","admin"]},"requiredApprovals":2}"#)?;
    request(cp, &ns, "deploy-1", "prod-deploy", 0)?;
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Pending")?;
    accepted(&append(cp, User::ApproverA, &ns, "deploy-1", &decision("approver-a", "Approve", None, "kubectl"))?);
    // A Deny written past `kubectl approve` (a raw patch) is held to its rule: it says why.
    refused(
        &append(cp, User::ApproverB, &ns, "deploy-1", &decision("approver-b", "Deny", Some("  "), "kubectl"))?,
        "a Deny must say why: give a reason (--reason)",
    );
    assert_eq!(get(cp, &ns, "deploy-1", ".status.phase")?, "Pending");
    accepted(&append(cp, User::ApproverB, &ns, "deploy-1", &decision("approver-b", "Deny", Some("freeze"), "kubectl"))?);
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Denied")?;
    // An approver who has not voted: the webhook refuses, the request stays denied.
    let after = append(cp, User::Admin, &ns, "deploy-1", &decision("admin", "Approve", None, "kubectl"))?;
    refused(&after, "request deploy-1 is already Denied; it no longer takes decisions");
    assert_eq!(get(cp, &ns, "deploy-1", ".status.phase")?, "Denied");
    Ok(())
}

#[test]
fn forgeries_are_refused_by_the_api_server() -> Result<()> {
    let (cp, ns) = setup("forgery")?;
    // approver-b has the approver role (RBAC) but is not an approver of this workflow.
    workflow(
        cp,
        &ns,
        "prod-deploy",
        r#"{"approvers":{"users":["approver-a","system:serviceaccount:NS:coder"]},"requiredApprovals":2}"#.replace("NS", &ns).as_str(),
    )?;
    request(cp, &ns, "deploy-1", "prod-deploy", 0)?;
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Pending")?;

    // The outsider has no role at all: RBAC refuses before the webhook is asked.
    refused(&append(cp, User::Outsider, &ns, "deploy-1", &decision("outsider", "Approve", None, "kubectl"))?, "forbidden");
    // approver-b may patch status, but is not an approver of prod-deploy.
    refused(
        &append(cp, User::ApproverB, &ns, "deploy-1", &decision("approver-b", "Approve", None, "kubectl"))?,
        "you (approver-b) are not an approver of workflow prod-deploy",
    );
    // approver-a writing approver-b's name.
    refused(&append(cp, User::ApproverA, &ns, "deploy-1", &decision("approver-b", "Approve", None, "kubectl"))?, "decide only in your own name");
    // A Slack decision not relayed by the gateway.
    refused(
        &append(cp, User::ApproverA, &ns, "deploy-1", &decision("slack:U123", "Approve", None, "slack"))?,
        "only the Tollgate gateway may record decisions made in Slack",
    );
    // An approver may not move the phase.
    refused(
        &cp.kubectl(
            User::ApproverA,
            ["patch", "ar", "deploy-1", "-n", &ns, "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Approved"}}"#],
        )?,
        "only the Tollgate operator may change status.phase",
    );

    accepted(&append(cp, User::ApproverA, &ns, "deploy-1", &decision("approver-a", "Approve", Some("ok"), "kubectl"))?);
    wait_for(cp, &ns, "deploy-1", ".status.approvals", "1/2")?;
    // Voting twice (the list-map keyed by user refuses it in the API server's own validation).
    refused(&append(cp, User::ApproverA, &ns, "deploy-1", &decision("approver-a", "Approve", None, "kubectl"))?, "Duplicate value");
    // Editing an earlier decision.
    refused(
        &cp.kubectl(
            User::ApproverA,
            [
                "patch",
                "ar",
                "deploy-1",
                "-n",
                &ns,
                "--subresource=status",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/status/decisions/0/decision","value":"Deny"}]"#,
            ],
        )?,
        "earlier decisions cannot be changed or removed",
    );
    // Removing one.
    refused(
        &cp.kubectl(
            User::ApproverA,
            ["patch", "ar", "deploy-1", "-n", &ns, "--subresource=status", "--type=json", "-p", r#"[{"op":"remove","path":"/status/decisions/0"}]"#],
        )?,
        "earlier decisions cannot be changed or removed",
    );

    // The agent's own service account: without the approver role RBAC refuses it; with it (and
    // even listed as an approver), the webhook still does.
    let agent = cp.service_account_kubeconfig(&ns, "coder")?;
    let agent_patch = |d: &str| -> Result<std::process::Output> {
        let patch = format!(r#"[{{"op":"add","path":"/status/decisions/-","value":{d}}}]"#);
        let out = std::process::Command::new("kubectl")
            .args(["--kubeconfig", agent.to_str().context("path")?, "patch", "ar", "deploy-1", "-n", &ns, "--subresource=status", "--type=json", "-p", &patch])
            .output()?;
        Ok(out)
    };
    let sa = format!("system:serviceaccount:{ns}:coder");
    refused(&agent_patch(&decision(&sa, "Approve", None, "kubectl"))?, "forbidden");
    cp.kubectl_ok(
        User::Admin,
        ["create", "rolebinding", "coder-approver", "-n", &ns, "--clusterrole=tollgate-approver", &format!("--serviceaccount={ns}:coder")],
    )?;
    let mut last = String::new();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let out = agent_patch(&decision(&sa, "Approve", None, "kubectl"))?;
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(!out.status.success(), "the agent approved its own request");
        Ok((!last.contains("forbidden")).then_some(()))
    })?;
    assert!(last.contains("is the agent's own service account and may not decide its own requests"), "{last}");
    assert_eq!(get(cp, &ns, "deploy-1", ".status.phase")?, "Pending");
    Ok(())
}

#[test]
fn expiry_and_decisions_after_it() -> Result<()> {
    let (cp, ns) = setup("expiry")?;
    workflow(cp, &ns, "prod-deploy", r#"{"approvers":{"users":["approver-a"]},"timeoutSeconds":30}"#)?;
    // Requested 28 s ago: expires in about 2 s.
    request(cp, &ns, "deploy-1", "prod-deploy", 28)?;
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Pending")?;
    wait_for(cp, &ns, "deploy-1", ".status.phase", "Expired")?;
    refused(
        &append(cp, User::ApproverA, &ns, "deploy-1", &decision("approver-a", "Approve", None, "kubectl"))?,
        "is already Expired; it no longer takes decisions",
    );
    Ok(())
}

#[test]
fn escalation_asks_further_approvers_once() -> Result<()> {
    let (cp, ns) = setup("escalation")?;
    workflow(
        cp,
        &ns,
        "prod-deploy",
        r#"{"approvers":{"users":["approver-a"]},"timeoutSeconds":60,
        "escalation":{"afterSeconds":30,"approvers":{"users":["approver-b"]}}}"#,
    )?;
    request(cp, &ns, "fresh", "prod-deploy", 0)?;
    request(cp, &ns, "stale", "prod-deploy", 31)?;
    wait_for(cp, &ns, "fresh", ".status.phase", "Pending")?;
    // Not escalated yet: approver-b is not an approver.
    refused(&append(cp, User::ApproverB, &ns, "fresh", &decision("approver-b", "Approve", None, "kubectl"))?, "not an approver of workflow prod-deploy");
    // Escalated: approver-b now is, and the deadline moved.
    let mut escalated = String::new();
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        escalated = get(cp, &ns, "stale", ".status.escalatedAt")?;
        Ok((!escalated.is_empty()).then_some(()))
    })?;
    let expires: jiff::Timestamp = get(cp, &ns, "stale", ".status.expiresAt")?.parse()?;
    assert!(expires > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(50), "deadline not extended: {expires}");
    let reason = get(cp, &ns, "stale", r#".status.conditions[?(@.type=="Resolved")].reason"#)?;
    assert_eq!(reason, "Escalated");
    accepted(&append(cp, User::ApproverB, &ns, "stale", &decision("approver-b", "Approve", None, "kubectl"))?);
    wait_for(cp, &ns, "stale", ".status.phase", "Approved")?;
    Ok(())
}

#[test]
fn invalid_cel_is_refused_at_apply_with_the_field_path() -> Result<()> {
    let (cp, ns) = setup("celcheck")?;
    let out = apply(
        cp,
        User::Admin,
        &ns,
        r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{"name":"bad"},
        "spec":{"tools":[{"name":"a","rules":[{"action":"Allow"}]},{"name":"deploy","rules":[{"action":"Deny"},{"action":"Deny","when":"args.env ==== 'prod'"}]}]}}"#,
    )?;
    refused(&out, r#"admission webhook "policies.tollgate.dev" denied the request: invalid policy: spec.tools[1].rules[1].when:"#);
    let out = apply(
        cp,
        User::Admin,
        &ns,
        r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ClusterToolPolicy","metadata":{"name":"bad-cluster"},
        "spec":{"tools":[{"name":"x","rules":[{"action":"Deny","when":"request.user == 'x'"}]}]}}"#,
    )?;
    refused(&out, "spec.tools[0].rules[0].when: undeclared reference to 'request'");
    // A good one is accepted and the operator reports it Ready with its rule count.
    let out = apply(
        cp,
        User::Admin,
        &ns,
        r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{"name":"good"},
        "spec":{"tools":[{"name":"deploy","rules":[{"action":"Deny","when":"args.env == 'prod'"},{"action":"Allow"}]}]}}"#,
    )?;
    accepted(&out);
    let mut last = String::new();
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        last = cp.kubectl_ok(
            User::Admin,
            ["get", "tp", "good", "-n", &ns, "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.rules} {.status.observedGeneration}"#],
        )?;
        Ok((last.trim() == "True 2 1").then_some(()))
    })
    .with_context(|| format!("policy status: {last:?}"))?;
    // Agents coming and going change the count at once (the periodic recount is minutes away).
    let matched = |want: &str| -> Result<()> {
        let mut last = String::new();
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            last = cp.kubectl_ok(User::Admin, ["get", "tp", "good", "-n", &ns, "-o", "jsonpath={.status.matchedAgents}"])?;
            Ok((last.trim() == want).then_some(()))
        })
        .with_context(|| format!("matchedAgents is {last:?}, not {want}"))
    };
    let agents_before = cp.kubectl_ok(User::Admin, ["get", "managedagents", "-n", &ns, "-o", "name"])?.lines().count();
    matched(&agents_before.to_string())?;
    let out = apply(
        cp,
        User::Admin,
        &ns,
        r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ManagedAgent","metadata":{"name":"late-agent"},
        "spec":{"selector":{"matchLabels":{"app":"late"}},"serviceAccountName":"late"}}"#,
    )?;
    accepted(&out);
    matched(&(agents_before + 1).to_string())?;
    cp.kubectl_ok(User::Admin, ["delete", "managedagent", "late-agent", "-n", &ns])?;
    matched(&agents_before.to_string())?;
    Ok(())
}

#[test]
fn requests_are_bound_to_the_agents_identity() -> Result<()> {
    let (cp, ns) = setup("identity")?;
    workflow(cp, &ns, "ops", r#"{"approvers":{"users":["approver-a"]}}"#)?;
    let body = |name: &str, agent: &str, sa: &str, owners: Option<serde_json::Value>| {
        let r = Request::new(name, "ops").agent(agent, sa);
        match owners {
            Some(o) => r.meta("ownerReferences", o),
            None => r,
        }
        .to_string()
    };
    let create = |who: &str, json: &str| -> Result<std::process::Output> {
        let path = cp.dir().join(format!("{ns}-{}.json", tollgate_e2e::random_hex(4)?));
        std::fs::write(&path, json)?;
        let file = path.to_str().context("path")?;
        match who {
            "admin" => cp.kubectl(User::Admin, ["create", "-n", &ns, "-f", file]),
            agent => cp.kubectl_as_agent(&ns, agent, agent, &["create", "-f", file]),
        }
    };
    // The agents' own sidecars create their own requests.
    accepted(&create("coder", &body("mine", "coder", "coder", None))?);
    accepted(&create("other", &body("theirs", "other", "other", None))?);
    // Nobody else creates one in an agent's name, its own service account only as itself.
    refused(&create("admin", &body("forged-1", "coder", "coder", None))?, "only the service account of ManagedAgent coder (system:serviceaccount:");
    refused(&create("other", &body("forged-2", "coder", "coder", None))?, "not system:serviceaccount:");
    refused(&create("coder", &body("forged-3", "coder", "other", None))?, "spec.serviceAccount must be coder");
    refused(&create("coder", &body("forged-4", "ghost", "coder", None))?, "ManagedAgent \"ghost\" does not exist");
    let owned = serde_json::json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "00000000-0000-0000-0000-000000000001"}]);
    refused(&create("coder", &body("forged-5", "coder", "coder", Some(owned)))?, "may not have owner references");
    // Changes: another agent cannot touch it; its own agent may only ask for its cancellation.
    let annotate = |who: &str, patch: &str| cp.kubectl_as_agent(&ns, who, who, &["patch", "ar", "mine", "--type=merge", "-p", patch]);
    let cancel = r#"{"metadata":{"annotations":{"tollgate.dev/cancel":"the client went away"}}}"#;
    refused(&annotate("other", cancel)?, "may not change approval requests of agent coder");
    refused(&annotate("coder", r#"{"metadata":{"labels":{"tollgate.dev/agent":"admin"}}}"#)?, "metadata.labels cannot change");
    accepted(&annotate("coder", cancel)?);
    wait_for(cp, &ns, "mine", ".status.phase", "Cancelled")?;
    Ok(())
}
