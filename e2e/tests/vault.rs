//! Credentials kept in a real OpenBao (DESIGN §3.7): an MCP server's header read by the sidecar
//! and a model provider's key read by the gateway, each logged in with its own service-account
//! token through Kubernetes auth (a real TokenReview against the e2e API server); a rotated
//! value applies without a restart; a wrong role or an unreachable Vault fails closed with a
//! message that names the path and never the value. The operator discovers a server whose
//! header is in Vault under its own role.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, FakeProvider, GatewayProcess, OPENAI_KEY, agent_key, gateway_identity, get, model_client, model_provider};
use tollgate_e2e::openbao::OpenBao;
use tollgate_e2e::{AuthEcho, ControlPlane, Operator, Sidecar, User, free_ports, py_client, tool_text, wait_until};

struct World {
    bao: OpenBao,
    _operator: Operator,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let start = || -> Result<World> {
            let cp = ControlPlane::shared();
            let bao = OpenBao::start(cp)?;
            bao.role("tollgate-operator", "tollgate-system", "tollgate-operator", "tollgate/")?;
            let jwt = cp.service_account_token_file("tollgate-system", "tollgate-operator")?;
            let jwt = jwt.to_str().context("path")?;
            let operator = Operator::start_with_env(
                cp,
                &[
                    ("TOLLGATE_VAULT_ADDR", &bao.addr()),
                    ("TOLLGATE_VAULT_ROLE", "tollgate-operator"),
                    ("TOLLGATE_VAULT_JWT_FILE", jwt),
                    ("TOLLGATE_VAULT_CACHE_SECONDS", "1"),
                ],
            )?;
            Ok(World { bao, _operator: operator })
        };
        start().unwrap_or_else(|e| panic!("starting OpenBao and the operator: {e:#}"))
    })
}

/// A tool call's text through the sidecar to `server`, or the client's error.
fn whoami(sidecar: &Sidecar, server: &str) -> String {
    match py_client(&sidecar.url(server), &json!([{"op": "call_tool", "name": "whoami", "arguments": {}}])) {
        Ok(steps) => match steps.first().map(tool_text) {
            Some(Ok((text, _))) => text,
            Some(Err(e)) => format!("{e:#}"),
            None => "the client ran no step".to_owned(),
        },
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn mcp_server_headers_come_from_vault_rotate_without_a_restart_and_fail_closed() -> Result<()> {
    let w = world();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("vault-headers")?;
    let path = format!("tollgate/{ns}/auth");
    w.bao.role(&format!("{ns}-coder"), &ns, "coder", &format!("tollgate/{ns}/"))?;
    w.bao.put(&path, "token", "t0ken-1")?;
    let server = AuthEcho::start(cp, "t0ken-1,t0ken-2")?;
    let objects = format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: ["*"]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: private}}
spec:
  url: "{url}"
  headers: [{{name: Authorization, prefix: "Bearer ", vault: {{path: "secret/data/{path}", key: token, role: {ns}-coder}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: borrowed}}
spec:
  url: "{url}"
  headers: [{{name: Authorization, prefix: "Bearer ", vault: {{path: "secret/data/tollgate/{ns}-other/auth", key: token}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: wrong-role}}
spec:
  url: "{url}"
  headers: [{{name: Authorization, prefix: "Bearer ", vault: {{path: "secret/data/{path}", key: token, role: nobody}}}}]
"#,
        url = server.url()
    );
    cp.apply(User::Admin, &ns, &objects)?;
    cp.agent_identity(&ns, "coder")?;
    let jwt = cp.service_account_token_file(&ns, "coder")?;
    let jwt = jwt.to_str().context("path")?;
    let env = [("TOLLGATE_VAULT_ADDR", w.bao.addr()), ("TOLLGATE_VAULT_JWT_FILE", jwt.to_owned()), ("TOLLGATE_VAULT_CACHE_SECONDS", "1".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_with_env(cp, &ns, "coder", "coder", "vault-pod", &env)?;

    // Read under the sidecar's own token, through a real TokenReview.
    let mut said = String::new();
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        said = whoami(&sidecar, "private");
        Ok((said == "authorized as t0ken-1").then_some(()))
    })
    .with_context(|| format!("the sidecar never called the server with the token from Vault: {said}"))?;

    // Rotated in Vault: the next calls carry the new value, with no restart.
    w.bao.put(&path, "token", "t0ken-2")?;
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        said = whoami(&sidecar, "private");
        Ok((said == "authorized as t0ken-2").then_some(()))
    })
    .with_context(|| format!("the rotated value never applied: {said}"))?;

    // A role not bound to this service account: refused, naming the path and the role.
    let refused = whoami(&sidecar, "wrong-role");
    assert!(
        refused.contains(&format!("Vault secret/data/{path} key token")) && refused.contains("Kubernetes login for role") && refused.contains("nobody"),
        "{refused}"
    );
    assert!(!refused.contains("t0ken"), "{refused}");

    // Another namespace's secret, which the operator's own role could read: refused by the
    // operator (discovery would otherwise send it to whatever URL this namespace names) and by
    // the sidecar alike.
    w.bao.put(&format!("tollgate/{ns}-other/auth"), "token", "t0ken-2")?;
    let borrowed = whoami(&sidecar, "borrowed");
    assert!(borrowed.contains(&format!("is outside secret/data/tollgate/{ns}/")), "{borrowed}");
    let mut ready = Value::Null;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let status = get(cp, &ns, "mcpserver", "borrowed")?["status"].clone();
        ready = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned().unwrap_or_default();
        Ok((ready["status"] == "False" && ready["message"].as_str().unwrap_or_default().contains("is outside")).then_some(()))
    })
    .with_context(|| format!("the operator read another namespace's secret for discovery: {ready}"))?;

    // Vault unreachable: the call fails closed, saying where it looked.
    let env_down = [("TOLLGATE_VAULT_ADDR", "http://127.0.0.1:9"), ("TOLLGATE_VAULT_JWT_FILE", jwt)];
    let cut_off = Sidecar::start_with_env(cp, &ns, "coder", "coder", "vault-pod-2", &env_down)?;
    let down = whoami(&cut_off, "private");
    assert!(down.contains("Vault at http://127.0.0.1:9") && down.contains(&format!("secret/data/{path}")), "{down}");
    assert!(!down.contains("authorized as"), "a call went through without its credential: {down}");

    // The operator discovered the server with its own role.
    let mut status = Value::Null;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        status = get(cp, &ns, "mcpserver", "private")?["status"].clone();
        Ok((status["toolCount"] == 1).then_some(()))
    })
    .with_context(|| format!("the operator did not discover the server through Vault: {status}"))?;

    for log in [&sidecar.process.log, &cut_off.process.log] {
        let output = std::fs::read_to_string(log)?;
        ensure!(!output.contains("t0ken-1") && !output.contains("t0ken-2"), "a Vault value leaked into {}", log.display());
    }
    Ok(())
}

#[test]
fn a_model_providers_key_comes_from_vault_and_rotates_without_a_restart() -> Result<()> {
    let w = world();
    let cp = ControlPlane::shared();
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let ns = cp.create_namespace("vault-provider")?;
    let path = format!("tollgate/{ns}/openai");
    w.bao.put(&path, "api-key", OPENAI_KEY)?;
    let pricing = "pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}";
    let objects = [
        model_provider("openai", &fake.openai_url(), &format!("vault: {{path: \"secret/data/{path}\", key: api-key}}"), &[&format!("{{name: gpt-4o-mini, {pricing}}}")]),
        // A role the gateway is not bound to.
        model_provider(
            "anthropic",
            &fake.anthropic_url(),
            &format!("vault: {{path: \"secret/data/{path}\", key: api-key, role: nobody}}"),
            &[&format!("{{name: claude-sonnet-4-5, {pricing}}}")],
        ),
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: coder}\nspec: {selector: {matchLabels: {app: coder}}, serviceAccountName: coder, models: {allowed: [\"*\"]}}\n".to_owned(),
    ]
    .concat();
    cp.apply(User::Admin, &ns, &objects)?;
    gateway_identity(cp)?;
    w.bao.role("tollgate-gateway", "tollgate-system", "tollgate-gateway", "tollgate/")?;
    let jwt = cp.service_account_token_file("tollgate-system", "tollgate-gateway")?;
    let db = cp.dir().join(format!("{ns}-ledger.db"));
    let [port] = free_ports::<1>()?;
    let env = [
        ("TOLLGATE_VAULT_ADDR", w.bao.addr()),
        ("TOLLGATE_VAULT_ROLE", "tollgate-gateway".to_owned()),
        ("TOLLGATE_VAULT_JWT_FILE", jwt.to_str().context("path")?.to_owned()),
        ("TOLLGATE_VAULT_CACHE_SECONDS", "1".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = GatewayProcess::start_with(cp, &format!("sqlite://{}?mode=rwc", db.display()), port, &env)?;
    let key = agent_key(cp, &ns, "coder")?;
    let sdk_env = vec![
        ("OPENAI_BASE_URL".to_owned(), format!("{}/openai/v1", gateway.url())),
        ("OPENAI_API_KEY".to_owned(), key.clone()),
        ("ANTHROPIC_BASE_URL".to_owned(), format!("{}/anthropic", gateway.url())),
        ("ANTHROPIC_API_KEY".to_owned(), key),
    ];
    let chat = json!([{"op": "chat", "model": "gpt-4o-mini"}]);

    // The key from Vault reaches the provider.
    let mut last = Value::Null;
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        last = model_client(&sdk_env, &chat)?.remove(0);
        Ok((last["ok"] == true).then_some(()))
    })
    .with_context(|| format!("the gateway never called the provider with the key from Vault: {last}"))?;
    let bearer = |calls: &[Value], key: &str| calls.iter().any(|c| c["headers"]["authorization"] == format!("Bearer {key}"));
    ensure!(bearer(&fake.calls()?, OPENAI_KEY), "the provider never saw the key from Vault");

    // Rotated in Vault: the provider sees the new value, with no restart.
    w.bao.put(&path, "api-key", "sk-rotated-0123456789")?;
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let _ = model_client(&sdk_env, &chat)?;
        Ok(bearer(&fake.calls()?, "sk-rotated-0123456789").then_some(()))
    })
    .context("the rotated key never reached the provider")?;

    // A role the gateway is not bound to: a clear refusal that names the path, not the value.
    let refused = model_client(&sdk_env, &json!([{"op": "messages", "model": "claude-sonnet-4-5"}]))?.remove(0);
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(refused["ok"] == false && message.contains(&format!("secret/data/{path}")) && message.contains("role \"nobody\""), "{refused}");
    assert!(!refused.to_string().contains("sk-"), "{refused}");
    let log = std::fs::read_to_string(&gateway.process.log)?;
    ensure!(!log.contains(OPENAI_KEY) && !log.contains("sk-rotated"), "a provider key leaked into the gateway's log");

    // Vault unreachable: the call fails closed, saying where it looked, and the provider is not called.
    let [down_port] = free_ports::<1>()?;
    let down_env = [
        ("TOLLGATE_VAULT_ADDR", "http://127.0.0.1:9"),
        ("TOLLGATE_VAULT_ROLE", "tollgate-gateway"),
        ("TOLLGATE_VAULT_JWT_FILE", jwt.to_str().context("path")?),
    ];
    let cut_off = GatewayProcess::start_with(cp, &format!("sqlite://{}?mode=rwc", cp.dir().join(format!("{ns}-ledger-2.db")).display()), down_port, &down_env)?;
    let before = fake.calls()?.len();
    let down_sdk: Vec<(String, String)> =
        sdk_env.iter().map(|(k, v)| (k.clone(), v.replace(&format!(":{}/", gateway.port), &format!(":{down_port}/")))).collect();
    let down = model_client(&down_sdk, &chat)?.remove(0);
    let message = down["message"].as_str().unwrap_or_default();
    assert!(down["ok"] == false && message.contains("Vault at http://127.0.0.1:9") && message.contains(&format!("secret/data/{path}")), "{down}");
    assert_eq!(fake.calls()?.len(), before, "the provider was called without its key");
    drop(cut_off);
    Ok(())
}

/// A Vault role bound to the sidecar's own audience (`tollgate-sidecar`, the token injection
/// projects for the sidecar's Vault logins) takes that token and no other: an app that keeps
/// the agent's API token (`keepServiceAccountToken`) cannot log in as the sidecar with it.
#[test]
fn a_role_bound_to_the_sidecars_audience_refuses_the_agents_api_token() -> Result<()> {
    let w = world();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("vault-audience")?;
    let path = format!("tollgate/{ns}/auth");
    w.bao.role_for(&format!("{ns}-coder"), &ns, "coder", &format!("tollgate/{ns}/"), Some("tollgate-sidecar"))?;
    w.bao.put(&path, "token", "t0ken-1")?;
    let server = AuthEcho::start(cp, "t0ken-1")?;
    let objects = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {{name: coder}}\nspec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, mcpServers: [\"*\"]}}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: private}}\nspec:\n  url: \"{}\"\n  headers: [{{name: Authorization, prefix: \"Bearer \", vault: {{path: \"secret/data/{path}\", key: token, role: {ns}-coder}}}}]\n",
        server.url()
    );
    cp.apply(User::Admin, &ns, &objects)?;
    cp.agent_identity(&ns, "coder")?;
    let start = |name: &str, jwt: &std::path::Path| -> Result<Sidecar> {
        let env = [("TOLLGATE_VAULT_ADDR", w.bao.addr()), ("TOLLGATE_VAULT_JWT_FILE", jwt.to_str().context("path")?.to_owned())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Sidecar::start_with_env(cp, &ns, "coder", "coder", name, &env)
    };
    // The agent's API token, as an app that keeps it holds it: refused by the role.
    let api = cp.service_account_token_file(&ns, "coder")?;
    let app = start("vault-app-token", &api)?;
    let refused = whoami(&app, "private");
    ensure!(refused.contains("Kubernetes login for role") && !refused.contains("authorized as"), "the API token logged in as the sidecar: {refused}");
    // The sidecar's own token, for its audience: read.
    let own = cp.dir().join(format!("{ns}-sidecar-vault-token"));
    std::fs::write(&own, cp.kubectl_ok(User::Admin, ["create", "token", "coder", "-n", &ns, "--audience", "tollgate-sidecar"])?.trim())?;
    let sidecar = start("vault-own-token", &own)?;
    let mut said = String::new();
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        said = whoami(&sidecar, "private");
        Ok((said == "authorized as t0ken-1").then_some(()))
    })
    .with_context(|| format!("the sidecar's own token did not log in: {said}"))?;
    Ok(())
}
