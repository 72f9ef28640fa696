//! The gateway over TLS, end to end. A `Gateway` with `spec.tls` gets a certificate the operator
//! issues from a CA of its own; its pod (run by the e2e kubelet from the Deployment as stored)
//! answers only HTTPS. An agent pod, injected by an operator told the gateway's URL and CA
//! Secret, reaches it by the Service's name (`hostAliases` stand in for cluster DNS): the
//! sidecar ships its audit batch trusting that CA alone, the official `openai` SDK in the app
//! container trusts it through nothing but the environment injection gave it, and a container
//! that trusts only the public roots is refused by its own TLS check. Before the certificate
//! exists, agent pods are refused rather than started with nothing to verify the gateway by.

mod common;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, FakeProvider, OPENAI_KEY, get, ledger_rows, model_provider, sdks_dir};
use tollgate_e2e::kubelet::{Programs, Route, run_pod, run_pod_routed};
use tollgate_e2e::{ControlPlane, Modern, Operator, User, binary, repo_file, tools_dir, wait_until};

const SYSTEM: &str = "tollgate-system";
const HOST: &str = "secure-gateway.tollgate-system.svc";
const URL: &str = "https://secure-gateway.tollgate-system.svc:8080";
/// The gateway Service's address as the agent pod sees it.
const SERVICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn agent_namespace(cp: &ControlPlane, fake: &FakeProvider, mcp_url: &str) -> Result<String> {
    let ns = cp.create_namespace("gateway-tls")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    let objects = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coder}}
---
apiVersion: v1
kind: Secret
metadata: {{name: provider-keys}}
stringData: {{openai: "{OPENAI_KEY}"}}
{provider}---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{mcp_url}", timeoutSeconds: 10}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: [files], models: {{allowed: [fast]}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: files}}
spec:
  tools:
    - {{server: files, name: echo, rules: [{{action: Allow}}]}}
"#,
        provider = model_provider(
            "openai",
            &fake.openai_url(),
            "secretKeyRef: {name: provider-keys, key: openai}",
            &["{name: gpt-4o-mini, aliases: [fast], pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}"]
        ),
    );
    cp.apply(User::Admin, &ns, &objects)?;
    let dir = cp.dir().join(format!("{ns}-agent"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("scenario.json"), r#"[{"op": "call_tool", "name": "files__echo", "arguments": {"message": "over tls"}}]"#)?;
    let mut args = vec!["create".to_owned(), "configmap".to_owned(), "agent".to_owned(), "-n".to_owned(), ns.clone()];
    for (key, path) in [
        ("py_client.py", repo_file("e2e/clients/py_client.py")),
        ("model_client.py", repo_file("e2e/clients/model_client.py")),
        ("scenario.json", dir.join("scenario.json")),
    ] {
        args.push(format!("--from-file={key}={}", path.display()));
    }
    cp.kubectl_ok(User::Admin, &args)?;
    Ok(ns)
}

/// The agent's pod: the MCP client, the model client as injected, and a model client that keeps
/// its own `SSL_CERT_FILE` (the public roots only).
fn agent_pod() -> String {
    let chat = json!([{"op": "chat", "model": "fast"}]).to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "coder-1", "labels": {"app": "coder"}},
        "spec": {
            "serviceAccountName": "coder",
            "hostAliases": [{"ip": SERVICE_IP.to_string(), "hostnames": [HOST]}],
            "containers": [
                {"name": "agent", "image": "python:3.12", "command": ["python"],
                 "args": ["/run/agent/py_client.py", "$(TOLLGATE_MCP_URL)", "@/run/agent/scenario.json"],
                 "volumeMounts": [{"name": "agent", "mountPath": "/run/agent"}]},
                {"name": "model", "image": "python:3.12", "command": ["model-python"],
                 "args": ["/run/agent/model_client.py", chat],
                 "volumeMounts": [{"name": "agent", "mountPath": "/run/agent"}]},
                {"name": "public-roots-only", "image": "python:3.12", "command": ["model-python"],
                 "args": ["/run/agent/model_client.py", chat],
                 "env": [{"name": "SSL_CERT_FILE", "value": "/etc/ssl/certs/ca-certificates.crt"}],
                 "volumeMounts": [{"name": "agent", "mountPath": "/run/agent"}]}
            ],
            "volumes": [{"name": "agent", "configMap": {"name": "agent"}}]
        }
    })
    .to_string()
}

fn steps(pod: &tollgate_e2e::kubelet::RunningPod, container: &str) -> Result<Vec<Value>> {
    let (status, log) = pod.wait_exit(container, Duration::from_secs(90))?;
    ensure!(status.success(), "{container} failed ({status}):\n{log}\nsidecar:\n{}", pod.container("tollgate-sidecar")?.log_tail());
    Ok(log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn curl(args: &[&str]) -> Result<std::process::Output> {
    Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]).args(args).output().context("curl")
}

#[test]
fn agents_reach_a_tls_gateway_trusting_only_the_ca_injection_gave_them() -> Result<()> {
    let cp = ControlPlane::shared();
    let _operator = Operator::start_with_env(cp, &[("TOLLGATE_GATEWAY_URL", URL), ("TOLLGATE_GATEWAY_CA_SECRET", "secure-gateway-tls")])?;
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let server = Modern::start(cp)?;
    let ns = agent_namespace(cp, &fake, &server.url())?;
    tollgate_e2e::gateway::chart_gateway_steps_aside(cp)?;

    // No certificate yet: an agent pod is refused, saying why (a Deployment's ReplicaSet retries).
    let file = cp.dir().join(format!("{ns}-pod.json"));
    std::fs::write(&file, agent_pod())?;
    let refused = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", file.to_str().context("path")?])?;
    ensure!(!refused.status.success(), "an agent pod was admitted before the gateway's CA existed");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("the model gateway's CA is unavailable") && said.contains("secure-gateway-tls"), "{said}");

    // The Gateway: its certificate issued into its Secret, its Deployment serving from it.
    cp.apply(User::Admin, SYSTEM, "apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {name: secure}\nspec: {replicas: 1, tls: {}}\n")?;
    let status = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let g = get(cp, SYSTEM, "gateway", "secure")?;
        Ok(g["status"]["url"].as_str().map(str::to_owned))
    })
    .context("the gateway's status.url")?;
    assert_eq!(status, URL);
    let secret = get(cp, SYSTEM, "secret", "secure-gateway-tls")?;
    assert_eq!(secret["type"], "kubernetes.io/tls", "{secret}");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Gateway", "{secret}");
    let ca = cp.kubectl_ok(User::Admin, ["get", "secret", "secure-gateway-tls", "-n", SYSTEM, "-o", r#"jsonpath={.data.ca\.crt}"#])?;
    let ca = String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca.trim())?)?;
    let ca_file = cp.dir().join(format!("{ns}-gateway-ca.crt"));
    std::fs::write(&ca_file, &ca)?;

    let deployment = get(cp, SYSTEM, "deployment", "secure-gateway")?;
    let template = &deployment["spec"]["template"];
    let gateway_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "secure-gateway-0", "labels": template["metadata"]["labels"]}, "spec": template["spec"]});
    cp.apply(User::Admin, SYSTEM, &gateway_pod.to_string())?;
    let programs = Programs::default().with("/usr/local/bin/tollgate-gateway", binary("tollgate-gateway", "tollgate-gateway")?);
    let gateway = run_pod(cp, SYSTEM, "secure-gateway-0", &programs, &[(LOOPBACK, fake.port)])?;
    let admin = gateway.net.expose(8081)?;
    gateway.container("gateway")?.wait_http_ok("the gateway pod", admin, "/readyz")?;
    let port = gateway.net.expose(8080)?;

    // HTTPS only, and only under that CA and the Service's name.
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    let https = format!("https://{HOST}:{port}/openai/v1/models");
    let trusted = curl(&["--cacert", ca_file.to_str().context("path")?, "--resolve", &resolve, &https])?;
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "401", "HTTPS under the CA answers (no key: 401): {trusted:?}");
    let public = curl(&["--cacert", "/etc/ssl/certs/ca-certificates.crt", "--resolve", &resolve, &https])?;
    assert_eq!(public.status.code(), Some(60), "the public roots do not vouch for it: {public:?}");
    let plain = curl(&[&format!("http://127.0.0.1:{port}/openai/v1/models")])?;
    ensure!(!plain.status.success() && String::from_utf8_lossy(&plain.stdout) == "000", "plain HTTP was answered: {plain:?}");

    // Now the agent pod is admitted and runs as stored.
    wait_until(Duration::from_secs(40), Duration::from_millis(500), || {
        let out = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", file.to_str().context("path")?])?;
        Ok(out.status.success().then_some(()))
    })
    .context("the agent pod was still refused once the gateway's CA existed")?;
    let programs = Programs::default()
        .with("/usr/local/bin/tollgate-sidecar", binary("tollgate-sidecar", "tollgate-sidecar")?)
        .with("python", tools_dir()?.join("venv/bin/python"))
        .with("model-python", sdks_dir()?.join("venv/bin/python"));
    let routes = [Route { ip: LOOPBACK, port: server.port, host_port: server.port }, Route { ip: SERVICE_IP, port: 8080, host_port: port }];
    let pod = run_pod_routed(cp, &ns, "coder-1", &programs, &routes)?;

    let model = steps(&pod, "model")?;
    ensure!(model.len() == 1 && model[0]["ok"] == true, "the injected SDK's call over TLS: {model:?}\ngateway:\n{}", gateway.log("gateway")?);
    let untrusting = steps(&pod, "public-roots-only")?;
    assert_eq!(untrusting.first().map(|s| (s["ok"].clone(), s["error"].clone())), Some((json!(false), json!("APIConnectionError"))), "{untrusting:?}");
    let mcp = steps(&pod, "agent")?;
    ensure!(mcp.len() == 1 && mcp[0]["result"]["isError"] != true, "{mcp:?}");

    // The sidecar's audit record of the echo call reached the gateway's store over TLS.
    let db = cp.dir().join(format!("pvc-{SYSTEM}-secure-gateway-ledger/ledger.db"));
    let query = format!("SELECT json_extract(record, '$.kind'), tool, decision FROM audit WHERE namespace = '{ns}' AND tool = 'echo' ORDER BY seq");
    let rows = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let rows = ledger_rows(&db, &query)?;
        Ok((rows.len() >= 2).then_some(rows))
    })
    .with_context(|| format!("no audit record arrived; sidecar:\n{}", pod.container("tollgate-sidecar").map(|p| p.log_tail()).unwrap_or_default()))?;
    assert_eq!(rows, [[json!("decision"), json!("echo"), json!("allow")], [json!("outcome"), json!("echo"), json!("allow")]], "{rows:?}");
    let trust = std::fs::read_to_string(cp.dir().join(format!("pod-{ns}-coder-1/volumes/tollgate-trust/gateway-ca.crt")))?;
    assert_eq!(trust.trim(), ca.trim(), "the app containers trust exactly the gateway's CA");
    drop(pod);
    drop(gateway);

    // The configured Gateway steps aside for another: pods admitted from then on are sent to
    // the one that serves, and trust its CA, not the configured one's.
    cp.apply(User::Admin, SYSTEM, "apiVersion: tollgate.dev/v1alpha1\nkind: Gateway\nmetadata: {name: next}\nspec: {replicas: 1, tls: {}}\n")?;
    cp.kubectl_ok(User::Admin, ["patch", "gateway", "secure", "-n", SYSTEM, "--type=merge", "-p", r#"{"spec":{"replicas":0}}"#])?;
    let next_ca = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let out = cp.kubectl(User::Admin, ["get", "secret", "next-gateway-tls", "-n", SYSTEM, "-o", r#"jsonpath={.data.ca\.crt}"#])?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|c| !c.is_empty()))
    })
    .context("the Gateway that took over has no certificate")?;
    let next_ca = String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, next_ca)?)?;
    assert_ne!(next_ca.trim(), ca.trim(), "each Gateway's certificate has a CA of its own");
    let next_url = "https://next-gateway.tollgate-system.svc:8080";
    let sidecar_env =
        admitted_sidecar_env(cp, &ns, "coder-2", next_url).context("a pod admitted once another Gateway serves is still sent to the configured one")?;
    let trusted = sidecar_env.iter().find(|(k, _)| k == "TOLLGATE_GATEWAY_CA").map(|(_, v)| v.trim().to_owned());
    assert_eq!(trusted.as_deref(), Some(next_ca.trim()), "the pod trusts the serving Gateway's CA");
    // The configured Gateway gone altogether: still the one that serves.
    cp.kubectl_ok(User::Admin, ["delete", "gateway", "secure", "-n", SYSTEM])?;
    admitted_sidecar_env(cp, &ns, "coder-3", next_url).context("once the configured Gateway is deleted, pods are sent to it again")?;
    cp.kubectl_ok(User::Admin, ["delete", "gateway", "next", "-n", SYSTEM])?;
    Ok(())
}

/// The sidecar's environment of the agent pod `name`, admitted (again, until it is) once its
/// audit URL is `url`; the pod is deleted afterwards.
fn admitted_sidecar_env(cp: &ControlPlane, ns: &str, name: &str, url: &str) -> Result<Vec<(String, String)>> {
    let file = cp.dir().join(format!("{ns}-{name}.json"));
    std::fs::write(&file, agent_pod().replace("\"coder-1\"", &format!("\"{name}\"")))?;
    let delete = || cp.kubectl(User::Admin, ["delete", "pod", name, "-n", ns, "--ignore-not-found", "--force", "--grace-period=0"]);
    let env = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        delete()?;
        if !cp.kubectl(User::Admin, ["apply", "-n", ns, "-f", file.to_str().context("path")?])?.status.success() {
            return Ok(None);
        }
        let stored = get(cp, ns, "pod", name)?;
        let containers = stored["spec"]["initContainers"].as_array().into_iter().chain(stored["spec"]["containers"].as_array()).flatten();
        let sidecar = containers.into_iter().find(|c| c["name"] == "tollgate-sidecar").cloned().unwrap_or_default();
        let env: Vec<(String, String)> = sidecar["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["name"].as_str().unwrap_or_default().to_owned(), e["value"].as_str().unwrap_or_default().to_owned()))
            .collect();
        Ok(env.iter().any(|(k, v)| k == "TOLLGATE_AUDIT_URL" && v == url).then_some(env))
    })?;
    delete()?;
    Ok(env)
}
