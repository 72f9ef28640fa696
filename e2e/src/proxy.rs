//! HTTP/1.1 proxies that make what a test must prove observable at the far end:
//! [`CountingProxy`] counts the `tools/call` requests that reach an MCP server, by tool name
//! (what "ran once" or "never ran" is counted on, rather than a line the sidecar logs before the
//! call, which proves neither that it went out nor that it went out once); [`AnswerDropper`]
//! lets requests through and loses their answers, so a sender must retry what was already done.
//! Bytes pass unchanged; only the requests (and the dropper's answers) are read on the way.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Counts = Arc<Mutex<HashMap<String, usize>>>;

pub struct CountingProxy {
    pub port: u16,
    counts: Counts,
    /// Requests whose body could not be read as JSON-RPC: a count that would miss calls.
    unreadable: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<CountingProxy> {
        let (counts, unreadable) = (Counts::default(), Arc::new(Mutex::new(Vec::new())));
        let (c, u) = (counts.clone(), unreadable.clone());
        let (port, stop) = serve(move |client| {
            if let Err(e) = relay(client, upstream, &c) {
                u.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("{e:#}"));
            }
        })?;
        Ok(CountingProxy { port, counts, unreadable, stop })
    }

    /// The upstream's URL `path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How many `tools/call` requests for `tool` reached the server; an error when a request
    /// could not be read (the count might then be short).
    pub fn calls(&self, tool: &str) -> Result<usize> {
        let unreadable = self.unreadable.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = unreadable.first() {
            bail!("the counting proxy could not read a request, so its counts may be short: {e}");
        }
        Ok(self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(tool).copied().unwrap_or(0))
    }
}

/// Listens on a free loopback port and hands each connection to `handle` on a thread of its own,
/// until the flag it returns is set (and one more connection wakes the loop).
fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Result<(u16, Arc<AtomicBool>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let (s, handle) = (stop.clone(), Arc::new(handle));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                return;
            }
            let Ok(client) = client else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || handle(client));
        }
    });
    Ok((port, stop))
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Relays one connection: the answers copied back as they come, each request read whole,
/// counted, then passed on.
fn relay(client: TcpStream, upstream: SocketAddr, counts: &Counts) -> Result<()> {
    let server = TcpStream::connect(upstream).context("connecting to the upstream")?;
    let (mut back_from, mut back_to) = (server.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(std::net::Shutdown::Both);
    });
    let mut reader = BufReader::new(client);
    let mut server = server;
    while let Some(request) = read_message(&mut reader)? {
        if !request.body.is_empty() {
            count(&request.body, counts)?;
        }
        server.write_all(&request.raw)?;
    }
    Ok(())
}

/// One HTTP/1.1 message: its head as text, its bytes as sent, its body decoded.
struct Message {
    head: String,
    raw: Vec<u8>,
    body: Vec<u8>,
}

/// The next message on `reader`; None at the end of the stream. A message without a length
/// (an answer that ends with its connection) is read to the end.
fn read_message(reader: &mut BufReader<TcpStream>) -> Result<Option<Message>> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| lower.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
    let body = if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        chunked(reader, &mut raw)?
    } else if let Some(n) = header("content-length:") {
        let mut body = vec![0; n.parse().context("content-length")?];
        reader.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
        body
    } else if lower.starts_with("http/") {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        raw.extend_from_slice(&body);
        body
    } else {
        Vec::new()
    };
    Ok(Some(Message { head, raw, body }))
}

/// Passes requests to an upstream and their answers back, one request per connection, but
/// loses the answers of the first `times` requests whose path starts with `path`: the upstream
/// did the work, the sender never hears so (as when a server dies between its commit and its
/// answer) and must send again.
pub struct AnswerDropper {
    pub port: u16,
    dropped: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl AnswerDropper {
    pub fn start(upstream: SocketAddr, path: &str, times: usize) -> Result<AnswerDropper> {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let (d, path) = (dropped.clone(), path.to_owned());
        let (port, stop) = serve(move |client| {
            let _ = pass_or_drop(client, upstream, &path, times, &d);
        })?;
        Ok(AnswerDropper { port, dropped, stop })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request heads whose answers were lost, in order.
    pub fn dropped(&self) -> Vec<String> {
        self.dropped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for AnswerDropper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pass_or_drop(client: TcpStream, upstream: SocketAddr, path: &str, times: usize, dropped: &Mutex<Vec<String>>) -> Result<()> {
    let mut writer = client.try_clone()?;
    let Some(request) = read_message(&mut BufReader::new(client))? else { return Ok(()) };
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&request.raw)?;
    let answer = read_message(&mut BufReader::new(server))?.context("the upstream did not answer")?;
    let target = request.head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    {
        let mut d = dropped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if target.starts_with(path) && d.len() < times && answer.head.starts_with("HTTP/1.1 2") {
            d.push(format!("{} -> {}", request.head.lines().next().unwrap_or_default(), answer.head.lines().next().unwrap_or_default()));
            return Ok(writer.shutdown(std::net::Shutdown::Both)?);
        }
    }
    // One request per connection: the answer says so, and the connection ends with it.
    let raw = String::from_utf8_lossy(&answer.raw).replacen("\r\n", "\r\nconnection: close\r\n", 1);
    writer.write_all(raw.as_bytes())?;
    Ok(writer.shutdown(std::net::Shutdown::Both)?)
}

/// A chunked body, decoded; its raw bytes appended to `raw`.
fn chunked(reader: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = Vec::new();
        reader.read_until(b'\n', &mut size)?;
        raw.extend_from_slice(&size);
        let hex = String::from_utf8_lossy(&size);
        let n = usize::from_str_radix(hex.trim().split(';').next().unwrap_or_default(), 16).context("chunk size")?;
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk)?;
        raw.extend_from_slice(&chunk);
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

fn count(body: &[u8], counts: &Counts) -> Result<()> {
    let v: Value = serde_json::from_slice(body).with_context(|| format!("a request body that is not JSON: {}", String::from_utf8_lossy(body)))?;
    let messages = match v {
        Value::Array(a) => a,
        one => vec![one],
    };
    let mut counts = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for m in messages.iter().filter(|m| m["method"] == "tools/call") {
        *counts.entry(m["params"]["name"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    Ok(())
}
