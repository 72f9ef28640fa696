//! The chart (DESIGN §3.6), with real Helm built from its Go module: it lints, renders for the
//! default values and every example values file, refuses values its schema forbids, and what it
//! renders is accepted by the real API server. The operator of every other e2e test runs under the
//! RBAC it installs (`ControlPlane::install_tollgate_system`); here that RBAC is held to what the
//! operator needs.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::process::Command;
use tollgate_e2e::{ControlPlane, User, chart_values, helm, render_chart};

fn chart() -> String {
    format!("{}/../charts/tollgate", env!("CARGO_MANIFEST_DIR"))
}

const EXAMPLES: [&str; 3] = ["single-replica-values.yaml", "cert-manager-values.yaml", "out-of-cluster-values.yaml"];

/// The documents of a rendered chart, as JSON values.
fn documents(rendered: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in rendered.split("\n---\n") {
        let v: Value = serde_yaml::from_str(doc).with_context(|| format!("a rendered document: {doc}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

#[test]
fn the_chart_lints_with_real_helm() -> Result<()> {
    let mut runs = vec![vec![]];
    runs.extend(EXAMPLES.iter().map(|f| vec!["-f".to_owned(), chart_values(f).unwrap_or_default()]));
    for extra in runs {
        let out = Command::new(helm()?).args(["lint", "--strict", &chart()]).args(&extra).output()?;
        ensure!(out.status.success(), "helm lint {extra:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn the_default_install_is_safe_and_highly_available() -> Result<()> {
    let docs = documents(&render_chart(&["--namespace", "tollgate-system"])?)?;
    let deploy = find(&docs, "Deployment").context("a Deployment")?;
    assert_eq!(deploy["spec"]["replicas"], 2, "two replicas by default");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!((&sc["readOnlyRootFilesystem"], &sc["allowPrivilegeEscalation"]), (&Value::Bool(true), &Value::Bool(false)), "{sc}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["requests"].is_object(), "{container}");
    assert!(find(&docs, "PodDisruptionBudget").is_some(), "a PodDisruptionBudget with two replicas");
    assert!(find(&docs, "Service").is_some());
    // The chart's Gateway: one replica on SQLite whatever `gateway.replicas` asks above it, and
    // none when it asks for none (it steps aside for another: one Gateway serves a cluster).
    assert_eq!(find(&docs, "Gateway").context("the chart's Gateway")?["spec"]["replicas"], 1);
    let stepped_aside = documents(&render_chart(&["--set", "gateway.replicas=0"])?)?;
    assert_eq!(find(&stepped_aside, "Gateway").context("the chart's Gateway")?["spec"]["replicas"], 0);

    let vwc = find(&docs, "ValidatingWebhookConfiguration").context("the webhook configuration comes with the chart")?;
    let webhooks = vwc["webhooks"].as_array().context("webhooks")?;
    let names: Vec<&str> = webhooks.iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["approvals.tollgate.dev", "requests.tollgate.dev", "policies.tollgate.dev", "references.tollgate.dev", "pods.tollgate.dev"]);
    // Agent pods are reviewed after admission where injection is on, edits and debuggers alike.
    let pods = &webhooks[4];
    assert_eq!(pods["namespaceSelector"]["matchLabels"]["tollgate.dev/injection"], "enabled", "{pods}");
    assert_eq!(pods["rules"][0]["resources"], serde_json::json!(["pods", "pods/ephemeralcontainers"]), "{pods}");
    for w in webhooks {
        assert_eq!(w["failurePolicy"], "Fail", "{w}");
        assert!(w["timeoutSeconds"].as_u64().is_some_and(|t| t <= 5), "{w}");
        let excluded = &w["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(excluded["values"], serde_json::json!(["tollgate-system", "kube-system"]), "{w}");
        assert_eq!(w["clientConfig"]["service"]["name"], "tollgate-webhook", "{w}");
    }

    let mwc = find(&docs, "MutatingWebhookConfiguration").context("the injection webhook comes with the chart")?;
    let inject = &mwc["webhooks"][0];
    assert_eq!((inject["failurePolicy"].as_str(), inject["clientConfig"]["service"]["path"].as_str()), (Some("Fail"), Some("/mutate/pods")), "{inject}");
    assert_eq!(inject["namespaceSelector"]["matchLabels"]["tollgate.dev/injection"], "enabled", "{inject}");
    assert!(inject["timeoutSeconds"].as_u64().is_some_and(|t| t <= 5), "{inject}");
    let env = container["env"].as_array().context("env")?;
    assert!(env.iter().any(|e| e["name"] == "TOLLGATE_SIDECAR_IMAGE" && e["value"] == "ghcr.io/tollgate-dev/tollgate:0.1.0"), "{env:?}");
    assert!(env.iter().all(|e| !e["name"].as_str().unwrap_or_default().starts_with("OTEL_")), "traces are off by default: {env:?}");

    // Tracing: the operator gets the standard variables (and passes them on to its sidecars and
    // gateways: core's injection and gateway objects).
    let traced = documents(&render_chart(&[
        "--set",
        "tracing.endpoint=http://collector.observability:4318",
        "--set",
        "tracing.sampler=parentbased_traceidratio",
        "--set",
        "tracing.samplerArg=0.5",
    ])?)?;
    let env = find(&traced, "Deployment").context("a Deployment")?["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let otel: Vec<(String, String)> = env
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .filter(|(n, _)| n.starts_with("OTEL_"))
        .collect();
    let want = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.observability:4318"),
        ("OTEL_SERVICE_NAME", "tollgate-operator"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ];
    assert_eq!(otel, want.map(|(k, v)| (k.to_owned(), v.to_owned())), "{env}");

    // One replica: no disruption budget to block a drain. cert-manager: a Certificate and the CA
    // injected by annotation.
    let single = documents(&render_chart(&["-f", &chart_values("single-replica-values.yaml")?])?)?;
    assert!(find(&single, "PodDisruptionBudget").is_none());
    let cm = documents(&render_chart(&["--namespace", "tollgate-system", "-f", &chart_values("cert-manager-values.yaml")?])?)?;
    assert_eq!(find(&cm, "Certificate").context("a Certificate")?["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let annotated = &find(&cm, "ValidatingWebhookConfiguration").context("vwc")?["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
    assert_eq!(annotated, "tollgate-system/tollgate-webhook-tls");
    Ok(())
}

#[test]
fn values_the_schema_forbids_are_refused_with_the_reason() -> Result<()> {
    for (set, says) in [
        ("webhook.timeoutSeconds=10", "timeoutSeconds"),
        ("operator.replicas=0", "replicas"),
        ("clusterDefaultAction=Maybe", "clusterDefaultAction"),
        ("webhook.url=http://insecure.example", "url"),
        ("operatr.replicas=2", "operatr"),
        ("tracing.endpoint=collector:4318", "endpoint"),
        ("tracing.sampler=sometimes", "sampler"),
    ] {
        let out = Command::new(helm()?).args(["template", "tollgate", &chart(), "--set", set]).output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(says), "--set {set}: {err}");
    }
    Ok(())
}

#[test]
fn every_rendering_is_accepted_by_the_api_server() -> Result<()> {
    let cp = ControlPlane::shared();
    cp.kubectl_ok(User::Admin, ["create", "namespace", "tollgate-render"])?;
    let mut runs = vec![vec![]];
    // cert-manager's kinds are not installed here: its rendering is checked without them.
    runs.extend(EXAMPLES.iter().filter(|f| !f.starts_with("cert-manager")).map(|f| vec!["-f".to_owned(), chart_values(f).unwrap_or_default()]));
    for extra in runs {
        let mut args = vec!["--namespace", "tollgate-render"];
        args.extend(extra.iter().map(String::as_str));
        let rendered = render_chart(&args)?;
        let path = cp.dir().join("rendered.yaml");
        std::fs::write(&path, &rendered)?;
        let out = cp.kubectl(User::Admin, ["apply", "--server-side", "--dry-run=server", "-f", path.to_str().context("path")?])?;
        ensure!(out.status.success(), "the API server refused the chart rendered with {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn the_operator_runs_under_the_charts_rbac_and_no_more() -> Result<()> {
    let cp = ControlPlane::shared();
    cp.install_tollgate_system()?;
    let sa = "system:serviceaccount:tollgate-system:tollgate-operator";
    let can = |args: &[&str]| -> Result<bool> {
        let mut all = vec!["auth", "can-i", "--as", sa];
        all.extend_from_slice(args);
        let out = cp.kubectl(User::Admin, all)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    for needed in [
        &["watch", "approvalrequests.tollgate.dev", "-A"][..],
        &["patch", "approvalrequests.tollgate.dev", "--subresource=status", "-n", "team-a"],
        &["update", "leases.coordination.k8s.io", "-n", "tollgate-system"],
        &["create", "secrets", "-n", "tollgate-system"],
        &["patch", "validatingwebhookconfigurations/tollgate"],
        &["patch", "mutatingwebhookconfigurations/tollgate"],
        &["list", "managedagents.tollgate.dev", "-n", "team-a"],
        &["create", "events", "-n", "team-a"],
        // Discovery reads the Secret an MCPServer names, by name; agents' keys are minted.
        &["get", "secrets", "-n", "team-a"],
        &["create", "secrets", "-n", "team-a"],
    ] {
        assert!(can(needed)?, "the operator needs: {needed:?}");
    }
    for refused in [
        &["list", "secrets", "-n", "team-a"][..],
        &["watch", "secrets", "-A"],
        &["delete", "secrets", "-n", "team-a"],
        &["patch", "validatingwebhookconfigurations/someone-elses"],
        &["patch", "mutatingwebhookconfigurations/someone-elses"],
        &["update", "approvalrequests.tollgate.dev", "-n", "team-a"],
        &["create", "pods", "-n", "team-a"],
    ] {
        assert!(!can(refused)?, "the operator must not: {refused:?}");
    }
    // And it works under it: a webhook review served, a bad policy refused with the reason.
    let _operator = tollgate_e2e::Operator::start(cp)?;
    let ns = cp.create_namespace("helm-rbac")?;
    let bad = r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{"name":"bad"},"spec":{"tools":[{"name":"x","rules":[{"action":"Deny","when":"args.("}]}]}}"#;
    let path = cp.dir().join("bad-policy.json");
    std::fs::write(&path, bad)?;
    let out = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", path.to_str().context("path")?])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("denied the request"), "{err}");
    Ok(())
}
