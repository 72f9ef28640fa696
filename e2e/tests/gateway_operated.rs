//! The operator runs a `Gateway`: its Deployment, Service, service account (bound to the gateway
//! role while the Gateway exists) and ledger claim, with `status.url`, `readyReplicas` and
//! `Ready`; and the pod its Deployment describes, run by the e2e kubelet exactly as stored,
//! serves the official SDKs. Gateways outside the operator's namespace, a second one that would
//! run replicas beside the one serving, or SQLite with more than one replica, are refused with a
//! reason.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, FakeProvider, OPENAI_KEY, chart_gateway_steps_aside, get, model_client, setup};
use tollgate_e2e::kubelet::{Programs, run_pod};
use tollgate_e2e::{ControlPlane, User, binary, wait_until};

const SYSTEM: &str = "tollgate-system";

fn gateway_status(cp: &ControlPlane, ns: &str, name: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        last = get(cp, ns, "gateway", name)?;
        Ok(done(&last["status"]).then(|| last["status"].clone()))
    })
    .with_context(|| format!("gateway {ns}/{name}: {last}"))
}

fn ready(status: &Value) -> Value {
    status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or_default()
}

fn binding_subjects(cp: &ControlPlane) -> Result<Vec<String>> {
    let b: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "clusterrolebinding", "tollgate-gateways", "-o", "json"])?)?;
    Ok(b["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{}/{}", s["namespace"].as_str().unwrap_or(""), s["name"].as_str().unwrap_or("")))
        .collect())
}

#[test]
fn the_operator_runs_a_gateway_whose_pod_serves_the_sdks() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let (ns, key) = setup(cp, &fake, "gateway-operated", "")?;
    chart_gateway_steps_aside(cp)?;

    // SQLite with two replicas is refused by the API server, with the reason.
    let two = "apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {name: edge}\nspec: {replicas: 2}\n";
    let file = cp.dir().join("gateway-two-replicas.yaml");
    std::fs::write(&file, two)?;
    let refused = cp.kubectl(User::Admin, ["apply", "-n", SYSTEM, "-f", file.to_str().context("path")?])?;
    ensure!(!refused.status.success(), "SQLite with two replicas was accepted");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("SQLite (no spec.database) runs one replica"), "{said}");

    cp.apply(User::Admin, SYSTEM, "apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {name: edge}\nspec: {replicas: 1, storage: {size: 2Gi}}\n")?;
    // A Gateway at zero replicas runs no ledger: it competes with none, and gets its objects.
    cp.apply(User::Admin, SYSTEM, &gateway_yaml("backup", 0))?;
    let status = gateway_status(cp, SYSTEM, "edge", |s| s["url"].is_string())?;
    assert_eq!(status["url"], "http://edge-gateway.tollgate-system.svc:8080");
    assert_eq!((status["readyReplicas"].as_i64(), ready(&status)["reason"].as_str()), (Some(0), Some("NoReplicaReady")), "{status}");
    for kind in ["serviceaccount", "service", "deployment"] {
        let o = get(cp, SYSTEM, kind, "edge-gateway")?;
        assert_eq!(o["metadata"]["ownerReferences"][0]["kind"], "Gateway", "{kind} is owned by the Gateway: {o}");
    }
    let claim = get(cp, SYSTEM, "persistentvolumeclaim", "edge-gateway-ledger")?;
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert!(claim["metadata"]["ownerReferences"].is_null(), "the ledger's claim outlives its Gateway: {claim}");
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok(binding_subjects(cp)?.contains(&format!("{SYSTEM}/edge-gateway")).then_some(())))
        .context("the gateway's service account is bound to the gateway role")?;

    // The pod the Deployment describes, created as its ReplicaSet would and run as stored.
    let deployment = get(cp, SYSTEM, "deployment", "edge-gateway")?;
    let template = &deployment["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "edge-gateway-0", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    cp.apply(User::Admin, SYSTEM, &pod.to_string())?;
    let programs = Programs::default().with("/usr/local/bin/tollgate-gateway", binary("tollgate-gateway", "tollgate-gateway")?);
    let running = run_pod(cp, SYSTEM, "edge-gateway-0", &programs, &[(IpAddr::V4(Ipv4Addr::LOCALHOST), fake.port)])?;
    let admin = running.net.expose(8081)?;
    running.container("gateway")?.wait_http_ok("the gateway pod", admin, "/readyz")?;
    let port = running.net.expose(8080)?;
    let url = format!("http://127.0.0.1:{port}");
    let env = vec![
        ("OPENAI_BASE_URL".to_owned(), format!("{url}/openai/v1")),
        ("OPENAI_API_KEY".to_owned(), key.clone()),
        ("ANTHROPIC_BASE_URL".to_owned(), format!("{url}/anthropic")),
        ("ANTHROPIC_API_KEY".to_owned(), key.clone()),
    ];
    let steps = model_client(&env, &json!([{"op": "chat", "model": "fast"}, {"op": "messages", "model": "sonnet", "stream": true}]))?;
    for s in &steps {
        ensure!(s["ok"] == true, "{s}\n{}", running.log("gateway")?);
    }
    // Its ledger is on the claim's volume.
    let ledger = cp.dir().join(format!("pvc-{SYSTEM}-edge-gateway-ledger/ledger.db"));
    ensure!(ledger.is_file(), "no ledger at {}", ledger.display());
    // As the Deployment controller would, once the pod is ready.
    let ready_status =
        json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": deployment["metadata"]["generation"]}});
    cp.kubectl_ok(User::Admin, ["patch", "deployment", "edge-gateway", "-n", SYSTEM, "--subresource=status", "--type=merge", "-p", &ready_status.to_string()])?;
    let status = gateway_status(cp, SYSTEM, "edge", |s| s["readyReplicas"] == 1)?;
    assert_eq!((ready(&status)["status"].as_str(), ready(&status)["reason"].as_str()), (Some("True"), Some("Available")), "{status}");
    let table = cp.kubectl_ok(User::Admin, ["get", "gateways", "-n", SYSTEM, "edge"])?;
    assert!(table.contains("True") && table.contains("Available") && table.contains("http://edge-gateway.tollgate-system.svc:8080"), "{table}");

    // A second Gateway would keep a ledger of its own and count every budget again: it is told
    // which one serves, and runs nothing.
    cp.apply(User::Admin, SYSTEM, &gateway_yaml("second", 1))?;
    let status = gateway_status(cp, SYSTEM, "second", |s| !ready(s).is_null())?;
    assert_eq!(ready(&status)["reason"], "AnotherGatewayServes", "{status}");
    let said = ready(&status)["message"].as_str().unwrap_or_default().to_owned();
    assert!(said.starts_with("Gateway edge already serves this cluster"), "{said}");
    assert!(status["url"].is_null(), "{status}");
    ensure!(!cp.kubectl(User::Admin, ["get", "deployment", "second-gateway", "-n", SYSTEM])?.status.success(), "a second serving Gateway got a Deployment");
    ensure!(!binding_subjects(cp)?.contains(&format!("{SYSTEM}/second-gateway")), "a refused gateway's account was bound");
    let table = cp.kubectl_ok(User::Admin, ["get", "gateways", "-n", SYSTEM, "second"])?;
    assert!(table.contains("False") && table.contains("AnotherGatewayServes"), "{table}");

    // A Gateway elsewhere is told why it gets nothing.
    cp.apply(User::Admin, &ns, "apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {name: rogue}\nspec: {replicas: 1}\n")?;
    let status = gateway_status(cp, &ns, "rogue", |s| !ready(s).is_null())?;
    assert_eq!(ready(&status)["reason"], "OutsideTollgateNamespace", "{status}");
    ensure!(
        !cp.kubectl(User::Admin, ["get", "deployment", "rogue-gateway", "-n", &ns])?.status.success(),
        "a Deployment was made outside the operator's namespace"
    );
    ensure!(!binding_subjects(cp)?.iter().any(|s| s.contains("rogue")), "its account was bound");

    // Deleted: its account loses the gateway role at once.
    cp.kubectl_ok(User::Admin, ["delete", "gateway", "edge", "-n", SYSTEM])?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok((!binding_subjects(cp)?.contains(&format!("{SYSTEM}/edge-gateway"))).then_some(())))
        .context("a deleted gateway's account kept the gateway role")?;
    drop(running);

    // The next in line serves at once.
    let status = gateway_status(cp, SYSTEM, "second", |s| s["url"].is_string())?;
    assert_eq!(ready(&status)["reason"], "NoReplicaReady", "{status}");
    assert_eq!(get(cp, SYSTEM, "deployment", "second-gateway")?["spec"]["replicas"], 1);
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok(binding_subjects(cp)?.contains(&format!("{SYSTEM}/second-gateway")).then_some(())))
        .context("the gateway that took over is not bound to the gateway role")?;

    // An older Gateway scaled up does not take over: the one serving goes on.
    cp.apply(User::Admin, SYSTEM, &gateway_yaml("backup", 1))?;
    let status = gateway_status(cp, SYSTEM, "backup", |s| ready(s)["reason"] == "AnotherGatewayServes")?;
    assert!(ready(&status)["message"].as_str().unwrap_or_default().starts_with("Gateway second already serves"), "{status}");
    assert_eq!(get(cp, SYSTEM, "deployment", "backup-gateway")?["spec"]["replicas"], 0, "made at zero replicas, left there");
    let status = get(cp, SYSTEM, "gateway", "second")?["status"].clone();
    assert_eq!(ready(&status)["reason"], "NoReplicaReady", "{status}");
    assert_eq!(get(cp, SYSTEM, "deployment", "second-gateway")?["spec"]["replicas"], 1);

    // Deleted while a finalizer holds it, the serving Gateway stops at once and the next serves:
    // its Deployment goes to zero replicas and its account loses the role.
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    cp.kubectl_ok(User::Admin, ["patch", "gateway", "second", "-n", SYSTEM, "--type=merge", "-p", hold])?;
    cp.kubectl_ok(User::Admin, ["delete", "gateway", "second", "-n", SYSTEM, "--wait=false"])?;
    let status = gateway_status(cp, SYSTEM, "second", |s| ready(s)["reason"] == "Deleting")?;
    assert!(status["url"].is_null(), "{status}");
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok((get(cp, SYSTEM, "deployment", "second-gateway")?["spec"]["replicas"] == 0).then_some(()))
    })
    .context("a deleting gateway's Deployment kept its replicas")?;
    let status = gateway_status(cp, SYSTEM, "backup", |s| s["url"].is_string())?;
    assert_eq!(ready(&status)["reason"], "NoReplicaReady", "{status}");
    assert_eq!(get(cp, SYSTEM, "deployment", "backup-gateway")?["spec"]["replicas"], 1);
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let subjects = binding_subjects(cp)?;
        Ok((subjects.contains(&format!("{SYSTEM}/backup-gateway")) && !subjects.contains(&format!("{SYSTEM}/second-gateway"))).then_some(()))
    })
    .context("the gateway role follows the serving gateway")?;
    cp.kubectl_ok(User::Admin, ["patch", "gateway", "second", "-n", SYSTEM, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#])?;
    cp.kubectl_ok(User::Admin, ["delete", "gateway", "backup", "-n", SYSTEM])?;
    Ok(())
}

fn gateway_yaml(name: &str, replicas: u32) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec: {{replicas: {replicas}}}\n")
}
