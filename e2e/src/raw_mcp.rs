//! MCP's Streamable HTTP spoken by hand (through `curl`), for what the SDK clients do not expose:
//! JSON-RPC batches, the exact status codes, and the server's GET stream.

use crate::Process;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// One answer: its status, the session it named, and its JSON-RPC messages (JSON or SSE).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub session: Option<String>,
    pub messages: Vec<Value>,
}

impl Answer {
    /// The response to the request with `id`.
    pub fn response(&self, id: &Value) -> Option<&Value> {
        self.messages.iter().find(|m| m.get("id") == Some(id) && m.get("method").is_none())
    }
}

/// A session opened by hand on `url`.
pub struct RawSession {
    pub url: String,
    pub session: Option<String>,
    pub version: String,
}

impl RawSession {
    /// `initialize` and `notifications/initialized`, as protocol `version`.
    pub fn open(url: &str, version: &str) -> Result<RawSession> {
        let mut s = RawSession { url: url.to_owned(), session: None, version: version.to_owned() };
        let init = s.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "tollgate-e2e-raw", "version": "1"}}}))?;
        if init.response(&json!(0)).and_then(|r| r.get("result")).is_none() {
            bail!("initialize failed: {init:?}");
        }
        s.session = init.session;
        s.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(s)
    }

    fn headers(&self) -> Vec<String> {
        let mut h = vec!["content-type: application/json".to_owned(), "accept: application/json, text/event-stream".to_owned()];
        h.push(format!("mcp-protocol-version: {}", self.version));
        if let Some(id) = &self.session {
            h.push(format!("mcp-session-id: {id}"));
        }
        h
    }

    pub fn post(&self, body: &Value) -> Result<Answer> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-i", "--max-time", "60", "-X", "POST", &self.url, "--data-binary", &body.to_string()]);
        for h in self.headers() {
            cmd.args(["-H", &h]);
        }
        let out = cmd.output().context("running curl")?;
        parse_answer(&String::from_utf8_lossy(&out.stdout))
    }

    /// `GET` of the server stream, copied by a `curl` process into `log`.
    pub fn open_stream(&self, log: &Path) -> Result<Process> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-N", "-i", &self.url]);
        for h in self.headers() {
            cmd.args(["-H", &h]);
        }
        Process::spawn(cmd, log.to_path_buf())
    }
}

fn parse_answer(raw: &str) -> Result<Answer> {
    let (head, body) = raw.split_once("\r\n\r\n").with_context(|| format!("no HTTP answer: {raw:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("no status in {head:?}"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
    };
    let sse = header("content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    Ok(Answer { status, session: header("mcp-session-id"), messages: messages(body, sse) })
}

/// The JSON-RPC messages of a body: SSE `data:` lines, or one JSON value (a batch's array
/// flattened).
pub fn messages(body: &str, sse: bool) -> Vec<Value> {
    if sse {
        return body.lines().filter_map(|l| l.strip_prefix("data:")).filter_map(|d| serde_json::from_str(d.trim()).ok()).collect();
    }
    match serde_json::from_str(body) {
        Ok(Value::Array(all)) => all,
        Ok(one) => vec![one],
        Err(_) => Vec::new(),
    }
}
