//! The model gateway as a process, under the chart's `tollgate-gateway` service account; the fake
//! model provider it calls; and the official `openai`/`anthropic` SDKs as the agent.

use crate::components::{free_ports, repo_root};
use crate::tollgate::{Process, binary};
use crate::{ControlPlane, User, wait_until};
use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub struct GatewayProcess {
    pub process: Process,
    pub port: u16,
    pub admin_port: u16,
}

impl GatewayProcess {
    /// A gateway on a loopback port with its ledger at `database_url`.
    pub fn start(cp: &ControlPlane, database_url: &str) -> Result<GatewayProcess> {
        let [port] = free_ports::<1>()?;
        GatewayProcess::start_on(cp, database_url, port)
    }

    /// Serving on one thread, as a gateway limited to one CPU does.
    pub fn start_single_threaded(cp: &ControlPlane, database_url: &str) -> Result<GatewayProcess> {
        let [port] = free_ports::<1>()?;
        GatewayProcess::start_with(cp, database_url, port, &[("TOLLGATE_WORKER_THREADS", "1")])
    }

    /// On a given port (a gateway started again where its clients expect it).
    pub fn start_on(cp: &ControlPlane, database_url: &str, port: u16) -> Result<GatewayProcess> {
        GatewayProcess::start_with(cp, database_url, port, &[])
    }

    /// On a given port, configured further by `env`.
    pub fn start_with(cp: &ControlPlane, database_url: &str, port: u16, env: &[(&str, &str)]) -> Result<GatewayProcess> {
        Self::spawn(cp, database_url, port, env, None)
    }

    /// With at most `open_files` file descriptors (RLIMIT_NOFILE), as a container's limit sets it.
    pub fn start_with_file_limit(cp: &ControlPlane, database_url: &str, open_files: u32) -> Result<GatewayProcess> {
        let [port] = free_ports::<1>()?;
        Self::spawn(cp, database_url, port, &[], Some(format!("ulimit -n {open_files} && exec \"$0\"")))
    }

    /// With its stdout and stderr a pipe nobody reads, as a container runtime that stopped reading
    /// its log leaves it (its log file stays empty).
    pub fn start_with_unread_log(cp: &ControlPlane, database_url: &str) -> Result<GatewayProcess> {
        let [port] = free_ports::<1>()?;
        Self::spawn(cp, database_url, port, &[], Some("\"$0\" 2>&1 | sleep 86400".into()))
    }

    /// `wrapper`: a shell script that runs the gateway, `"$0"` in it.
    fn spawn(cp: &ControlPlane, database_url: &str, port: u16, env: &[(&str, &str)], wrapper: Option<String>) -> Result<GatewayProcess> {
        gateway_identity(cp)?;
        let kubeconfig = cp.service_account_kubeconfig("tollgate-system", "tollgate-gateway")?;
        let [admin_port] = free_ports::<1>()?;
        let binary = binary("tollgate-gateway", "tollgate-gateway")?;
        let mut cmd = match wrapper {
            None => Command::new(binary),
            Some(script) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &script, &binary.to_string_lossy()]);
                sh
            }
        };
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,tollgate_gateway=debug")
            .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("TOLLGATE_DATABASE_URL", database_url)
            .env("TOLLGATE_STATUS_INTERVAL_SECONDS", "1")
            .envs(env.iter().copied());
        let process = Process::spawn(cmd, cp.dir().join(format!("gateway-{port}.log")))?;
        process.wait_http_ok("the gateway", admin_port, "/readyz")?;
        Ok(GatewayProcess { process, port, admin_port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The HTTP status (as curl writes it: `000` when nothing came) of a chat completion `body`
/// POSTed with `key` to the gateway on `port`, as an SDK would send it.
pub fn chat_status(port: u16, key: &str, body: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &format!("http://127.0.0.1:{port}/openai/v1/chat/completions")])
        .args(["-H", &format!("authorization: Bearer {key}"), "-H", "content-type: application/json", "--data-binary", body])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl GatewayProcess {
    /// The environment injection gives an agent's app containers.
    pub fn agent_env(&self, key: &str) -> Vec<(String, String)> {
        vec![
            ("OPENAI_BASE_URL".into(), format!("{}/openai/v1", self.url())),
            ("OPENAI_API_KEY".into(), key.into()),
            ("ANTHROPIC_BASE_URL".into(), format!("{}/anthropic", self.url())),
            ("ANTHROPIC_API_KEY".into(), key.into()),
        ]
    }
}

/// The service account `tollgate-system/tollgate-gateway` bound to the chart's gateway role, as the
/// operator makes it for the chart's default Gateway (which these tests run as a bare process).
pub fn gateway_identity(cp: &ControlPlane) -> Result<()> {
    cp.install_tollgate_system()?;
    if !cp.kubectl(User::Admin, ["get", "serviceaccount", "tollgate-gateway", "-n", "tollgate-system"])?.status.success() {
        let _ = cp.kubectl(User::Admin, ["create", "serviceaccount", "tollgate-gateway", "-n", "tollgate-system"])?;
    }
    if !cp.kubectl(User::Admin, ["get", "clusterrolebinding", "e2e-tollgate-gateway"])?.status.success() {
        let subject = "--serviceaccount=tollgate-system:tollgate-gateway";
        let _ = cp.kubectl(User::Admin, ["create", "clusterrolebinding", "e2e-tollgate-gateway", "--clusterrole=tollgate-gateway", subject])?;
    }
    Ok(())
}

/// `e2e/servers/fake_provider.py`: OpenAI's and Anthropic's wire formats, requests recorded.
pub struct FakeProvider {
    pub process: Process,
    pub port: u16,
}

impl FakeProvider {
    pub fn start(cp: &ControlPlane, openai_key: &str, anthropic_key: &str) -> Result<FakeProvider> {
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("e2e/servers/fake_provider.py")).args([&port.to_string(), openai_key, anthropic_key]);
        let process = Process::spawn(cmd, cp.dir().join(format!("fake-provider-{port}.log")))?;
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            if let Some(s) = process.exited() {
                bail!("the fake provider exited ({s}): {}", process.log_tail());
            }
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(()))
        })?;
        Ok(FakeProvider { process, port })
    }

    pub fn openai_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn anthropic_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Ends the stream of model `slow` whose last message was `hold:<tag>`.
    pub fn release(&self, tag: &str) -> Result<()> {
        let out = Command::new("curl").args(["-sf", "-X", "POST", &format!("http://127.0.0.1:{}/release/{tag}", self.port)]).output()?;
        anyhow::ensure!(out.status.success(), "releasing {tag}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Every request it got: path, headers, body.
    pub fn calls(&self) -> Result<Vec<Value>> {
        let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{}/calls", self.port)]).output()?;
        anyhow::ensure!(out.status.success(), "the fake provider's /calls did not answer: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["calls"].as_array().cloned().with_context(|| format!("no calls list in {v}"))
    }
}

/// The pinned SDKs' venv: `TOLLGATE_MODEL_SDKS`, else what `install-model-sdks.sh` installs.
pub fn sdks_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::components::tool(&DIR, "TOLLGATE_MODEL_SDKS", "install-model-sdks.sh")
}

/// Runs `e2e/clients/model_client.py` with `env` (an injected pod's); one JSON value per step.
pub fn model_client(env: &[(String, String)], scenario: &Value) -> Result<Vec<Value>> {
    let python = sdks_dir()?.join("venv/bin/python");
    let out = Command::new(python)
        .arg(repo_root().join("e2e/clients/model_client.py"))
        .arg(scenario.to_string())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .context("running the model client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "the model client failed ({}): {}\n{stdout}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))).collect()
}

/// The chart's own Gateway (`tollgate`) at zero replicas: one Gateway serves a cluster, and a
/// test that runs a Gateway of its own makes room for it. The chart's keeps its objects and its
/// account's binding, as any Gateway at zero replicas does.
pub fn chart_gateway_steps_aside(cp: &ControlPlane) -> Result<()> {
    cp.kubectl_ok(User::Admin, ["patch", "gateway", "tollgate", "-n", "tollgate-system", "--type=merge", "-p", r#"{"spec":{"replicas":0}}"#])?;
    Ok(())
}

/// The provider keys the fake provider expects (and that must never reach an agent).
pub const OPENAI_KEY: &str = "sk-provider-openai-0123456789";
pub const ANTHROPIC_KEY: &str = "sk-ant-provider-0123456789";

pub fn get(cp: &ControlPlane, ns: &str, resource: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", resource, name, "-n", ns, "-o", "json"])?)?)
}

/// A namespace with the providers, the agent `coder` (and `other`), and optionally a budget;
/// the agent's key once the operator has minted it.
pub fn setup(cp: &ControlPlane, fake: &FakeProvider, prefix: &str, budget: &str) -> Result<(String, String)> {
    let ns = cp.create_namespace(prefix)?;
    let objects = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: provider-keys}}
stringData: {{openai: "{OPENAI_KEY}", anthropic: "{ANTHROPIC_KEY}"}}
{openai}{anthropic}---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder, labels: {{team: platform}}}}
spec:
  selector: {{matchLabels: {{app: coder}}}}
  serviceAccountName: coder
  models: {{allowed: ["gpt-4o*", "fast", "claude-*", rate-limited, slow, cheap, absurd, flood]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: other}}
spec:
  selector: {{matchLabels: {{app: other}}}}
  serviceAccountName: other
  models: {{allowed: ["claude-*"]}}
{budget}"#,
        openai = model_provider(
            "openai",
            &fake.openai_url(),
            "secretKeyRef: {name: provider-keys, key: openai}",
            &[
                "{name: gpt-4o-mini, aliases: [fast], pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}",
                "{name: gpt-5, pricing: {inputPerMillionUSD: 10.0, outputPerMillionUSD: 30.0}}",
                "{name: rate-limited, pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}",
                "{name: slow, pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}",
                "{name: cheap, pricing: {inputPerMillionUSD: 0.0, outputPerMillionUSD: 2.0}}",
                "{name: absurd, pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}",
                "{name: flood, pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}",
            ],
        ),
        anthropic = model_provider(
            "anthropic",
            &fake.anthropic_url(),
            "secretKeyRef: {name: provider-keys, key: anthropic}",
            &["{name: claude-sonnet-4-5, aliases: [sonnet], pricing: {inputPerMillionUSD: 3.0, outputPerMillionUSD: 15.0}}"],
        ),
    );
    cp.apply(User::Admin, &ns, &objects)?;
    let key = agent_key(cp, &ns, "coder")?;
    Ok((ns, key))
}

/// A `ModelProvider` document named (and typed) `kind` (`openai`, `anthropic`), its credentials
/// (`secretKeyRef: …` or `vault: …`) and models as YAML flow maps.
pub fn model_provider(kind: &str, base_url: &str, credentials: &str, models: &[&str]) -> String {
    let models: String = models.iter().map(|m| format!("\n    - {m}")).collect();
    format!(
        "---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: {kind}}}\nspec:\n  type: {kind}\n  baseURL: \"{base_url}\"\n  credentials: {{{credentials}}}\n  models:{models}\n"
    )
}

/// The key the operator minted for `agent`, read from its Secret as the kubelet would.
pub fn agent_key(cp: &ControlPlane, ns: &str, agent: &str) -> Result<String> {
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let a = get(cp, ns, "managedagent", agent)?;
        let Some(secret) = a["status"]["credentials"]["secretName"].as_str() else { return Ok(None) };
        let encoded = cp.kubectl_ok(User::Admin, ["get", "secret", secret, "-n", ns, "-o", "jsonpath={.data.api-key}"])?;
        let key = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded.trim())?)?;
        Ok(Some(key))
    })
    .with_context(|| format!("the operator minted no key for {agent}"))
}

/// The audit store's model-call records of `ns`, as the gateway serves them to an admin.
pub fn model_records(cp: &ControlPlane, gateway: &GatewayProcess, ns: &str) -> Result<Vec<Value>> {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/audit/v1/records?namespace={ns}", gateway.url()), "-H", &format!("authorization: Bearer {}", cp.token(User::Admin))])
        .output()?;
    ensure!(out.status.success(), "the audit query failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).context("the audit answer")?;
    let records = v["records"].as_array().context("no records in the audit answer")?;
    Ok(records.iter().map(|r| r["record"].clone()).filter(|r| r["kind"] == "model_call").collect())
}

/// Rows of `query` against the SQLite ledger at `db`, read directly (what is stored, not what
/// the gateway says).
pub fn ledger_rows(db: &std::path::Path, query: &str) -> Result<Vec<Vec<Value>>> {
    let script = "import json, sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nprint(json.dumps([list(r) for r in c.execute(sys.argv[2])]))";
    let out = Command::new("python3").args(["-c", script]).arg(db).arg(query).output()?;
    anyhow::ensure!(out.status.success(), "{query}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// One test's world for model calls: the fake provider, a namespace from [`setup`] with
/// `budget` (YAML documents, or ""), the agent's key, a path for its SQLite ledger and a port
/// for the gateway.
pub struct Scene {
    pub fake: FakeProvider,
    pub ns: String,
    pub key: String,
    pub db: PathBuf,
    pub port: u16,
}

impl Scene {
    pub fn new(cp: &ControlPlane, prefix: &str, budget: &str) -> Result<Scene> {
        let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
        let (ns, key) = setup(cp, &fake, prefix, budget)?;
        let db = cp.dir().join(format!("{ns}-ledger.db"));
        let [port] = free_ports::<1>()?;
        Ok(Scene { fake, ns, key, db, port })
    }

    /// With a `Total` budget of 1 USD named `budget` (`models` is "" for every model, or
    /// `, models: [...]`).
    pub fn with_total_budget(cp: &ControlPlane, prefix: &str, budget: &str, models: &str) -> Result<Scene> {
        let yaml =
            format!("---\napiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {{name: {budget}}}\nspec: {{period: Total, hardLimitUSD: 1.0{models}}}\n");
        Scene::new(cp, prefix, &yaml)
    }

    pub fn ledger_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.db.display())
    }
}
