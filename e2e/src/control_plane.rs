//! A kube-apiserver and etcd on loopback, with Tollgate's CRDs established.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;

use crate::basics::{TimedOut, log_tail, random_hex, wait_until};
use crate::components::{apiserver_command, binaries_dir, etcd_command, free_ports, repo_root};
use crate::users::{self, User};
use crate::{certs, process};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_POLL: Duration = Duration::from_millis(100);
/// kube-apiserver drains in-flight requests on SIGTERM; nothing here needs more than this.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct ControlPlane {
    dir: PathBuf,
    tmp: Mutex<Option<TempDir>>,
    /// In start order, so stopping in reverse takes the apiserver down before its etcd.
    children: Mutex<Vec<(&'static str, Child)>>,
    port: u16,
    etcd_client: u16,
    ca_pem: String,
    tokens: [String; 4],
    /// Set once `tollgate-system` and the RBAC are applied (see `install_tollgate_system`).
    pub(crate) system_installed: OnceLock<()>,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// Starts a fresh control plane and returns once every Tollgate CRD is established.
    ///
    /// The children die with the calling *thread* (PR_SET_PDEATHSIG), so keep the value on the
    /// thread that created it; [`ControlPlane::shared`] is the one to use from `#[test]`s.
    pub fn start() -> Result<ControlPlane> {
        let bin = binaries_dir()?;
        let tmp = tempfile::Builder::new().prefix("tollgate-e2e-").tempdir().context("creating the control plane's temp dir")?;
        let dir = tmp.path().to_path_buf();
        let pki = certs::generate()?;
        let tokens = [random_hex(16)?, random_hex(16)?, random_hex(16)?, random_hex(16)?];
        for (name, contents) in [
            ("ca.crt", pki.ca_pem.as_str()),
            ("serving.crt", &pki.serving_cert_pem),
            ("serving.key", &pki.serving_key_pem),
            ("sa.key", &pki.sa_private_pem),
            ("sa.pub", &pki.sa_public_pem),
            ("tokens.csv", &users::token_file(&tokens)),
        ] {
            std::fs::write(dir.join(name), contents).with_context(|| format!("writing {name}"))?;
        }
        let [etcd_client, etcd_peer, port] = free_ports()?;
        // From here on, an early return drops `cp`, which stops whatever was started.
        let cp = ControlPlane {
            dir,
            tmp: Mutex::new(Some(tmp)),
            children: Mutex::new(Vec::new()),
            port,
            etcd_client,
            ca_pem: pki.ca_pem,
            tokens,
            system_installed: OnceLock::new(),
        };
        for user in User::ALL {
            let token = cp.token(user);
            users::write_kubeconfig(&cp.kubeconfig(user), user.name(), &cp.server_url(), &cp.ca_pem, token)?;
        }
        cp.spawn("etcd", etcd_command(&bin, &cp.dir, etcd_client, etcd_peer))?;
        cp.spawn("kube-apiserver", apiserver_command(&bin, &cp.dir, etcd_client, port))?;
        cp.wait_ready()?;
        cp.install_crds()?;
        Ok(cp)
    }

    /// One control plane per test binary, started on first use and stopped when the process exits.
    ///
    /// Panics if it cannot start: every test using it would fail anyway, and the message carries
    /// the tail of the failing component's log.
    pub fn shared() -> &'static ControlPlane {
        match SHARED.get_or_init(|| start_shared().map_err(|e| format!("{e:#}"))) {
            Ok(cp) => cp,
            Err(e) => panic!("the shared control plane failed to start: {e}"),
        }
    }

    pub fn server_port(&self) -> u16 {
        self.port
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn token(&self, user: User) -> &str {
        &self.tokens[user.index()]
    }

    /// A kubeconfig authenticating as `user` (`<dir>/kubeconfig-<name>`).
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.dir.join(format!("kubeconfig-{}", user.name()))
    }

    /// The temp dir holding certificates, kubeconfigs and the components' logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the real `kubectl` as `user`; the caller judges the exit status.
    pub fn kubectl<I, S>(&self, user: User, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl (is it on PATH?)")
    }

    /// Like [`ControlPlane::kubectl`], but a failure is an error carrying kubectl's stderr.
    pub fn kubectl_ok<I, S>(&self, user: User, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let out = self.kubectl(user, &args)?;
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        ensure!(out.status.success(), "kubectl {} as {user} failed ({}): {}", shown.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        String::from_utf8(out.stdout).context("kubectl printed non-UTF-8")
    }

    /// `kubectl apply` of `yaml` in `namespace` as `user`.
    pub fn apply(&self, user: User, namespace: &str, yaml: &str) -> Result<String> {
        let path = self.apply_file(namespace, yaml)?;
        self.kubectl_ok(user, [std::ffi::OsStr::new("apply"), "-n".as_ref(), namespace.as_ref(), "-f".as_ref(), path.as_os_str()])
    }

    /// As [`ControlPlane::apply`], with kubectl's output whether or not it succeeded: what a
    /// test of a refusal reads.
    pub fn apply_output(&self, user: User, namespace: &str, yaml: &str) -> Result<Output> {
        let path = self.apply_file(namespace, yaml)?;
        self.kubectl(user, [std::ffi::OsStr::new("apply"), "-n".as_ref(), namespace.as_ref(), "-f".as_ref(), path.as_os_str()])
    }

    fn apply_file(&self, namespace: &str, yaml: &str) -> Result<std::path::PathBuf> {
        let path = self.dir().join(format!("apply-{namespace}-{}.yaml", random_hex(4)?));
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// Creates `<prefix>-<8 hex digits>` as admin and returns its name.
    pub fn create_namespace(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{}", random_hex(4)?);
        self.kubectl_ok(User::Admin, ["create", "namespace", &name])?;
        Ok(name)
    }

    /// Stops the children (SIGTERM, then SIGKILL after a grace period) and removes the temp dir.
    /// Idempotent; `Drop` and the exit hook of [`ControlPlane::shared`] call it.
    pub fn shutdown(&self) {
        let mut children = lock(&self.children);
        while let Some((_, mut child)) = children.pop() {
            process::terminate(&mut child, STOP_GRACE);
        }
        drop(children);
        if let Some(tmp) = lock(&self.tmp).take() {
            // Best effort: a leftover temp dir is no reason to fail a test run.
            let _ = tmp.close();
        }
    }

    /// The process id of a running component (`kube-apiserver` or `etcd`), to measure it.
    pub fn component_pid(&self, name: &str) -> Option<u32> {
        lock(&self.children).iter().find(|(n, _)| *n == name).map(|(_, child)| child.id())
    }

    /// Kills one component (`kube-apiserver` or `etcd`) at once, to test what happens without it.
    pub fn kill_component(&self, name: &str) -> Result<()> {
        let mut children = lock(&self.children);
        let i = children.iter().position(|(n, _)| *n == name).with_context(|| format!("no running component {name}"))?;
        let (_, mut child) = children.remove(i);
        drop(children);
        process::terminate(&mut child, Duration::ZERO);
        Ok(())
    }

    /// Stops kube-apiserver and starts it again on the same port and etcd data, as a restart
    /// in a cluster would; returns once it is ready. Watches of every client break and resume.
    pub fn restart_apiserver(&self) -> Result<()> {
        {
            let mut children = lock(&self.children);
            if let Some(i) = children.iter().position(|(n, _)| *n == "kube-apiserver") {
                let (_, mut child) = children.remove(i);
                drop(children);
                process::terminate(&mut child, STOP_GRACE);
            }
        }
        let bin = binaries_dir()?;
        self.spawn("kube-apiserver", apiserver_command(&bin, &self.dir, self.etcd_client, self.port))?;
        self.wait_ready()
    }

    fn spawn(&self, name: &'static str, mut cmd: Command) -> Result<()> {
        let child = process::spawn_guarded(&mut cmd, &self.log_path(name))?;
        lock(&self.children).push((name, child));
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn log_context(&self, name: &str) -> String {
        let path = self.log_path(name);
        format!("last lines of {}:\n{}", path.display(), log_tail(&path))
    }

    /// Fails fast, with the dead component's log, if a child has exited.
    fn check_children(&self) -> Result<()> {
        for (name, child) in lock(&self.children).iter_mut() {
            if let Some(status) = child.try_wait().context("polling a child")? {
                bail!("{name} exited during startup ({status}); {}", self.log_context(name));
            }
        }
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let mut last = String::new();
        let ready = wait_until(READY_TIMEOUT, READY_POLL, || {
            self.check_children()?;
            let out = self.kubectl(User::Admin, ["get", "--raw", "/readyz", "--request-timeout=2s"])?;
            if out.status.success() {
                return Ok(Some(()));
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Ok(None)
        });
        match ready {
            Err(e) if e.is::<TimedOut>() => Err(e.context(format!("kube-apiserver not ready (last /readyz: {last}); {}", self.log_context("kube-apiserver")))),
            other => other,
        }
    }

    fn install_crds(&self) -> Result<()> {
        let crds = repo_root().join("crds");
        let crds = crds.to_str().context("non-UTF-8 repo path")?;
        let applied = self.kubectl_ok(User::Admin, ["apply", "--server-side", "-o", "name", "-f", crds])?;
        let names: Vec<&str> = applied.split_whitespace().collect();
        ensure!(!names.is_empty(), "no CRDs found in {crds}");
        let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
        args.extend(names);
        self.kubectl_ok(User::Admin, args)?;
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the control plane on a thread that never exits: PR_SET_PDEATHSIG fires when the spawning
/// thread ends, and libtest runs each test on a short-lived thread.
fn start_shared() -> Result<ControlPlane> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-control-plane".into())
        .spawn(move || {
            // A send error means the receiver is gone; the control plane is then dropped here.
            let _ = tx.send(ControlPlane::start());
            loop {
                std::thread::park();
            }
        })
        .context("spawning the control-plane thread")?;
    let cp = rx.recv().context("the control-plane thread died")??;
    // Statics are never dropped; the exit hook is what stops the children and removes the dir.
    process::at_exit(shutdown_shared)?;
    Ok(cp)
}

extern "C" fn shutdown_shared() {
    // Unwinding out of an `extern "C"` fn aborts; a failed cleanup must not turn a pass into a crash.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(cp)) = SHARED.get() {
            cp.shutdown();
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves the data consistent (a Vec and an Option).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
