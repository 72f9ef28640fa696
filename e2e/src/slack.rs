//! `e2e/servers/fake_slack.py` (Slack's Web API, a webhook receiver and an SMTP server, every
//! call recorded) and `e2e/clients/slack_click.py` (interactions signed as Slack signs them).

use crate::child::Process;
use crate::components::{free_ports, repo_root};
use crate::{ControlPlane, wait_until};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

pub const BOT_TOKEN: &str = "xoxb-e2e-bot-token-0123456789";
pub const SIGNING_SECRET: &str = "e2e-slack-signing-secret-0123456789";
pub const HOOK_SECRET: &str = "e2e-webhook-secret-0123456789";

pub struct FakeSlack {
    pub process: Process,
    pub port: u16,
    pub smtp_port: u16,
}

impl FakeSlack {
    /// The first `hook_failures` webhook deliveries are answered 503.
    pub fn start(cp: &ControlPlane, hook_failures: u32) -> Result<FakeSlack> {
        let [port, smtp_port] = free_ports::<2>()?;
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("e2e/servers/fake_slack.py")).args([
            &port.to_string(),
            &smtp_port.to_string(),
            BOT_TOKEN,
            HOOK_SECRET,
            &hook_failures.to_string(),
        ]);
        let process = Process::spawn(cmd, cp.dir().join(format!("fake-slack-{port}.log")))?;
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            if let Some(s) = process.exited() {
                bail!("the fake Slack exited ({s}): {}", process.log_tail());
            }
            let both = [port, smtp_port].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            Ok(both.then_some(()))
        })?;
        Ok(FakeSlack { process, port, smtp_port })
    }

    /// Slack's Web API base URL (`…/api`), as `--slack-api-url` takes it.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// Every call recorded so far: `{path, headers, body, …}`; mail as `{path: "smtp", to, data}`.
    pub fn calls(&self) -> Result<Vec<Value>> {
        let out = Command::new("curl").args(["-s", "--max-time", "5", &format!("http://127.0.0.1:{}/calls", self.port)]).output()?;
        let v: Value = serde_json::from_slice(&out.stdout).context("the fake Slack's /calls")?;
        Ok(v["calls"].as_array().cloned().unwrap_or_default())
    }

    /// Waits for calls matching `want`; they all, once there is at least one.
    pub fn wait_calls(&self, what: &str, want: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
        let mut seen = 0;
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            let all = self.calls()?;
            seen = all.len();
            let matching: Vec<Value> = all.into_iter().filter(|c| want(c)).collect();
            Ok((!matching.is_empty()).then_some(matching))
        })
        .with_context(|| format!("the fake Slack never got {what} ({seen} calls: {})", self.calls().map(|c| Value::from(c).to_string()).unwrap_or_default()))
    }
}

/// Sends a Slack interaction `payload` to the gateway's `/slack/interactions`, signed with
/// `SIGNING_SECRET` unless `options` say otherwise (`age`, `secret`, `times`); each answer.
pub fn click(gateway_url: &str, payload: &Value, options: &Value) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .arg(repo_root().join("e2e/clients/slack_click.py"))
        .arg(format!("{gateway_url}/slack/interactions"))
        .arg(SIGNING_SECRET)
        .arg(payload.to_string())
        .arg(options.to_string())
        .output()
        .context("running slack_click.py")?;
    anyhow::ensure!(out.status.success(), "slack_click.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))).collect()
}
