//! The sidecar under load, against the direct path, in one run (DESIGN §5):
//! - added latency of an allowed 1 KiB `tools/call` decided by 10 CEL rules, one connection;
//! - CPU per call and throughput at saturation, against a bare hyper proxy;
//! - memory idle and under load;
//! - approval round trip (decision written → held call answered) and policy propagation.
//!
//! Build first: `cargo build --release --workspace --bins`. The load generator and the mock
//! upstream run on CPU 0, the proxies on CPU 1.

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tollgate_bench::load::{Conn, Memory, MockAnswer, Profile, Saturation, Target, memory_breakdown, mock_upstream, one_call, pin_to_cpu, start_bare_proxy};
use tollgate_bench::quantile_us;
use tollgate_e2e::{ControlPlane, Operator, Sidecar, User, wait_until};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "bench";

fn main() -> Result<()> {
    pin_to_cpu(0);
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    // The shipping build (`--profile shipped`: fat LTO) when there is one, else the release build;
    // `TOLLGATE_BENCH_SIDECAR` names another (an older build, to compare).
    let shipped = release.join("../shipped/tollgate-sidecar");
    let sidecar_bin = match std::env::var_os("TOLLGATE_BENCH_SIDECAR") {
        Some(path) => PathBuf::from(path),
        None if shipped.is_file() => shipped,
        None => release.join("tollgate-sidecar"),
    };
    println!("sidecar binary: {}", sidecar_bin.display());
    let bare_bin = release.join("bench-bare-proxy");
    ensure!(sidecar_bin.is_file() && bare_bin.is_file(), "build first: cargo build --release --workspace --bins");
    // The client on this thread's own runtime (a request never hops threads on its way out);
    // the mock upstream on a thread of its own, on the same CPU.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let upstream = format!("{}/mcp", mock_upstream(MockAnswer::Mcp)?);
    let cp = ControlPlane::start()?;
    let operator = Operator::start(&cp)?;
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    let objects = format!(include_str!("bench-objects.yaml.in"), upstream = upstream);
    let path = cp.dir().join("bench.yaml");
    std::fs::write(&path, objects)?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", path.to_str().context("path")?])?;
    let sidecar = Sidecar::start_binary(&cp, NS, "coder", "coder", "bench-pod", &sidecar_bin, tollgate_e2e::Launch::Pinned(1), &[], &[])?;
    let bare = start_bare_proxy(&cp, &bare_bin, &upstream)?;
    let via_sidecar = format!("{}/mcp/upstream", sidecar.base);
    let body = call_body("work");
    println!("tools/call body: {} bytes; policy: 10 CEL rules, all evaluated, the last allows", body.len());

    // Idle memory once the snapshot is loaded and a first call went through.
    let first = rt.block_on(async { one_call(&via_sidecar, &body).await }).with_context(|| sidecar.process.log_tail())?;
    ensure!(!String::from_utf8_lossy(&first).contains("Access denied"), "the bench call was denied: {}", String::from_utf8_lossy(&first));
    let sidecar_pid = sidecar.process.pid().context("sidecar pid")?;
    let idle = memory_breakdown(sidecar_pid);

    latency(&rt, &upstream, &via_sidecar, &bare.1, &body)?;
    saturation(&rt, &bare, &via_sidecar, &body, sidecar_pid, &idle)?;
    approval_round_trip(&cp, &via_sidecar)?;
    policy_propagation(&cp, &rt, &via_sidecar)?;
    drop(sidecar);
    drop(operator);
    tollgate_bench::finish()
}

/// Latency, one connection per path, interleaved rounds.
fn latency(rt: &tokio::runtime::Runtime, upstream: &str, via_sidecar: &str, bare_url: &str, body: &bytes::Bytes) -> Result<()> {
    let (mut direct, mut via, mut via_bare) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let mut d = Conn::open(upstream, &[]).await?;
        let mut s = Conn::open(via_sidecar, &[]).await?;
        let mut b = Conn::open(bare_url, &[]).await?;
        for _ in 0..500 {
            d.call(body).await.context("warming up the direct path")?;
            s.call(body).await.context("warming up the sidecar")?;
            b.call(body).await.context("warming up the bare proxy")?;
        }
        for _round in 0..20 {
            for _ in 0..500 {
                direct.push(d.timed(body).await?);
            }
            for _ in 0..500 {
                via.push(s.timed(body).await?);
            }
            for _ in 0..500 {
                via_bare.push(b.timed(body).await?);
            }
        }
        anyhow::Ok(())
    })?;
    let (d50, d99) = (quantile_us(&mut direct, 0.5), quantile_us(&mut direct, 0.99));
    let (s50, s99) = (quantile_us(&mut via, 0.5), quantile_us(&mut via, 0.99));
    let (b50, b99) = (quantile_us(&mut via_bare, 0.5), quantile_us(&mut via_bare, 0.99));
    println!("\nlatency, one connection, {} calls per path (interleaved rounds)", direct.len());
    println!("  direct to upstream        p50 {d50:7.1} µs   p99 {d99:7.1} µs");
    println!("  via bare hyper proxy      p50 {b50:7.1} µs   p99 {b99:7.1} µs   added p50 {:6.1} µs  p99 {:6.1} µs", b50 - d50, b99 - d99);
    println!("  via tollgate-sidecar      p50 {s50:7.1} µs   p99 {s99:7.1} µs   added p50 {:6.1} µs  p99 {:6.1} µs", s50 - d50, s99 - d99);
    println!("  {}", tollgate_bench::target("p50 via the sidecar / via the bare proxy", s50 / b50, 1.15, "×"));
    println!("  {}", tollgate_bench::target("p99 via the sidecar / via the bare proxy", s99 / b99, 1.15, "×"));

    Ok(())
}

/// Saturation: 16 connections against each proxy on its one CPU; CPU per call and memory.
fn saturation(
    rt: &tokio::runtime::Runtime,
    bare: &(tollgate_e2e::Process, String),
    via_sidecar: &str,
    body: &bytes::Bytes,
    sidecar_pid: u32,
    idle: &Memory,
) -> Result<()> {
    println!(
        "\nsaturation, 16 connections, {} rounds of {} s for each in turn, proxy pinned to one CPU",
        tollgate_bench::load::ROUNDS,
        tollgate_bench::load::WINDOW.as_secs()
    );
    let bare = Target { url: &bare.1, headers: &[], pid: bare.0.pid().context("bare pid")? };
    // TOLLGATE_BENCH_PROFILE=FILE records the sidecar's saturation run with `perf record`.
    let profile = Profile::start(sidecar_pid, "");
    let runs = Saturation::run(rt, body, bare, Target { url: via_sidecar, headers: &[], pid: sidecar_pid })?;
    drop(profile);
    let load_rss = runs.proxy_total().max_rss;
    println!("{}", runs.report("  ", "tollgate-sidecar"));
    println!("  {}", tollgate_bench::target("CPU per call, the sidecar's / the bare proxy's", runs.cpu_ratio().0, 1.25, "×"));
    let seconds = tollgate_bench::load::WINDOW.as_secs_f64() * runs.proxy.len() as f64;
    let rate = (0.8 * runs.proxy_total().calls / seconds).round();
    let paced = Saturation::at_rate(rt, body, bare, Target { url: via_sidecar, headers: &[], pid: sidecar_pid }, rate)?;
    println!(
        "\nthe same call rate for both, {rate} calls/s (80 % of the sidecar's throughput at saturation), {} rounds of {} s",
        tollgate_bench::load::ROUNDS,
        tollgate_bench::load::WINDOW.as_secs()
    );
    println!("{}", paced.report("  ", "tollgate-sidecar"));
    println!("\nsidecar memory");
    println!("  idle, after one call: {}", idle.text);
    println!("  under load: RSS {:.1} MiB at its peak; after it: {}", load_rss / 1024.0, memory_breakdown(sidecar_pid).text);
    println!("  {}", tollgate_bench::target("anonymous memory idle", idle.anonymous_kib / 1024.0, 12.0, " MiB"));
    println!("  {}", tollgate_bench::target("RSS under load", load_rss / 1024.0, 24.0, " MiB"));

    Ok(())
}

/// Approval round trip: decision written → the held call's answer arrives.
fn approval_round_trip(cp: &ControlPlane, via_sidecar: &str) -> Result<()> {
    let mut rtts = Vec::new();
    for i in 0..15 {
        let url = via_sidecar.to_owned();
        let held = call_body("held");
        let answer = std::thread::spawn(move || -> Result<Instant> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(one_call(&url, &held))?;
            Ok(Instant::now())
        });
        let name = wait_until(Duration::from_secs(20), Duration::from_millis(5), || {
            let out = cp.kubectl_ok(
                User::Admin,
                [
                    "get",
                    "ar",
                    "-n",
                    NS,
                    "-l",
                    "tollgate.dev/tool=held",
                    "-o",
                    "jsonpath={range .items[?(@.status.phase==\"Pending\")]}{.metadata.name}{\"\\n\"}{end}",
                ],
            )?;
            Ok(out.lines().next().map(str::to_owned))
        })?;
        let decision = format!(
            r#"[{{"op":"add","path":"/status/decisions","value":[{{"user":"approver-a","decision":"Approve","time":"{}","via":"api"}}]}}]"#,
            jiff_now()
        );
        cp.kubectl_ok(User::ApproverA, ["patch", "ar", &name, "-n", NS, "--subresource=status", "--type=json", "-p", &decision])?;
        let written = Instant::now();
        let answered = answer.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        rtts.push(u64::try_from(answered.saturating_duration_since(written).as_nanos()).unwrap_or(0));
        let _ = i;
    }
    let p99 = quantile_us(&mut rtts, 0.99) / 1000.0;
    println!(
        "\napproval round trip (decision written → held call answered), {} runs: p50 {:.1} ms, p99 {p99:.1} ms",
        rtts.len(),
        quantile_us(&mut rtts, 0.5) / 1000.0
    );
    println!("  {}", tollgate_bench::target("approval round trip p99", p99, 500.0, " ms"));

    Ok(())
}

/// Policy propagation: applied object → enforced.
fn policy_propagation(cp: &ControlPlane, rt: &tokio::runtime::Runtime, via_sidecar: &str) -> Result<()> {
    let mut props = Vec::new();
    let toggle = call_body("toggle");
    for i in 0..10 {
        let action = if i % 2 == 0 { "Deny" } else { "Allow" };
        let patch = format!(r#"[{{"op":"replace","path":"/spec/tools/2/rules/0/action","value":"{action}"}}]"#);
        cp.kubectl_ok(User::Admin, ["patch", "tp", "bench", "-n", NS, "--type=json", "-p", &patch])?;
        let applied = Instant::now();
        rt.block_on(async {
            let mut c = Conn::open(via_sidecar, &[]).await?;
            loop {
                let text = c.text(&toggle).await?;
                if text.contains("Access denied") == (action == "Deny") {
                    break;
                }
                ensure!(applied.elapsed() < Duration::from_secs(10), "policy not applied in 10 s");
            }
            anyhow::Ok(())
        })?;
        props.push(u64::try_from(applied.elapsed().as_nanos()).unwrap_or(0));
    }
    let max = quantile_us(&mut props, 1.0) / 1000.0;
    println!("policy propagation (applied → enforced), {} runs: p50 {:.1} ms, max {max:.1} ms", props.len(), quantile_us(&mut props, 0.5) / 1000.0);
    println!("  {}", tollgate_bench::target("policy propagation, slowest", max, 2000.0, " ms"));
    Ok(())
}

fn jiff_now() -> String {
    // RFC 3339 in UTC from the system clock, without a date crate in the bench.
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn call_body(tool: &str) -> Bytes {
    let files: Vec<String> = (0..20).map(|i| format!("src/module_{i:02}/lib.rs")).collect();
    let args = serde_json::json!({
        "path": "/work/repo/src/main.rs", "command": "cargo test --workspace --all-features", "env": "staging",
        "branch": "feature/tollgate-bench", "files": files, "message": "x".repeat(280),
    });
    Bytes::from(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string())
}
