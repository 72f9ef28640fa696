//! The injection patch builder (`tollgate_core::inject`) against golden files: the pod as
//! submitted (with the token volume the ServiceAccount admission plugin adds before any webhook)
//! and the pod as it must run. `TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-core --test
//! inject` rewrites them; review the diff.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::path::PathBuf;
use tollgate_api::{ManagedAgentSpec, McpServerSpec};
use tollgate_core::inject::{Candidate, Outcome, Settings, credential_secrets, decide};

fn settings() -> Settings {
    Settings {
        image: "ghcr.io/tollgate-dev/tollgate:0.1.0".into(),
        listen_port: 15001,
        admin_port: 15021,
        resources: serde_json::from_value(json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})).ok(),
        cluster_default: "Allow".into(),
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
    let secrets = credential_secrets(&coder, servers.iter().map(|(n, s)| (*n, s)));
    assert_eq!(secrets, ["github-token", "wiki"], "only the servers the agent may use, each Secret once");
    let candidates = [Candidate { name: "coder", spec: &coder, credential_secrets: secrets }];
    let submitted = pod(json!({"app": "coder"}), "coder", json!({}));
    let Outcome::Inject { agent, pod: injected } = decide(&submitted, &candidates, &settings()) else { panic!("the agent's pod is injected") };
    assert_eq!(agent, "coder");
    golden("inject-agent-pod.json", &serde_json::to_value(&injected).unwrap());
    // Injecting twice changes nothing.
    assert_eq!(decide(&injected, &candidates, &settings()), Outcome::AlreadyInjected);
}

#[test]
fn pods_that_are_not_one_agent_under_its_identity_are_not_injected() {
    let coder = agent(json!({"matchLabels": {"app": "coder"}}), "coder", &["*"]);
    let any_app = agent(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}), "coder", &["*"]);
    let one = [Candidate { name: "coder", spec: &coder, credential_secrets: vec![] }];
    let two =
        [Candidate { name: "coder", spec: &coder, credential_secrets: vec![] }, Candidate { name: "any-app", spec: &any_app, credential_secrets: vec![] }];
    let s = settings();
    assert_eq!(decide(&pod(json!({"app": "web"}), "coder", json!({})), &one, &s), Outcome::NotAnAgent);
    let Outcome::Refused(why) = decide(&pod(json!({"app": "coder"}), "coder", json!({})), &two, &s) else { panic!("two agents") };
    assert!(why.contains("coder, any-app"), "{why}");
    let Outcome::Refused(why) = decide(&pod(json!({"app": "coder"}), "deployer", json!({})), &one, &s) else { panic!("another identity") };
    assert!(why.contains("\"deployer\"") && why.contains("\"coder\""), "{why}");
    let Outcome::Refused(why) = decide(&pod(json!({"app": "coder"}), "", json!({})), &one, &s) else { panic!("the default account") };
    assert!(why.contains("\"default\""), "{why}");
    assert_eq!(decide(&pod(json!({"app": "coder"}), "coder", json!({"tollgate.dev/inject": "false"})), &one, &s), Outcome::OptedOut { agent: "coder".into() });
}
