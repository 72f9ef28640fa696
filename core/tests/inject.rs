//! The injection patch builder (`tollgate_core::k8s::inject`) against golden files: the pod as
//! submitted (with the token volume the ServiceAccount admission plugin adds before any webhook)
//! and the pod as it must run. `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-core --test
//! inject` rewrites them; review the diff.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::path::PathBuf;
use tollgate_api::{ManagedAgentSpec, McpServerSpec};
use tollgate_core::k8s::inject::{Candidate, PodReview, Settings, mounts, review};

fn settings() -> Settings {
    Settings {
        image: "ghcr.io/tollgate-dev/tollgate:0.1.0".into(),
        listen_port: 15001,
        admin_port: 15021,
        resources: serde_json::from_value(json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})).ok(),
        cluster_default: "Allow".into(),
        redirect_port: 15006,
        exclude_cidrs: vec!["10.96.0.0/12".into()],
        exclude_ports: vec![53],
        gateway_url: Some("http://tollgate-gateway.tollgate-system.svc:8080".into()),
        gateway_ca: None,
        vault: None,
        tracing: None,
    }
}

fn agent(selector: Value, service_account: &str, servers: &[&str]) -> ManagedAgentSpec {
    serde_json::from_value(json!({"selector": selector, "serviceAccountName": service_account, "mcpServers": servers})).unwrap()
}

fn pod(labels: Value, service_account: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "coder-7f9c", "namespace": "team-a", "labels": labels, "annotations": annotations},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{
                "name": "agent", "image": "python:3.12",
                "env": [{"name": "MODE", "value": "work"}],
                "volumeMounts": [
                    {"name": "work", "mountPath": "/work"},
                    {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "kube-api-access-x1", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
            ]
        }
    }))
    .unwrap()
}

fn golden(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("TOLLGATE_UPDATE_GOLDEN").is_some() {
        // Under CI the goldens are checked, never rewritten: an updating run could not fail.
        assert!(std::env::var("CI").as_deref() != Ok("true"), "TOLLGATE_UPDATE_GOLDEN is refused under CI=true: update the goldens locally and commit them");
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (TOLLGATE_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, want, "{} differs (TOLLGATE_UPDATE_GOLDEN=1 rewrites it; review the diff)", path.display());
}

#[test]
fn an_agent_pod_gets_the_sidecar_and_loses_the_token() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &["github", "docs-*"]);
    let servers: Vec<(&str, McpServerSpec)> = vec![
        ("github", serde_json::from_value(json!({"url": "https://mcp.example/github", "headers": [{"name": "Authorization", "prefix": "Bearer ", "secretKeyRef": {"name": "github-token", "key": "token"}}]})).unwrap()),
        ("docs-wiki", serde_json::from_value(json!({"url": "http://wiki/mcp", "headers": [{"name": "X-Key", "secretKeyRef": {"name": "wiki", "key": "k"}}, {"name": "X-Other", "secretKeyRef": {"name": "github-token", "key": "other"}}]})).unwrap()),
        ("payroll", serde_json::from_value(json!({"url": "http://payroll/mcp", "headers": [{"name": "X-Key", "secretKeyRef": {"name": "payroll-key", "key": "k"}}]})).unwrap()),
    ];
    let secrets = mounts(&coder, servers.iter().map(|(n, s)| (*n, s)));
    assert_eq!(secrets.secrets, ["github-token", "wiki"], "only the servers the agent may use, each Secret once");
    assert!(secrets.config_maps.is_empty());
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: secrets }];
    let submitted = pod(json!({"app": "coder"}), "coder", json!({}));
    let PodReview::Inject { agent, pod: injected } = review(&submitted, &candidates, &settings()) else { panic!("the agent's pod is injected") };
    assert_eq!(agent, "coder");
    golden("inject-agent-pod.json", &serde_json::to_value(&injected).unwrap());
    // Injecting twice changes nothing.
    assert_eq!(review(&injected, &candidates, &settings()), PodReview::Inject { agent: "coder".into(), pod: injected.clone() });
    // A pod that only claims to be injected gets the real sidecar, not the one it brought.
    let mut claimed = submitted.clone();
    claimed.metadata.annotations = Some([("tollgate.dev/injected".to_owned(), "coder".to_owned())].into());
    claimed.spec.as_mut().unwrap().init_containers = serde_json::from_value(json!([{"name": "tollgate-sidecar", "image": "evil:1"}])).unwrap();
    assert_eq!(review(&claimed, &candidates, &settings()), PodReview::Inject { agent: "coder".into(), pod: injected.clone() });
}

#[test]
fn pods_that_are_not_one_agent_under_its_identity_are_not_injected() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &["*"]);
    let any_app = agent(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}), "coder", &["*"]);
    let one = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let two =
        [Candidate { name: "coder", spec: &coder, mounts: Default::default() }, Candidate { name: "any-app", spec: &any_app, mounts: Default::default() }];
    let s = settings();
    assert_eq!(review(&pod(json!({"app": "web"}), "web", json!({})), &one, &s), PodReview::NotAnAgent);
    // The agent's identity in a pod its selector does not match, or that opts out: refused.
    let PodReview::Refused(why) = review(&pod(json!({"app": "web"}), "coder", json!({})), &one, &s) else { panic!("the agent's account, unmatched") };
    assert!(why.contains("identity of ManagedAgent coder") && why.contains("matches no agent's selector"), "{why}");
    let PodReview::Refused(why) = review(&pod(json!({"app": "coder"}), "coder", json!({"tollgate.dev/inject": "false"})), &one, &s) else {
        panic!("opted out as the agent")
    };
    assert!(why.contains("only a pod that does not run as an agent may opt out"), "{why}");
    let PodReview::Refused(why) = review(&pod(json!({"app": "coder"}), "coder", json!({})), &two, &s) else { panic!("two agents") };
    assert!(why.contains("coder, any-app"), "{why}");
    let PodReview::Refused(why) = review(&pod(json!({"app": "coder"}), "deployer", json!({})), &one, &s) else { panic!("another identity") };
    assert!(why.contains("\"deployer\"") && why.contains("\"coder\""), "{why}");
    let PodReview::Refused(why) = review(&pod(json!({"app": "coder"}), "", json!({})), &one, &s) else { panic!("the default account") };
    assert!(why.contains("\"default\""), "{why}");
    assert_eq!(review(&pod(json!({"app": "coder"}), "web", json!({"tollgate.dev/inject": "false"})), &one, &s), PodReview::OptedOut { agent: "coder".into() });
}

#[test]
fn a_transparent_agent_pod_is_redirected_first_and_its_ca_bundles_are_mounted_into_the_sidecar() {
    let coder: ManagedAgentSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "coder"}}, "serviceAccountName": "coder", "mcpServers": ["*"],
        "injection": {"transparent": true, "otherDestinations": "Refuse"}
    }))
    .unwrap();
    let servers: Vec<(&str, McpServerSpec)> = vec![
        (
            "internal",
            serde_json::from_value(json!({"url": "https://mcp.corp/mcp", "tls": {"caBundle": {"configMapKeyRef": {"name": "corp-ca", "key": "ca.crt"}}}}))
                .unwrap(),
        ),
        (
            "vendor",
            serde_json::from_value(json!({"url": "https://vendor/mcp", "tls": {"caBundle": {"secretKeyRef": {"name": "vendor-ca", "key": "ca.pem"}}}}))
                .unwrap(),
        ),
    ];
    let m = mounts(&coder, servers.iter().map(|(n, s)| (*n, s)));
    assert_eq!((m.secrets.as_slice(), m.config_maps.as_slice()), (&["vendor-ca".to_owned()][..], &["corp-ca".to_owned()][..]));
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: m }];
    let PodReview::Inject { pod: injected, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &settings()) else {
        panic!("injected")
    };
    let spec = injected.spec.as_ref().unwrap();
    let init: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, ["tollgate-redirect", "tollgate-sidecar"], "the redirect is installed before anything else runs");
    golden("inject-transparent-pod.json", &serde_json::to_value(&injected).unwrap());
}

#[test]
fn an_agent_that_opts_in_keeps_its_service_account_token() {
    let coder: ManagedAgentSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "coder"}}, "serviceAccountName": "coder", "injection": {"keepServiceAccountToken": true}
    }))
    .unwrap();
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let PodReview::Inject { pod: injected, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &settings()) else {
        panic!("injected")
    };
    let spec = injected.spec.as_ref().unwrap();
    // No resources of its own: the chart's.
    assert_eq!(spec.init_containers.as_ref().unwrap()[0].resources, settings().resources);
    assert_ne!(spec.automount_service_account_token, Some(false));
    let app = &spec.containers[0];
    assert!(app.volume_mounts.iter().flatten().any(|m| m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"), "the app keeps its token");
    assert!(spec.volumes.iter().flatten().any(|v| v.name == "kube-api-access-x1"));
}

#[test]
fn a_pod_that_could_get_around_its_sidecar_is_refused_saying_how() {
    let plain = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &["*"]);
    let transparent: ManagedAgentSpec =
        serde_json::from_value(json!({"selector": {"matchLabels": {"app": "coder"}}, "serviceAccountName": "coder", "injection": {"transparent": true}}))
            .unwrap();
    let with = |f: &dyn Fn(&mut k8s_openapi::api::core::v1::PodSpec)| {
        let mut p = pod(json!({"app": "coder"}), "coder", json!({}));
        f(p.spec.as_mut().unwrap());
        p
    };
    let refused = |spec: &ManagedAgentSpec, p: &Pod| match review(p, &[Candidate { name: "coder", spec, mounts: Default::default() }], &settings()) {
        PodReview::Refused(why) => Some(why),
        _ => None,
    };
    let host = with(&|s| s.host_network = Some(true));
    assert!(refused(&plain, &host).unwrap().contains("host's network"));
    // Whatever the mode, no other container may see the sidecar's processes.
    let shared = with(&|s| s.share_process_namespace = Some(true));
    assert!(refused(&plain, &shared).unwrap().contains("shareProcessNamespace"));
    let sc = |v: Value| -> Option<k8s_openapi::api::core::v1::SecurityContext> { serde_json::from_value(v).ok() };
    let cases: Vec<(Pod, &str)> = vec![
        (with(&|s| s.containers[0].security_context = sc(json!({"runAsUser": 1337}))), "runs as UID 1337"),
        (with(&|s| s.security_context = serde_json::from_value(json!({"runAsUser": 1337})).ok()), "runs as UID 1337"),
        (with(&|s| s.containers[0].security_context = sc(json!({"privileged": true}))), "is privileged"),
        (with(&|s| s.containers[0].security_context = sc(json!({"capabilities": {"add": ["NET_ADMIN"]}}))), "adds capability NET_ADMIN"),
        (with(&|s| s.containers[0].security_context = sc(json!({"capabilities": {"add": ["cap_net_raw"]}}))), "adds capability cap_net_raw"),
    ];
    for (p, says) in &cases {
        let why = refused(&transparent, p).unwrap_or_else(|| panic!("transparent mode admitted a pod that {says}"));
        assert!(why.contains(says) && why.contains("ManagedAgent coder"), "{why}");
        // Without transparent mode there is no redirect to escape: the sidecar is still the only
        // holder of the agent's token and credentials.
        assert_eq!(refused(&plain, p), None, "{says}");
    }
    // A container that merely runs as another user is fine.
    let other = with(&|s| s.containers[0].security_context = sc(json!({"runAsUser": 1000, "capabilities": {"add": ["NET_BIND_SERVICE"]}})));
    assert_eq!(refused(&transparent, &other), None);
}

#[test]
fn an_agent_may_size_its_own_sidecar() {
    let coder: ManagedAgentSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "coder"}}, "serviceAccountName": "coder",
        "injection": {"resources": {"requests": {"cpu": "50m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}}}
    }))
    .unwrap();
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let PodReview::Inject { pod: injected, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &settings()) else {
        panic!("injected")
    };
    let sidecar = &injected.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(serde_json::to_value(&sidecar.resources).unwrap()["limits"]["memory"], "128Mi");
}

/// With Vault, the sidecar logs in with a token of its own audience (`tollgate-sidecar`), so a
/// Vault role bound to that audience takes no token an app container could hold.
#[test]
fn a_sidecar_with_vault_logs_in_with_a_token_for_its_own_audience() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &[]);
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let vault = tollgate_core::k8s::inject::VaultEnv {
        address: "https://vault:8200".into(),
        auth_mount: "kubernetes".into(),
        role: None,
        cache_seconds: 30,
        namespace_scope: "tollgate/{namespace}/".into(),
    };
    let s = Settings { vault: Some(vault), ..settings() };
    let PodReview::Inject { pod: injected, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &s) else { panic!("injected") };
    let pod = serde_json::to_value(&injected).unwrap();
    let sidecar = &pod["spec"]["initContainers"][0];
    let jwt = sidecar["env"].as_array().unwrap().iter().find(|e| e["name"] == "TOLLGATE_VAULT_JWT_FILE").cloned();
    assert_eq!(jwt.map(|e| e["value"].clone()), Some(json!("/var/run/secrets/kubernetes.io/serviceaccount/vault-token")));
    let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tollgate-service-account").cloned().unwrap();
    let audiences: Vec<&str> =
        volume["projected"]["sources"].as_array().unwrap().iter().filter_map(|s| s["serviceAccountToken"]["audience"].as_str()).collect();
    assert_eq!(audiences, ["tollgate-gateway", "tollgate-sidecar"]);
}

#[test]
fn a_traced_operator_gives_its_sidecars_the_same_export_and_the_app_containers_nothing() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &[]);
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let tracing = tollgate_core::k8s::inject::TracingEnv {
        endpoint: "http://collector.observability:4318".into(),
        sampler: Some("parentbased_traceidratio".into()),
        sampler_arg: Some("0.25".into()),
    };
    let s = Settings { tracing: Some(tracing), ..settings() };
    let PodReview::Inject { pod: injected, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &s) else { panic!("injected") };
    let pod = serde_json::to_value(&injected).unwrap();
    let otel = |c: &Value| -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with("OTEL_")))
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    let want: Vec<(String, String)> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.observability:4318"),
        ("OTEL_SERVICE_NAME", "tollgate-sidecar"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(otel(&pod["spec"]["initContainers"][0]), want);
    assert_eq!(otel(&pod["spec"]["containers"][0]), Vec::<(String, String)>::new(), "the app's own tracing is its business");
}

#[test]
fn a_gateway_served_over_tls_is_trusted_by_the_sidecar_and_read_only_by_the_app_containers() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &[]);
    let candidates = [Candidate { name: "coder", spec: &coder, mounts: Default::default() }];
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let tls = Settings { gateway_url: Some("https://main-gateway.tollgate-system.svc:8080".into()), gateway_ca: Some(ca.into()), ..settings() };
    // The pod brings its own "trust" volume (the host's root) and mounts it writable, and one
    // container picks its own CA file.
    let mut submitted = serde_json::to_value(pod(json!({"app": "coder"}), "coder", json!({}))).unwrap();
    submitted["spec"]["volumes"].as_array_mut().unwrap().push(json!({"name": "tollgate-trust", "hostPath": {"path": "/"}}));
    submitted["spec"]["containers"][0]["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "tollgate-trust", "mountPath": "/host"}));
    submitted["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "own-ca", "image": "x", "env": [{"name": "SSL_CERT_FILE", "value": "/mine.pem"}]}));
    let submitted: Pod = serde_json::from_value(submitted).unwrap();
    let PodReview::Inject { pod: injected, .. } = review(&submitted, &candidates, &tls) else { panic!("not injected") };
    let stored = serde_json::to_value(&injected).unwrap();
    let spec = &stored["spec"];
    let trust: Vec<&Value> = spec["volumes"].as_array().unwrap().iter().filter(|v| v["name"] == "tollgate-trust").collect();
    assert_eq!(trust, [&json!({"name": "tollgate-trust", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})], "the pod's own volume of that name is gone");
    let env = |c: &Value, name: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    let sidecar = &spec["initContainers"][0];
    assert_eq!(env(sidecar, "TOLLGATE_GATEWAY_CA"), Some(json!(ca)));
    assert_eq!(env(sidecar, "TOLLGATE_TRUST_DIR"), Some(json!("/var/run/tollgate/trust")));
    let mount = |c: &Value| c["volumeMounts"].as_array().unwrap().iter().filter(|m| m["name"] == "tollgate-trust").cloned().collect::<Vec<_>>();
    assert_eq!(mount(sidecar), [json!({"name": "tollgate-trust", "mountPath": "/var/run/tollgate/trust"})]);
    let app = &spec["containers"][0];
    assert_eq!(
        mount(app),
        [json!({"name": "tollgate-trust", "mountPath": "/var/run/tollgate/trust", "readOnly": true})],
        "the app's writable mount is replaced"
    );
    assert_eq!(env(app, "SSL_CERT_FILE"), Some(json!("/var/run/tollgate/trust/ca-bundle.crt")));
    assert_eq!(env(app, "NODE_EXTRA_CA_CERTS"), Some(json!("/var/run/tollgate/trust/gateway-ca.crt")));
    assert_eq!(env(app, "OPENAI_BASE_URL"), Some(json!("https://main-gateway.tollgate-system.svc:8080/openai/v1")));
    assert_eq!(env(&spec["containers"][1], "SSL_CERT_FILE"), Some(json!("/mine.pem")), "a container's own choice stays");

    // Plain HTTP: nothing of the kind, and that mount is one of a Tollgate volume the app may not have.
    match review(&submitted, &candidates, &settings()) {
        PodReview::Refused(why) => assert!(why.contains("container agent mounts tollgate-trust"), "{why}"),
        _ => panic!("a pod mounting tollgate-trust itself was not refused"),
    }
    let PodReview::Inject { pod: plain, .. } = review(&pod(json!({"app": "coder"}), "coder", json!({})), &candidates, &settings()) else {
        panic!("not injected")
    };
    let plain = serde_json::to_value(&plain).unwrap();
    assert!(!plain.to_string().contains("tollgate-trust") && !plain.to_string().contains("NODE_EXTRA_CA_CERTS"), "{plain}");
}
