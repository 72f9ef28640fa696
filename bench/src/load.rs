//! What the load benchmarks share: keep-alive clients, saturation with CPU and memory read from
//! /proc, a mock upstream on its own thread (MCP or an OpenAI-style model API), CPU pinning, and
//! the bare hyper proxy every proxy is compared with.

use anyhow::{Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_e2e::{ControlPlane, Process, wait_until};

/// One keep-alive connection (a pool of one: reused while it lives, replaced if it closes),
/// sending `headers` with every request.
pub struct Conn {
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    headers: Vec<(String, String)>,
}

impl Conn {
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Conn> {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(1).build(connector);
        Ok(Conn { client, uri: url.parse()?, headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() })
    }

    async fn send(&mut self, body: &Bytes) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut req = Request::post(self.uri.clone()).header("content-type", "application/json").header("accept", "application/json, text/event-stream");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = self.client.request(req.body(Full::new(body.clone()))?).await?;
        ensure!(resp.status().is_success(), "status {}", resp.status());
        Ok(resp)
    }

    pub async fn call(&mut self, body: &Bytes) -> Result<Bytes> {
        Ok(self.send(body).await?.into_body().collect().await?.to_bytes())
    }

    pub async fn timed(&mut self, body: &Bytes) -> Result<u64> {
        let t = Instant::now();
        self.call(body).await?;
        Ok(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds until the answer's first body frame (a stream's first event), reading the
    /// rest after.
    pub async fn first_frame(&mut self, body: &Bytes) -> Result<u64> {
        let t = Instant::now();
        let mut incoming = self.send(body).await?.into_body();
        let mut first = None;
        while let Some(frame) = incoming.frame().await {
            if frame?.is_data() && first.is_none() {
                first = Some(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        Ok(first.unwrap_or(u64::MAX))
    }

    pub async fn text(&mut self, body: &Bytes) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.call(body).await?).into_owned())
    }
}

pub async fn one_call(url: &str, body: &Bytes) -> Result<Bytes> {
    Conn::open(url, &[]).await?.call(body).await
}

/// A proxy under load: its URL, the headers its calls carry, and its process.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub pid: u32,
}

/// Rounds of a saturation run. In each, the bare proxy and then the proxy under test are loaded
/// for [`WINDOW`]: a slow spell of this shared machine falls on both alike, and the ratio
/// reported is the median of the rounds' (one 3 s run of each moved the sidecar's ratio between
/// 1.8× and 3.1× from run to run of the same builds).
pub const ROUNDS: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(1);

/// What a process did in one window of load.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    pub calls: f64,
    /// CPU seconds.
    pub cpu: f64,
    /// The largest RSS seen, KiB.
    pub max_rss: f64,
}

impl Load {
    /// CPU seconds per call.
    pub fn per_call(&self) -> f64 {
        self.cpu / self.calls.max(1.0)
    }

    fn total(loads: &[Load]) -> Load {
        loads.iter().fold(Load::default(), |t, l| Load { calls: t.calls + l.calls, cpu: t.cpu + l.cpu, max_rss: t.max_rss.max(l.max_rss) })
    }
}

/// The saturation rounds of the bare proxy and of a proxy under test, taken in turns.
#[derive(Debug)]
pub struct Saturation {
    pub bare: Vec<Load>,
    pub proxy: Vec<Load>,
}

impl Saturation {
    pub fn run(rt: &tokio::runtime::Runtime, body: &Bytes, bare: Target<'_>, proxy: Target<'_>) -> Result<Saturation> {
        let mut runs = Saturation { bare: Vec::new(), proxy: Vec::new() };
        for _ in 0..ROUNDS {
            runs.bare.push(saturate(rt, bare, body)?);
            runs.proxy.push(saturate(rt, proxy, body)?);
        }
        Ok(runs)
    }

    /// As [`Saturation::run`], both sent `per_second` calls a second: CPU per call at one call
    /// rate, where neither is the bottleneck. At saturation the faster proxy leaves the load
    /// generator's CPU no idle time, while a slower one lets it sleep, and waking it again
    /// costs the slower proxy kernel time per call (scheduler wake-ups) that the faster never pays.
    pub fn at_rate(rt: &tokio::runtime::Runtime, body: &Bytes, bare: Target<'_>, proxy: Target<'_>, per_second: f64) -> Result<Saturation> {
        let mut runs = Saturation { bare: Vec::new(), proxy: Vec::new() };
        for _ in 0..ROUNDS {
            runs.bare.push(load(rt, bare, body, Some(per_second))?);
            runs.proxy.push(load(rt, proxy, body, Some(per_second))?);
        }
        Ok(runs)
    }

    /// The proxy's calls and CPU over all rounds.
    pub fn proxy_total(&self) -> Load {
        Load::total(&self.proxy)
    }

    /// The proxy's CPU per call over the bare proxy's: the median of the rounds', and the least
    /// and most of them.
    pub fn cpu_ratio(&self) -> (f64, f64, f64) {
        let mut ratios: Vec<f64> = self.bare.iter().zip(&self.proxy).map(|(b, p)| p.per_call() / b.per_call()).collect();
        ratios.sort_by(f64::total_cmp);
        let at = |i: usize| ratios.get(i).copied().unwrap_or(f64::NAN);
        (at(ratios.len() / 2), at(0), at(ratios.len().saturating_sub(1)))
    }

    /// The bare proxy's line, then `name`'s with its ratios to it (CPU per call, throughput).
    pub fn report(&self, indent: &str, name: &str) -> String {
        let (bare, proxy) = (Load::total(&self.bare), self.proxy_total());
        let seconds = WINDOW.as_secs_f64() * self.bare.len() as f64;
        let (ratio, least, most) = self.cpu_ratio();
        format!(
            "{indent}{:<18} {:8.0} calls/s   {:6.1} µs CPU per call\n{indent}{name:<18} {:8.0} calls/s   {:6.1} µs CPU per call   ({ratio:.2}× the bare proxy's CPU per call, the median of {} rounds in turn, {least:.2}–{most:.2}; {:.2}× its throughput)",
            "bare hyper proxy",
            bare.calls / seconds,
            bare.per_call() * 1e6,
            proxy.calls / seconds,
            proxy.per_call() * 1e6,
            self.bare.len(),
            proxy.calls / bare.calls.max(1.0),
        )
    }
}

/// Calls and the process's CPU seconds over [`WINDOW`] of 16 connections; the max RSS seen.
fn saturate(rt: &tokio::runtime::Runtime, target: Target<'_>, body: &Bytes) -> Result<Load> {
    load(rt, target, body, None)
}

/// As [`saturate`], each connection sending `per_second` / 16 calls a second at most: calls are
/// due at fixed times, and one late is sent at once.
fn load(rt: &tokio::runtime::Runtime, target: Target<'_>, body: &Bytes, per_second: Option<f64>) -> Result<Load> {
    const CONNECTIONS: u32 = 16;
    let calls = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds(target.pid);
    let start = Instant::now();
    let deadline = start + WINDOW;
    let mut max_rss = 0.0f64;
    let headers: Vec<(String, String)> = target.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let interval = per_second.map(|rate| Duration::from_secs_f64(f64::from(CONNECTIONS) / rate.max(1.0)));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..CONNECTIONS {
            let (url, body, calls, headers) = (target.url.to_owned(), body.clone(), calls.clone(), headers.clone());
            tasks.push(tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut c = Conn::open(&url, &h).await?;
                // Connections spread over the interval, not all due at once.
                let mut due = interval.map(|every| tokio::time::Instant::from_std(start) + every * i / CONNECTIONS);
                while Instant::now() < deadline {
                    if let (Some(at), Some(every)) = (due.as_mut(), interval) {
                        tokio::time::sleep_until(*at).await;
                        *at += every;
                    }
                    c.call(&body).await?;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        // RSS sampled every 200 ms while the load runs.
        let mut samples = tokio::time::interval(Duration::from_millis(200));
        while Instant::now() < deadline {
            samples.tick().await;
            max_rss = max_rss.max(rss_kib(target.pid));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(Load { calls: calls.load(Ordering::Relaxed) as f64, cpu: cpu_seconds(target.pid) - cpu0, max_rss })
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Bytes `pid` has caused to be written to storage so far (`write_bytes` of `/proc/PID/io`:
/// counted as pages are dirtied, so a write-ahead log and its checkpoints both count).
pub fn storage_written(pid: u32) -> f64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// A process's memory: anonymous (heap, stacks) against pages of the binary itself.
pub struct Memory {
    pub anonymous_kib: f64,
    pub text: String,
}

/// Anonymous memory (heap, stacks) against pages of the binary itself.
pub fn memory_breakdown(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default();
    let text = format!(
        "RSS {} = anonymous {} + file {} (+ shmem {}); threads {}; sockets {}",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("RssShmem:"),
        field("Threads:"),
        sockets(pid)
    );
    Memory { anonymous_kib: status_kib(&status, "RssAnon:"), text }
}

/// Sockets `pid` holds open: its connections (each with its buffers) and listeners.
fn sockets(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
    fds.filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))).count()
}

/// A `/proc/PID/status` field in KiB (0 when missing).
fn status_kib(status: &str, name: &str) -> f64 {
    status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

pub fn rss_kib(pid: u32) -> f64 {
    status_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(), "VmRSS:")
}

pub fn pin_to_cpu(cpu: usize) {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What the mock upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum MockAnswer {
    /// A small `tools/call` result to every POST.
    Mcp,
    /// An OpenAI chat completion (with usage), about 1 KiB; a stream of four events when the
    /// request asks for one (the first at once, the others 5 ms apart).
    OpenAi,
}

/// A mock upstream on a thread of its own, on CPU 0; its base URL.
pub fn mock_upstream(answer: MockAnswer) -> Result<String> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::spawn(move || {
        pin_to_cpu(0);
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(serve_mock(std_listener, answer));
    });
    Ok(format!("http://{addr}"))
}

fn chat_answer() -> Bytes {
    let text = "All tests pass. ".repeat(48);
    Bytes::from(
        serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 190, "total_tokens": 490}})
        .to_string(),
    )
}

async fn serve_mock(std_listener: std::net::TcpListener, answer: MockAnswer) {
    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
    let chat = chat_answer();
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let _ = stream.set_nodelay(true);
        let chat = chat.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let chat = chat.clone();
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let streaming = body.windows(14).any(|w| w == br#""stream":true"#);
                    let (bytes, content_type): (http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>, &str) = match answer {
                        MockAnswer::Mcp => {
                            let b = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}],"isError":false}}"#;
                            (Full::new(Bytes::from_static(b.as_bytes())).boxed(), "application/json")
                        }
                        MockAnswer::OpenAi if !streaming => (Full::new(chat).boxed(), "application/json"),
                        MockAnswer::OpenAi => {
                            let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(8);
                            tokio::spawn(async move {
                                for i in 0..4 {
                                    let event = format!(
                                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"part {i}\"}}}}]}}\n\n"
                                    );
                                    if tx.send(Ok(hyper::body::Frame::data(Bytes::from(event)))).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                let usage = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
                                let _ = tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(usage.as_bytes())))).await;
                            });
                            (http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed(), "text/event-stream")
                        }
                    };
                    let mut resp = hyper::Response::new(bytes);
                    resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(content_type));
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    }
}

/// The bare hyper proxy (`bench-bare-proxy`) on CPU 1, in front of `upstream`; its URL.
pub fn start_bare_proxy(cp: &ControlPlane, bin: &std::path::Path, upstream: &str) -> Result<(Process, String)> {
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "1"]).arg(bin).args(["127.0.0.1:0", upstream]);
    let log = cp.dir().join(format!("bare-proxy-{}.log", upstream.len()));
    let p = Process::spawn(cmd, log.clone())?;
    let addr = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        Ok(std::fs::read_to_string(&log).ok().and_then(|s| s.lines().next().map(str::to_owned)))
    })?;
    Ok((p, format!("http://{addr}/")))
}

/// `perf record` of `pid` while it lives, when `TOLLGATE_BENCH_PROFILE` names the file to write
/// (with `suffix` added; `perf report -i FILE` reads it); dropping it stops the recording and
/// writes the file.
pub struct Profile(Option<std::process::Child>);

impl Profile {
    pub fn start(pid: u32, suffix: &str) -> Profile {
        let Some(mut out) = std::env::var_os("TOLLGATE_BENCH_PROFILE") else { return Profile(None) };
        out.push(suffix);
        let child = std::process::Command::new("perf")
            .args(["record", "-q", "-F", "1000", "--call-graph", "dwarf,32768", "-o"])
            .arg(out)
            .args(["-p", &pid.to_string()])
            .spawn();
        Profile(child.ok())
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let Some(perf) = &mut self.0 else { return };
        #[allow(unsafe_code)]
        // SAFETY: kill has no memory preconditions; SIGINT makes perf write its file and exit.
        unsafe {
            libc::kill(perf.id() as i32, libc::SIGINT);
        }
        let _ = perf.wait();
    }
}
