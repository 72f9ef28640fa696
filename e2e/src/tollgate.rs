//! Tollgate's own processes against the control plane: the operator (and later the sidecar and
//! gateway), each running as its service account, as it would in a cluster.

pub use crate::child::Process;
use crate::components::{free_ports, repo_root};
use crate::control_plane::ControlPlane;
use crate::users::User;
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub const OPERATOR_USER: &str = "system:serviceaccount:tollgate-system:tollgate-operator";

/// The workspace's debug binary `name` (of `package`). The first call runs
/// `cargo build --workspace --bins`, a no-op after `hack/test.sh` built everything; building the
/// whole workspace (not `-p package`) keeps cargo's feature resolution, and so its artifacts, the
/// same as that build's.
///
/// With `TOLLGATE_BIN_DIR` set, the binaries are taken from there instead, unbuilt: the suite
/// then runs against another build (an older commit's, to see a new test fail before its fix).
pub fn binary(package: &str, name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TOLLGATE_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        ensure!(path.is_file(), "{} (package {package}) missing from TOLLGATE_BIN_DIR", path.display());
        return Ok(path);
    }
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(repo_root())
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("cargo build --workspace --bins failed ({status})")) }
    });
    built.clone().map_err(anyhow::Error::msg)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    ensure!(path.is_file(), "{} (package {package}) missing after the build", path.display());
    Ok(path)
}

/// An example values file of the chart (`charts/tollgate/ci/`), as a path argument.
pub fn chart_values(name: &str) -> Result<String> {
    let path = repo_root().join("charts/tollgate/ci").join(name);
    ensure!(path.is_file(), "no values file {}", path.display());
    Ok(path.to_str().context("path")?.to_owned())
}

impl ControlPlane {
    /// The chart, rendered by real Helm into `tollgate-system` and applied, once: the operator
    /// runs here under exactly the service account and RBAC a cluster gets from `helm install`,
    /// so a rule the chart lacks fails a test. (Its Deployment and Service are stored but never
    /// run: there is no kubelet; the harness runs the operator as a process instead, with the
    /// webhook reached by URL, as `ci/out-of-cluster-values.yaml` configures.)
    pub fn install_tollgate_system(&self) -> Result<()> {
        if self.system_installed.get().is_some() {
            return Ok(());
        }
        let rendered = crate::components::render_chart(&["--namespace", "tollgate-system", "-f", &chart_values("out-of-cluster-values.yaml")?])?;
        let path = self.dir().join("tollgate-chart.yaml");
        std::fs::write(&path, rendered)?;
        if !self.kubectl(User::Admin, ["get", "namespace", "tollgate-system"])?.status.success() {
            self.kubectl_ok(User::Admin, ["create", "namespace", "tollgate-system"])?;
        }
        self.kubectl_ok(User::Admin, ["apply", "--server-side", "-f", path.to_str().context("path")?])?;
        // Approvers get the approver role everywhere; which requests they may decide is the
        // workflow's business, checked by the webhook.
        self.kubectl_ok(User::Admin, ["create", "clusterrolebinding", "tollgate-approvers", "--clusterrole=tollgate-approver", "--group=tollgate:approvers"])?;
        let _ = self.system_installed.set(());
        Ok(())
    }

    /// An agent's service account with the agent roles (created once), and a kubeconfig for it.
    pub fn agent_identity(&self, namespace: &str, service_account: &str) -> Result<PathBuf> {
        self.install_tollgate_system()?;
        let exists = self.kubectl(User::Admin, ["get", "serviceaccount", service_account, "-n", namespace])?.status.success();
        if !exists {
            self.kubectl_ok(User::Admin, ["create", "serviceaccount", service_account, "-n", namespace])?;
            let subject = format!("--serviceaccount={namespace}:{service_account}");
            self.kubectl_ok(
                User::Admin,
                ["create", "rolebinding", &format!("{service_account}-tollgate-agent"), "-n", namespace, "--clusterrole=tollgate-agent", &subject],
            )?;
            self.kubectl_ok(
                User::Admin,
                ["create", "clusterrolebinding", &format!("{namespace}-{service_account}-tollgate-agent"), "--clusterrole=tollgate-agent-cluster", &subject],
            )?;
        }
        self.service_account_kubeconfig(namespace, service_account)
    }

    /// `kubectl ARGS` as the agent `agent` (a `ManagedAgent` running as `service_account`,
    /// created if missing), as its sidecar would act: requests are created only that way.
    pub fn kubectl_as_agent(&self, namespace: &str, agent: &str, service_account: &str, args: &[&str]) -> Result<std::process::Output> {
        let kubeconfig = self.agent_identity(namespace, service_account)?;
        if !self.kubectl(User::Admin, ["get", "managedagent", agent, "-n", namespace])?.status.success() {
            let ma = format!(
                r#"{{"apiVersion":"tollgate.dev/v1alpha1","kind":"ManagedAgent","metadata":{{"name":"{agent}"}},"spec":{{"selector":{{"matchLabels":{{"app":"{agent}"}}}},"serviceAccountName":"{service_account}","mcpServers":["*"]}}}}"#
            );
            let path = self.dir().join(format!("{namespace}-agent-{agent}.json"));
            std::fs::write(&path, ma)?;
            self.kubectl_ok(User::Admin, ["apply", "-n", namespace, "-f", path.to_str().context("path")?])?;
        }
        Command::new("kubectl").arg("--kubeconfig").arg(&kubeconfig).args(["-n", namespace]).args(args).output().context("running kubectl as the agent")
    }

    /// A kubeconfig for a service account, with a token from the TokenRequest API.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.kubectl_ok(User::Admin, ["create", "token", name, "-n", namespace, "--duration=24h"])?;
        let path = self.dir().join(format!("kubeconfig-sa-{namespace}-{name}"));
        crate::users::write_kubeconfig(&path, &format!("{namespace}-{name}"), &self.server_url(), self.ca_pem(), token.trim())?;
        Ok(path)
    }
}

/// A running `tollgate-operator`. Dropping it stops the process.
pub struct Operator {
    pub process: Process,
    pub webhook_url: String,
    pub admin_url: String,
    /// Where this replica itself serves the webhooks.
    pub webhook_port: u16,
}

impl Operator {
    /// Starts the operator as `tollgate-system/tollgate-operator` and waits until it is ready
    /// and its webhook answers.
    pub fn start(cp: &ControlPlane) -> Result<Operator> {
        let [webhook] = free_ports::<1>()?;
        Operator::start_with(cp, webhook, &[])
    }

    /// As [`Operator::start`], configured by `env` as its Deployment would be.
    pub fn start_with_env(cp: &ControlPlane, env: &[(&str, &str)]) -> Result<Operator> {
        let [webhook] = free_ports::<1>()?;
        Operator::start_listening(cp, webhook, webhook, &[], env)
    }

    /// As [`Operator::start`], on a given webhook port and with more flags (replicas that share
    /// one address pass `--webhook-reuse-port`).
    pub fn start_with(cp: &ControlPlane, webhook: u16, flags: &[&str]) -> Result<Operator> {
        Operator::start_listening(cp, webhook, webhook, flags, &[])
    }

    /// A replica serving on `webhook`, behind a balancer on `url_port` (the webhook
    /// configuration's address); configured by environment variables as a Deployment's pods are
    /// (a build that lacks one still starts).
    pub fn start_behind(cp: &ControlPlane, webhook: u16, url_port: u16, env: &[(&str, &str)]) -> Result<Operator> {
        Operator::start_listening(cp, webhook, url_port, &[], env)
    }

    fn start_listening(cp: &ControlPlane, webhook: u16, url_port: u16, flags: &[&str], env: &[(&str, &str)]) -> Result<Operator> {
        cp.install_tollgate_system()?;
        let bin = binary("tollgate-operator", "tollgate-operator")?;
        let kubeconfig = cp.service_account_kubeconfig("tollgate-system", "tollgate-operator")?;
        let [admin] = free_ports::<1>()?;
        let webhook_url = format!("https://127.0.0.1:{url_port}");
        let admin_url = format!("http://127.0.0.1:{admin}");
        let log = cp.dir().join(format!("operator-{webhook}-{admin}.log"));
        let mut cmd = Command::new(&bin);
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,tollgate_operator=debug")
            // Discovery refreshes often enough for a test to see a server change.
            .env("TOLLGATE_DISCOVERY_INTERVAL_SECONDS", "5")
            // The fake providers speak plain HTTP on loopback.
            .env("TOLLGATE_ALLOW_HTTP_PROVIDERS", "true")
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook}")])
            .args(["--webhook-url", &webhook_url])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(flags)
            .envs(env.iter().copied());
        let process = Process::spawn(cmd, log)?;
        process.wait_http_ok("the operator", admin, "/readyz")?;
        Ok(Operator { process, webhook_url, admin_url, webhook_port: webhook })
    }

    pub fn stop(&self) {
        self.process.stop();
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// How a sidecar process is started.
#[derive(Clone, Copy)]
pub enum Launch<'a> {
    Direct,
    /// Pinned to one CPU (benchmarks).
    Pinned(usize),
    /// Inside a network namespace (transparent mode); its admin port is exposed to the host.
    In(&'a crate::netns::NetNs),
    /// Its stdout piped into the shell command given (a reader that stalls, say), its log its
    /// stderr alone.
    StdoutInto(&'a str),
}

/// A running `tollgate-sidecar` for one agent, as its service account.
pub struct Sidecar {
    pub process: Process,
    /// `http://127.0.0.1:PORT`; MCP is at `{base}/mcp/<server>`.
    pub base: String,
    pub admin_port: u16,
    /// Its credentials directory (see [`Sidecar::mount_secret`]).
    pub credentials: PathBuf,
}

impl Sidecar {
    /// Gives `namespace/service_account` the agent roles and starts a sidecar as it.
    pub fn start(cp: &ControlPlane, namespace: &str, agent: &str, service_account: &str, pod: &str) -> Result<Sidecar> {
        let bin = binary("tollgate-sidecar", "tollgate-sidecar")?;
        Sidecar::start_binary(cp, namespace, agent, service_account, pod, &bin, Launch::Direct, &[], &[])
    }

    /// As [`Sidecar::start`], with more command-line flags.
    pub fn start_with(cp: &ControlPlane, namespace: &str, agent: &str, service_account: &str, pod: &str, flags: &[&str]) -> Result<Sidecar> {
        let bin = binary("tollgate-sidecar", "tollgate-sidecar")?;
        Sidecar::start_binary(cp, namespace, agent, service_account, pod, &bin, Launch::Direct, flags, &[])
    }

    /// As [`Sidecar::start`], configured by environment variables as an injected sidecar is (a
    /// build that lacks one still starts, and shows what it does without it).
    pub fn start_with_env(cp: &ControlPlane, namespace: &str, agent: &str, service_account: &str, pod: &str, env: &[(&str, &str)]) -> Result<Sidecar> {
        let bin = binary("tollgate-sidecar", "tollgate-sidecar")?;
        Sidecar::start_binary(cp, namespace, agent, service_account, pod, &bin, Launch::Direct, &[], env)
    }

    /// As [`Sidecar::start`], with a given build, launched as `launch` says.
    #[allow(clippy::too_many_arguments)]
    pub fn start_binary(
        cp: &ControlPlane,
        namespace: &str,
        agent: &str,
        service_account: &str,
        pod: &str,
        bin: &Path,
        launch: Launch<'_>,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Sidecar> {
        let kubeconfig = cp.agent_identity(namespace, service_account)?;
        let [listen, admin] = free_ports::<2>()?;
        let log = cp.dir().join(format!("sidecar-{namespace}-{listen}.log"));
        // What the injection webhook mounts from Secrets, into the sidecar's container only.
        let credentials = cp.dir().join(format!("credentials-{namespace}-{listen}"));
        std::fs::create_dir_all(&credentials)?;
        let mut cmd = match launch {
            Launch::Pinned(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(bin);
                c
            }
            Launch::In(ns) => {
                // The sidecar inside reaches the API server at the address its kubeconfig names.
                ns.bring_in(cp.server_port())?;
                ns.command(bin)
            }
            Launch::Direct => Command::new(bin),
            Launch::StdoutInto(reader) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("\"$0\" \"$@\" | {reader}")]).arg(bin);
                c
            }
        };
        // A pinned sidecar is being measured: it logs as in production (JSON, at info).
        let measured = matches!(launch, Launch::Pinned(_));
        let log_filter = if measured { "info" } else { "info,tollgate_sidecar=debug" };
        if measured {
            cmd.env("TOLLGATE_LOG_JSON", "true");
        }
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", log_filter)
            // As injection sets them: the sidecar measured is the sidecar deployed.
            .envs(tollgate_core::k8s::inject::SIDECAR_ALLOCATOR_ENV.iter().copied())
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--agent", agent, "--namespace", namespace, "--pod", pod])
            .args(["--progress-interval-seconds", "1"])
            .arg("--credentials-dir")
            .arg(&credentials)
            .args(flags)
            .envs(env.iter().copied());
        let process = Process::spawn(cmd, log)?;
        let admin = match launch {
            Launch::In(ns) => ns.expose(admin)?,
            _ => admin,
        };
        process.wait_http_ok("the sidecar", admin, "/readyz")?;
        Ok(Sidecar { process, base: format!("http://127.0.0.1:{listen}"), admin_port: admin, credentials })
    }

    /// Puts `value` where a mounted Secret `secret` would show its `key` to this sidecar.
    pub fn mount_secret(&self, secret: &str, key: &str, value: &str) -> Result<()> {
        let dir = self.credentials.join(secret);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(key), value)?;
        Ok(())
    }

    pub fn url(&self, server: &str) -> String {
        format!("{}/mcp/{server}", self.base)
    }

    /// The audit records the sidecar wrote to stdout so far. An unreadable log, or a JSON line
    /// that does not parse (but the last, which may be half written), is an error: a record
    /// dropped here could hide the very record a test looks for, or its absence.
    pub fn audit_records(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(&self.process.log).with_context(|| format!("reading {}", self.process.log.display()))?;
        let complete = if text.ends_with('\n') { text.as_str() } else { text.rsplit_once('\n').map_or("", |(done, _)| done) };
        complete.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).with_context(|| format!("an unreadable log line: {l}"))).collect()
    }

    /// The audit records once `done` holds for them (the sidecar writes them within milliseconds).
    pub fn wait_audit(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Result<Vec<serde_json::Value>> {
        let mut last = Vec::new();
        crate::basics::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            last = self.audit_records()?;
            Ok(done(&last).then(|| last.clone()))
        })
        .with_context(|| format!("audit records so far: {last:?}"))
    }
}

impl ControlPlane {
    /// Real `kubectl approve …` as `user`, with this build of the plugin first on PATH.
    pub fn kubectl_approve(&self, user: User, args: &[&str]) -> Result<std::process::Output> {
        self.kubectl_approve_command(user, args)?.output().context("running kubectl approve")
    }

    /// The command [`ControlPlane::kubectl_approve`] runs, for callers that spawn it.
    pub fn kubectl_approve_command(&self, user: User, args: &[&str]) -> Result<Command> {
        let path = plugin_path()?;
        // Flags after the plugin name: kubectl looks for a plugin only before the first flag.
        let mut cmd = Command::new("kubectl");
        cmd.arg("approve")
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .env("PATH", path)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null());
        Ok(cmd)
    }
}

/// `PATH` with this build's `kubectl-approve` first, so `kubectl approve` finds it.
pub fn plugin_path() -> Result<std::ffi::OsString> {
    let plugin = binary("tollgate-cli", "kubectl-approve")?;
    let dir = plugin.parent().context("plugin directory")?.to_path_buf();
    Ok(std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))?)
}

/// `PATH` with a directory `dir` first that holds this build's plugin under both names kubectl
/// looks for: `kubectl-approve` and `kubectl_complete-approve` (its completion).
pub fn plugin_path_with_completion(dir: &std::path::Path) -> Result<std::ffi::OsString> {
    let plugin = binary("tollgate-cli", "kubectl-approve")?;
    std::os::unix::fs::symlink(&plugin, dir.join("kubectl-approve"))?;
    std::os::unix::fs::symlink(&plugin, dir.join("kubectl_complete-approve"))?;
    Ok(std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))?)
}
