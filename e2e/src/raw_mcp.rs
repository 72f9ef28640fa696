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
    /// What `curl` runs under (e.g. `nsenter … setpriv …`: another network namespace and user).
    pub runner: Vec<String>,
}

impl RawSession {
    /// `initialize` and `notifications/initialized`, as protocol `version`.
    pub fn open(url: &str, version: &str) -> Result<RawSession> {
        RawSession::open_via(&[], url, version)
    }

    /// As [`RawSession::open`], with every `curl` run under `runner`.
    pub fn open_via(runner: &[String], url: &str, version: &str) -> Result<RawSession> {
        let mut s = RawSession { url: url.to_owned(), session: None, version: version.to_owned(), runner: runner.to_vec() };
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
        self.send("POST", Some(&body.to_string()), &[])
    }

    /// A request of any method on the session, with a body as given byte for byte (duplicate
    /// keys and all) and headers added to (or overriding) the session's.
    pub fn send(&self, method: &str, body: Option<&str>, extra_headers: &[&str]) -> Result<Answer> {
        let mut headers = self.headers();
        headers.extend(extra_headers.iter().map(|h| (*h).to_owned()));
        request_via(&self.runner, method, &self.url, &headers, body)
    }

    /// A POST that hangs up after `seconds`, as a client that goes away does; what it got so far.
    pub fn post_and_hang_up(&self, body: &Value, seconds: u64) -> Result<String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-i", "--max-time", &seconds.to_string(), "-X", "POST", &self.url, "--data-binary", &body.to_string()]);
        for h in self.headers() {
            cmd.args(["-H", &h]);
        }
        let out = cmd.output().context("running curl")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// One request by `curl`, whatever its method, headers and body; a GET stream is cut after 3 s.
pub fn request(method: &str, url: &str, headers: &[String], body: Option<&str>) -> Result<Answer> {
    request_via(&[], method, url, headers, body)
}

/// As [`request`], with `curl` run under `runner`.
pub fn request_via(runner: &[String], method: &str, url: &str, headers: &[String], body: Option<&str>) -> Result<Answer> {
    let mut cmd = match runner.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    let max_time = if method == "GET" { "3" } else { "60" };
    cmd.args(["-s", "-i", "--max-time", max_time, "-X", method, url]);
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().context("running curl")?;
    parse_answer(&String::from_utf8_lossy(&out.stdout))
}

impl Answer {
    /// The message of the first JSON-RPC error in the answer; an error when there is none, so a
    /// check of what it says cannot pass on an answer that holds no error.
    pub fn error_message(&self) -> Result<&str> {
        self.messages.iter().find_map(|m| m["error"]["message"].as_str()).with_context(|| format!("no JSON-RPC error in {self:?}"))
    }

    /// The text and `isError` of the `tools/call` result answering `id`; an error when the
    /// answer holds none.
    pub fn tool_text(&self, id: &Value) -> Result<(String, bool)> {
        let result = self.response(id).and_then(|r| r.get("result")).with_context(|| format!("no result for id {id} in {self:?}"))?;
        let text = result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n");
        Ok((text, result["isError"].as_bool().unwrap_or(false)))
    }

    /// What refused the call answering `id`: its JSON-RPC error's message, or the text of a
    /// result marked `isError`. An error when the call was answered as a success, or not at all.
    pub fn refusal(&self, id: &Value) -> Result<String> {
        let response = self.response(id).with_context(|| format!("no answer for id {id} in {self:?}"))?;
        if let Some(m) = response["error"]["message"].as_str() {
            return Ok(m.to_owned());
        }
        match self.tool_text(id)? {
            (text, true) => Ok(text),
            (text, false) => anyhow::bail!("the call succeeded: {text}"),
        }
    }
}

fn parse_answer(raw: &str) -> Result<Answer> {
    let (head, body) = raw.split_once("\r\n\r\n").with_context(|| format!("no HTTP answer: {raw:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("no status in {head:?}"))?;
    let header = |name: &str| head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()));
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
