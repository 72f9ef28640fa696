//! How etcd and kube-apiserver are found and invoked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};

pub(crate) fn etcd_command(bin: &Path, dir: &Path, client: u16, peer: u16) -> Command {
    let client = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(bin.join("etcd"));
    cmd.arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--name", "default"])
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .arg(format!("--initial-cluster=default={peer}"))
        .args(["--log-level", "warn"])
        // The data is thrown away with the temp dir; fsync only makes startup and tests slower.
        .arg("--unsafe-no-fsync");
    cmd
}

pub(crate) fn apiserver_command(bin: &Path, dir: &Path, etcd_client: u16, port: u16) -> Command {
    let file = |name: &str| dir.join(name).into_os_string();
    let mut cmd = Command::new(bin.join("kube-apiserver"));
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg("--advertise-address=127.0.0.1")
        // No kubelets or Services to route to; the reconciler would only write an unreachable IP.
        .arg("--endpoint-reconciler-type=none")
        .arg("--tls-cert-file")
        .arg(file("serving.crt"))
        .arg("--tls-private-key-file")
        .arg(file("serving.key"))
        .arg("--client-ca-file")
        .arg(file("ca.crt"))
        .arg("--token-auth-file")
        .arg(file("tokens.csv"))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg("--api-audiences=https://kubernetes.default.svc")
        .arg("--service-account-key-file")
        .arg(file("sa.pub"))
        .arg("--service-account-signing-key-file")
        .arg(file("sa.key"))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        // No controller-manager creates the default ServiceAccounts this plugin insists on.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--cert-dir")
        .arg(dir.as_os_str());
    cmd
}

/// The last line a (cached, idempotent) build script of `e2e/scripts/` prints: where it put what
/// it built.
fn built_by(script: &str) -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    let out =
        Command::new("bash").arg(&script).stdin(Stdio::null()).stderr(Stdio::inherit()).output().with_context(|| format!("running {}", script.display()))?;
    ensure!(out.status.success(), "{} failed ({})", script.display(), out.status);
    let stdout = String::from_utf8(out.stdout).context("build script printed non-UTF-8")?;
    let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
    Ok(PathBuf::from(last.with_context(|| format!("{} printed no path", script.display()))?))
}

/// Real Helm, built from its Go module: `TOLLGATE_HELM`, else what `build-helm.sh` built.
pub fn helm() -> Result<PathBuf> {
    static HELM: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    tool(&HELM, "TOLLGATE_HELM", "build-helm.sh")
}

/// A tool the e2e tests run (a program or an install directory): the path in `env`, else what
/// `script` built or installed, from its last line of output (once per process).
pub(crate) fn tool(cell: &'static std::sync::OnceLock<Result<PathBuf, String>>, env: &str, script: &str) -> Result<PathBuf> {
    let found = cell.get_or_init(|| match std::env::var_os(env) {
        Some(path) => Ok(PathBuf::from(path)),
        None => built_by(script).map_err(|e| format!("{e:#}")),
    });
    let path = found.clone().map_err(anyhow::Error::msg)?;
    ensure!(path.exists(), "no {} at {} ({env})", script.trim_start_matches("build-").trim_end_matches(".sh"), path.display());
    Ok(path)
}

/// Argo CD's Lua engine running a health check: `TOLLGATE_ARGOCD_HEALTH`, else what
/// `build-argocd-health.sh` built.
pub fn argocd_health() -> Result<PathBuf> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    tool(&BIN, "TOLLGATE_ARGOCD_HEALTH", "build-argocd-health.sh")
}

/// krew, kubectl's plugin manager, built from its Go module by `build-krew.sh` (once per process).
pub fn krew() -> Result<PathBuf> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    tool(&BIN, "TOLLGATE_KREW", "build-krew.sh")
}

/// Debian's iptables, installed by `install-iptables.sh` when missing (once per process).
pub fn iptables() -> Result<PathBuf> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    tool(&BIN, "TOLLGATE_IPTABLES", "install-iptables.sh")
}

/// `helm template tollgate charts/tollgate` with `args`: the manifests a cluster would get.
pub fn render_chart(args: &[&str]) -> Result<String> {
    let out = Command::new(helm()?)
        .args(["template", "tollgate"])
        .arg(repo_root().join("charts/tollgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running helm template")?;
    ensure!(out.status.success(), "helm template {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).context("helm printed non-UTF-8")
}

/// `TOLLGATE_CONTROL_PLANE_DIR`, else the (idempotent, cached) build script's last stdout line.
pub(crate) fn binaries_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("TOLLGATE_CONTROL_PLANE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => built_by("build-control-plane.sh")?,
    };
    for bin in ["etcd", "kube-apiserver"] {
        ensure!(dir.join(bin).is_file(), "{} has no {bin}", dir.display());
    }
    Ok(dir)
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Loopback ports free right now and never handed out before by this process, chosen below the
/// kernel's ephemeral range. All are held until all are chosen, so they differ. Two races are
/// closed: a port given to a child that has not bound it yet looks free to the kernel, which
/// handed 32843 to an operator's admin server and then to its webhook (so this process remembers
/// every port it gave); and a port from the ephemeral range can become any client socket's local
/// port before the child binds it (the kernel picks neither outside that range). Another process
/// may still bind one first, which the child's startup error would show.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (low, high) = below_ephemeral();
    let span = u32::from(high - low);
    // Test processes running side by side start at different places.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let offset = (std::process::id().wrapping_mul(7919) ^ nanos) % span;
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    let mut chosen = 0;
    for i in 0..span {
        if chosen == N {
            break;
        }
        let port = low + u16::try_from((offset + i) % span).unwrap_or(0);
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
            given.insert(port);
            ports[chosen] = port;
            chosen += 1;
        }
    }
    ensure!(chosen == N, "no loopback port left in {low}..{high} that this process has not handed out");
    Ok(ports)
}

/// The ports below the kernel's ephemeral range, from 16384 (`ip_local_port_range` is 32768
/// and up unless changed); a range moved down leaves at least 1,024 ports all the same.
fn below_ephemeral() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let high = ephemeral_low.max(2048);
    (high.saturating_sub(16384).clamp(1024, high - 1024), high)
}

#[cfg(test)]
mod tests {
    use super::free_ports;

    /// Before the registry, a port released by one call came back from a later one often
    /// enough that two thousand calls always met a repeat (birthday odds over ~28,000 ports).
    /// None is in the range the kernel gives client sockets their ports from.
    #[test]
    fn a_port_is_never_handed_out_twice_nor_from_the_ephemeral_range() -> anyhow::Result<()> {
        let (_, ephemeral_low) = super::below_ephemeral();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let [port] = free_ports::<1>()?;
            anyhow::ensure!(seen.insert(port), "port {port} was handed out twice");
            anyhow::ensure!(port < ephemeral_low, "port {port} is in the ephemeral range (from {ephemeral_low})");
        }
        Ok(())
    }
}
