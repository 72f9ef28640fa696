//! `kubectl approve ui` as a person runs it, and headless Debian Chromium driven through
//! ChromeDriver by Selenium (installed pinned by `scripts/install-browser.sh`).

use crate::basics::wait_until;
use crate::child::Process;
use crate::components::repo_root;
use crate::control_plane::ControlPlane;
use crate::users::User;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The install directory: `venv/`, and files `chromium` and `chromedriver` naming the binaries.
pub fn browser_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::components::tool(&DIR, "TOLLGATE_BROWSER", "install-browser.sh")
}

/// A running `kubectl approve ui --no-browser` and the link it printed.
pub struct ApproveUi {
    pub process: Process,
    /// The printed link, with its one-time secret.
    pub url: String,
    /// `http://<random>.localhost:<port>`.
    pub base: String,
    pub port: u16,
}

impl ApproveUi {
    /// Starts the plugin's `ui --no-browser` as `user` with `args` and waits for the link it
    /// prints.
    pub fn start(cp: &ControlPlane, user: User, args: &[&str]) -> Result<ApproveUi> {
        let mut all = vec!["--no-browser"];
        all.extend_from_slice(args);
        Self::start_with(cp, user, &all, &[])
    }

    /// As [`ApproveUi::start`], with `args` as given and `env` added (`BROWSER`, say).
    pub fn start_with(cp: &ControlPlane, user: User, args: &[&str], env: &[(&str, &str)]) -> Result<ApproveUi> {
        let mut all = vec!["ui"];
        all.extend_from_slice(args);
        let mut cmd = cp.kubectl_approve_command(user, &all)?;
        cmd.envs(env.iter().copied());
        let log = cp.dir().join(format!("approve-ui-{user}-{}.log", crate::random_hex(4)?));
        let process = Process::spawn(cmd, log)?;
        let url = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            if let Some(status) = process.exited() {
                bail!("kubectl approve ui exited ({status}):\n{}", process.log_tail());
            }
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            Ok(text.lines().map(str::trim).find(|l| l.starts_with("http://") && l.contains(".localhost:")).map(str::to_owned))
        })?;
        let base = url.split("/?").next().context("a link with a path")?.to_owned();
        let port = base.rsplit(':').next().and_then(|p| p.parse().ok()).context("a port in the link")?;
        Ok(ApproveUi { process, url, base, port })
    }
}

/// Runs `scenario` (see `e2e/browser/drive.py`) in a fresh headless Chromium; one value per step,
/// or the failed step's error and the page it was on.
pub fn drive(scenario: &Value) -> Result<Vec<Value>> {
    let dir = browser_dir()?;
    let read = |name: &str| -> Result<String> { Ok(std::fs::read_to_string(dir.join(name))?.trim().to_owned()) };
    let work = tempfile::tempdir()?;
    let mut child = Command::new(dir.join("venv/bin/python"))
        .arg(repo_root().join("e2e/browser/drive.py"))
        .env("CHROMIUM", read("chromium")?)
        .env("CHROMEDRIVER", read("chromedriver")?)
        .env("TOLLGATE_BROWSER_WORKDIR", work.path())
        // Selenium must not look for drivers or report statistics over a network there is not.
        .env("SE_OFFLINE", "true")
        .env("SE_AVOID_STATS", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the browser driver")?;
    child.stdin.take().context("stdin")?.write_all(scenario.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<Value> = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the browser driver printed no result ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr)))?;
    if let Some(failed) = steps.last().filter(|s| s.get("error").is_some()) {
        bail!(
            "browser step {} failed: {}\npage:\n{}",
            failed["step"],
            failed["error"].as_str().unwrap_or_default(),
            failed["page"].as_str().unwrap_or_default()
        );
    }
    Ok(steps)
}
