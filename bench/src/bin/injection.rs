//! The injection webhook's own handling (DESIGN §5: p99 ≤ 10 ms): the operator's `review_pod`
//! called in process, as the webhook server calls it, against a real API server holding the
//! namespace's ManagedAgents and MCPServers; beside it the pure decision alone
//! (`tollgate_core::k8s::inject::review` and the patch), so the API reads' share shows.
//!
//! Build first: `cargo build --release -p tollgate-bench`.

use anyhow::{Context, Result};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tollgate_bench::quantile_us;
use tollgate_e2e::{ControlPlane, User};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "bench-inject";
const RUNS: usize = 2000;

fn review(pod: &serde_json::Value) -> Result<AdmissionRequest<DynamicObject>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"}, "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"], "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "admin"}, "object": pod, "dryRun": false, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))?;
    review.try_into().context("a request")
}

fn pod(name: &str, app: &str, sa: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "agent", "image": "python:3.12", "env": [{"name": "MODE", "value": "x"}],
            "volumeMounts": [{"name": "kube-api-access-1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access-1", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}})
}

fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start()?;
    apply_objects(&cp)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(kube::config::Kubeconfig::read_from(cp.kubeconfig(User::Admin))?, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let (settings, shared) = operator_state(&client);
        let agent_pod = review(&pod("p", "app-3", "sa-3"))?;
        let other_pod = review(&pod("q", "web", "default"))?;
        let first = tollgate_operator::admission::inject::review_pod(&agent_pod, &shared).await;
        anyhow::ensure!(first.allowed && first.patch.is_some(), "the agent's pod is injected: {first:?}");

        let timed = |req: &AdmissionRequest<DynamicObject>| {
            let (req, shared) = (req.clone(), shared.clone());
            async move {
                let mut samples = Vec::with_capacity(RUNS);
                for _ in 0..100 {
                    tollgate_operator::admission::inject::review_pod(&req, &shared).await;
                }
                for _ in 0..RUNS {
                    let t = Instant::now();
                    std::hint::black_box(tollgate_operator::admission::inject::review_pod(&req, &shared).await);
                    samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                samples
            }
        };
        let mut injected = timed(&agent_pod).await;
        let mut passed = timed(&other_pod).await;

        // The pure part alone: the decision and the patch, on objects already read.
        let agents: Vec<tollgate_api::ManagedAgent> = kube::Api::namespaced(shared.client.clone(), NS).list(&Default::default()).await?.items;
        let servers: Vec<tollgate_api::McpServer> = kube::Api::namespaced(shared.client.clone(), NS).list(&Default::default()).await?.items;
        let names: Vec<String> = agents.iter().map(|a| a.metadata.name.clone().unwrap_or_default()).collect();
        let candidates: Vec<tollgate_core::k8s::inject::Candidate<'_>> = agents
            .iter()
            .zip(&names)
            .map(|(a, name)| tollgate_core::k8s::inject::Candidate {
                name,
                spec: &a.spec,
                mounts: tollgate_core::k8s::inject::mounts(&a.spec, servers.iter().map(|s| (s.metadata.name.as_deref().unwrap_or_default(), &s.spec))),
            })
            .collect();
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod("p", "app-3", "sa-3"))?;
        let before = serde_json::to_value(&typed)?;
        let mut pure = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            if let tollgate_core::k8s::inject::PodReview::Inject { pod, .. } = tollgate_core::k8s::inject::review(&typed, &candidates, &settings) {
                std::hint::black_box(json_patch::diff(&before, &serde_json::to_value(&*pod)?));
            }
            pure.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        for (what, samples) in [("agent pod, injected", &mut injected), ("other pod, passed", &mut passed), ("decision + patch alone", &mut pure)] {
            println!("{what:<26} p50 {:>8.1} µs   p99 {:>8.1} µs   ({RUNS} runs)", quantile_us(samples, 0.5), quantile_us(samples, 0.99));
        }
        println!("{}", tollgate_bench::target("the webhook's own handling of an agent pod, p99", quantile_us(&mut injected, 0.99) / 1000.0, 10.0, " ms"));
        anyhow::Ok(())
    })?;
    tollgate_bench::finish()
}

/// Four MCP servers with credentials and five agents, in the bench's namespace.
fn apply_objects(cp: &ControlPlane) -> Result<()> {
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    let mut objects = String::new();
    for i in 0..4 {
        objects.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: s{i}}}\nspec: {{url: \"http://127.0.0.1:9/mcp\", headers: [{{name: Authorization, secretKeyRef: {{name: cred-{i}, key: token}}}}]}}\n---\n"
        ));
    }
    for i in 0..5 {
        objects.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {{name: agent-{i}}}\nspec: {{selector: {{matchLabels: {{app: app-{i}}}}}, serviceAccountName: sa-{i}, mcpServers: [\"s*\"]}}\n---\n"
        ));
    }
    let path = cp.dir().join("bench-inject.yaml");
    std::fs::write(&path, objects)?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", path.to_str().context("path")?])?;

    Ok(())
}

/// What the injection webhook is given in the operator: its settings and shared context.
fn operator_state(client: &kube::Client) -> (tollgate_core::k8s::inject::Settings, Arc<tollgate_operator::Shared>) {
    let settings = tollgate_core::k8s::inject::Settings {
        image: "ghcr.io/tollgate-dev/tollgate:0.1.0".into(),
        listen_port: 15001,
        admin_port: 15021,
        resources: None,
        cluster_default: "Allow".into(),
        redirect_port: 15006,
        exclude_cidrs: Vec::new(),
        exclude_ports: Vec::new(),
        gateway_url: None,
        gateway_ca: None,
        vault: None,
        tracing: None,
    };
    let gateway_ca = Arc::new(tollgate_operator::gateway_ca::GatewayCa::new("tollgate-system"));
    let configured = tollgate_core::k8s::one_gateway::Target { url: None, ca_secret: None, relay_user: String::new() };
    // As in the operator: the namespace's Gateways watched, for the one agents are sent to.
    let (serving, watch) = tollgate_operator::serving::ServingGateway::start(client.clone(), "tollgate-system", configured);
    tokio::spawn(watch);
    let serving = Arc::new(serving);
    let shared = Arc::new(tollgate_operator::Shared {
        client: client.clone(),
        identity: "bench".into(),
        serving: serving.clone(),
        metrics: Arc::default(),
        injection: settings.clone(),
        namespace: "tollgate-system".into(),
        gateways: tollgate_core::k8s::gateway_objects::Settings {
            image: "bench".into(),
            cluster_role: "tollgate-gateway".into(),
            vault: None,
            allowed_betas: Vec::new(),
            tracing: None,
        },
        notifier: tollgate_operator::notify::Notifier::new(client.clone(), "http://127.0.0.1:9".into(), None),
        vault: None,
        ai_reader: tollgate_operator::ai_reader::AiReader::new(client.clone(), serving, gateway_ca.clone()),
        allow_http_providers: false,
        gateway_ca,
    });
    (settings, shared)
}
