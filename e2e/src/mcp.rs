//! Real MCP parts nobody here wrote: the reference server-everything and clients built on the
//! official Python and TypeScript SDKs (installed pinned by `scripts/install-mcp-tools.sh`).

use crate::basics::wait_until;
use crate::child::Process;
use crate::components::{free_ports, repo_root};
use crate::control_plane::ControlPlane;
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The install directory of the pinned MCP tools.
pub fn tools_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::components::tool(&DIR, "TOLLGATE_MCP_TOOLS", "install-mcp-tools.sh")
}

/// `@modelcontextprotocol/server-everything` on a loopback port.
pub struct Everything {
    pub process: Process,
    pub port: u16,
}

impl Everything {
    pub fn start(cp: &ControlPlane) -> Result<Everything> {
        let dir = tools_dir()?;
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("e2e/scripts/run-everything-server.sh")).arg(port.to_string()).env("TOLLGATE_MCP_TOOLS", &dir);
        let process = start_server(cp, "server-everything", cmd, port)?;
        Ok(Everything { process, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// Starts an MCP server process and waits until it accepts connections on `port`, failing
/// early, with its log, if it exits.
fn start_server(cp: &ControlPlane, name: &str, cmd: Command, port: u16) -> Result<Process> {
    let process = Process::spawn(cmd, cp.dir().join(format!("{name}-{port}.log")))?;
    wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        if let Some(s) = process.exited() {
            anyhow::bail!("{name} exited ({s}):\n{}", process.log_tail());
        }
        Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(()))
    })?;
    Ok(process)
}

/// Runs a scenario with the official Python SDK's client; one JSON value per step.
pub fn py_client(url: &str, scenario: &Value) -> Result<Vec<Value>> {
    py_client_with_timeout(url, scenario, 60)
}

/// As [`py_client`], with a per-request timeout (a person deciding takes longer than a test).
pub fn py_client_with_timeout(url: &str, scenario: &Value, seconds: u64) -> Result<Vec<Value>> {
    let dir = tools_dir()?;
    run_client(Command::new(dir.join("venv/bin/python")).arg(repo_root().join("e2e/clients/py_client.py")), url, scenario, seconds)
}

/// An MCP server on the official Python SDK that answers only requests bearing `token`
/// (`e2e/servers/auth_echo.py`); its tool `whoami` says which token it saw.
pub struct AuthEcho {
    pub process: Process,
    pub port: u16,
}

impl AuthEcho {
    pub fn start(cp: &ControlPlane, token: &str) -> Result<AuthEcho> {
        let dir = tools_dir()?;
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new(dir.join("venv/bin/python"));
        cmd.arg(repo_root().join("e2e/servers/auth_echo.py")).arg(port.to_string()).arg(token);
        let process = start_server(cp, "auth-echo", cmd, port)?;
        Ok(AuthEcho { process, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// The hostile MCP server of `e2e/servers/hostile.py`: slow, dribbling, huge, endless and
/// malformed answers, one tool each.
pub struct Hostile {
    pub process: Process,
    pub port: u16,
}

impl Hostile {
    pub fn start(cp: &ControlPlane) -> Result<Hostile> {
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("e2e/servers/hostile.py")).arg(port.to_string());
        let process = start_server(cp, "hostile", cmd, port)?;
        Ok(Hostile { process, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// A stateless MCP server on the official Python SDK 2.x (`e2e/servers/modern.py`), speaking
/// the 2026-07-28 revision (and the handshake for older clients).
pub struct Modern {
    pub process: Process,
    pub port: u16,
    scheme: &'static str,
}

impl Modern {
    pub fn start(cp: &ControlPlane) -> Result<Modern> {
        Modern::start_with(cp, None, None)
    }

    /// Serving HTTPS with a certificate of `pki`'s private CA.
    pub fn start_tls(cp: &ControlPlane, pki: &crate::certs::ServerPki) -> Result<Modern> {
        Modern::start_with(cp, Some(pki), None)
    }

    /// Accepting requests that name it `host` (the address a pod reaches it at through a portal).
    pub fn start_reached_as(cp: &ControlPlane, host: &str) -> Result<Modern> {
        Modern::start_with(cp, None, Some(host))
    }

    /// On `port`, as it is after an upgrade (`MODERN_VARIANT=2`: other tools, another schema).
    pub fn start_upgraded_on(cp: &ControlPlane, port: u16) -> Result<Modern> {
        Modern::start_on(cp, port, None, None, &[("MODERN_VARIANT", "2")])
    }

    fn start_with(cp: &ControlPlane, pki: Option<&crate::certs::ServerPki>, public: Option<&str>) -> Result<Modern> {
        let [port] = free_ports::<1>()?;
        Modern::start_on(cp, port, pki, public, &[])
    }

    fn start_on(cp: &ControlPlane, port: u16, pki: Option<&crate::certs::ServerPki>, public: Option<&str>, env: &[(&str, &str)]) -> Result<Modern> {
        let dir = tools_dir()?;
        let mut cmd = Command::new(dir.join("venv/bin/python"));
        cmd.envs(env.iter().copied());
        if let Some(host) = public {
            cmd.env("MODERN_PUBLIC_HOST", host);
        }
        cmd.arg(repo_root().join("e2e/servers/modern.py")).arg(port.to_string());
        if let Some(pki) = pki {
            let (cert, key) = (cp.dir().join(format!("modern-{port}.crt")), cp.dir().join(format!("modern-{port}.key")));
            std::fs::write(&cert, &pki.cert_pem)?;
            std::fs::write(&key, &pki.key_pem)?;
            cmd.arg("127.0.0.1").arg(&cert).arg(&key);
        }
        let process = start_server(cp, "modern", cmd, port)?;
        Ok(Modern { process, port, scheme: if pki.is_some() { "https" } else { "http" } })
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/mcp", self.scheme, self.port)
    }
}

/// A stateless 2026-07-28 server with the tasks extension (`e2e/servers/tasks.py`), which keeps
/// every `tools/call` it received.
pub struct TasksServer {
    pub process: Process,
    pub port: u16,
}

impl TasksServer {
    pub fn start(cp: &ControlPlane) -> Result<TasksServer> {
        let [port] = free_ports::<1>()?;
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("e2e/servers/tasks.py")).arg(port.to_string());
        let process = start_server(cp, "tasks", cmd, port)?;
        Ok(TasksServer { process, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Every `tools/call` the server received: `{"name", "arguments", "declared_tasks", "traceparent"}`.
    pub fn calls(&self) -> Result<Vec<Value>> {
        let answer = crate::raw_mcp::request("GET", &format!("http://127.0.0.1:{}/calls", self.port), &[], None)?;
        ensure!(answer.status == 200, "GET /calls answered {}", answer.status);
        Ok(answer.messages)
    }
}

/// Runs a scenario with the official Python SDK 2.x `Client` in `mode` (`2026-07-28`, `auto`,
/// `legacy`): `e2e/clients/py_modern_client.py`.
pub fn py_modern_client(url: &str, mode: &str, scenario: &Value) -> Result<Vec<Value>> {
    py_modern_client_with(url, mode, &[], scenario)
}

/// As [`py_modern_client`], with options of the client (`--elicit JSON`).
pub fn py_modern_client_with(url: &str, mode: &str, args: &[&str], scenario: &Value) -> Result<Vec<Value>> {
    let dir = tools_dir()?;
    let mut cmd = Command::new(dir.join("venv/bin/python"));
    cmd.arg(repo_root().join("e2e/clients/py_modern_client.py")).args(["--mode", mode]).args(args);
    run_client(&mut cmd, url, scenario, 60)
}

/// As [`py_client`], with options of the client (`--sampling-reply`, `--elicit-accept`, …).
pub fn py_client_with_args(url: &str, args: &[&str], scenario: &Value) -> Result<Vec<Value>> {
    let dir = tools_dir()?;
    run_client(Command::new(dir.join("venv/bin/python")).arg(repo_root().join("e2e/clients/py_client.py")).args(args), url, scenario, 60)
}

/// Runs a scenario with the official TypeScript SDK's client.
pub fn ts_client(url: &str, scenario: &Value) -> Result<Vec<Value>> {
    let dir = tools_dir()?;
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("e2e/clients/ts_client.mjs")).env("NODE_PATH", dir.join("node/node_modules"));
    run_client(&mut cmd, url, scenario, 60)
}

fn run_client(cmd: &mut Command, url: &str, scenario: &Value, timeout: u64) -> Result<Vec<Value>> {
    let out = cmd.args(["--timeout", &timeout.to_string(), url, &scenario.to_string()]).stdin(Stdio::null()).output().context("running an MCP client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    ensure!(out.status.success(), "MCP client failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(lines)
}

/// The text of a `call_tool` step's result, and whether it was an error.
pub fn tool_text(step: &Value) -> Result<(String, bool)> {
    // A step without a result (an error, or nothing at all) is no answer: a check that the
    // text lacks something must not pass on it.
    let result = step.get("result").filter(|r| r.is_object()).with_context(|| format!("no tools/call result in {step}"))?;
    let text = result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n");
    Ok((text, result["isError"].as_bool().unwrap_or(false)))
}
