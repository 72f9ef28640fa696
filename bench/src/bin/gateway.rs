//! The model gateway under load, against the direct path and a bare hyper proxy, in one run
//! (DESIGN §5): added latency (p50/p99) of a non-streaming chat completion with a ~1 KiB answer,
//! one connection; CPU per call at saturation; the first-event delay of a stream; each with the
//! ledger only and with a budget reserved and settled on every call; then CPU per call once the
//! gateway knows 500 agents and 100 budgets (it should not grow with them). With
//! `TOLLGATE_LITELLM` (`hack/bench.sh` installs it), the latency LiteLLM's proxy adds besides.
//!
//! Build first: `cargo build --release --workspace --bins`. The load generator and the mock
//! provider run on CPU 0, the proxies on CPU 1. `TOLLGATE_BENCH_GATEWAY` runs another build.

use anyhow::{Context, Result, ensure};
use base64::Engine;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;
use tollgate_bench::load::{Conn, MockAnswer, Profile, Saturation, Target, mock_upstream, pin_to_cpu, start_bare_proxy};
use tollgate_bench::quantile_us;
use tollgate_e2e::{ControlPlane, Operator, Process, User, free_ports, wait_until};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "bench-gateway";

fn main() -> Result<()> {
    pin_to_cpu(0);
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    // `TOLLGATE_BENCH_GATEWAY` names another build (an older one, to compare).
    let gateway_bin = std::env::var_os("TOLLGATE_BENCH_GATEWAY").map_or_else(|| release.join("tollgate-gateway"), PathBuf::from);
    let bare_bin = release.join("bench-bare-proxy");
    ensure!(gateway_bin.is_file() && bare_bin.is_file(), "build first: cargo build --release --workspace --bins");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let provider = mock_upstream(MockAnswer::OpenAi)?;
    let cp = ControlPlane::start()?;
    let _operator = Operator::start(&cp)?;
    let key = agent_key(&cp, &provider)?;
    let (gateway, port) = start_gateway(&cp, &gateway_bin)?;
    let gateway_pid = gateway.pid().context("gateway pid")?;
    let bare = start_bare_proxy(&cp, &bare_bin, &format!("{provider}/v1/chat/completions"))?;
    let bare_pid = bare.0.pid().context("bare pid")?;

    let direct = format!("{provider}/v1/chat/completions");
    let via = format!("http://127.0.0.1:{port}/openai/v1/chat/completions");
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str())];
    let (body, stream_body) = bodies();
    let first = rt.block_on(async { Conn::open(&via, &headers).await?.text(&body).await })?;
    ensure!(first.contains("All tests pass"), "the gateway did not answer: {first}\n{}", gateway.log_tail());
    println!("chat completion: request {} bytes, answer about 1 KiB; provider mock on CPU 0, proxies on CPU 1", body.len());

    let paths = Paths { direct: &direct, bare: &bare.1, via: &via, headers: &headers, bare_pid, gateway_pid };
    measure(&rt, &paths, &body, &stream_body, false)?;
    add_budget(&cp)?;
    let one_budget = measure(&rt, &paths, &body, &stream_body, true)?;
    against_litellm(&cp, &rt, &paths, &provider, &body)?;
    at_scale(&cp, &rt, &paths, &body, one_budget)?;
    tollgate_bench::finish()
}

/// CPU per call with 500 agents and 100 budgets known (the calls' agent is counted by two of
/// them), against `one_budget`'s from the run before.
fn at_scale(cp: &ControlPlane, rt: &tokio::runtime::Runtime, p: &Paths<'_>, body: &Bytes, one_budget: f64) -> Result<()> {
    let mut objects = String::new();
    for i in 1..500 {
        objects.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {{name: a{i}, labels: {{team: t{}}}}}\nspec: {{selector: {{matchLabels: {{app: a{i}}}}}, serviceAccountName: a{i}, models: {{allowed: [\"*\"]}}}}\n---\n",
            i % 100
        ));
    }
    for i in 1..99 {
        objects.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {{name: team-{i}}}\nspec: {{agentSelector: {{matchLabels: {{team: t{i}}}}}, period: Daily, hardLimitUSD: 1000}}\n---\n"
        ));
    }
    // The calls' agent is in a second budget too (a team's and the namespace's, as in practice).
    objects.push_str(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: coder-models}\nspec: {models: [\"gpt-*\"], period: Weekly, hardLimitUSD: 1000000}\n",
    );
    let path = cp.dir().join("scale.yaml");
    std::fs::write(&path, objects)?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", NS, "-f", path.to_str().context("path")?])?;
    wait_until(Duration::from_secs(180), Duration::from_millis(500), || {
        let states = cp.kubectl_ok(User::Admin, ["get", "budgets", "-n", NS, "-o", "jsonpath={range .items[*]}{.status.state}{\"\\n\"}{end}"])?;
        let keys = cp.kubectl_ok(User::Admin, ["get", "secrets", "-n", NS, "-o", "name"])?;
        Ok((states.lines().filter(|l| !l.is_empty()).count() == 100 && keys.lines().filter(|l| l.contains("tollgate-key-")).count() == 500).then_some(()))
    })
    .context("500 agents' keys and 100 budgets' states")?;
    let runs = Saturation::run(rt, body, p.bare(), p.gateway())?;
    let total = runs.proxy_total();
    println!("\n[500 agents, 100 budgets; the calls counted by two] saturation, 16 connections, {}, proxy on one CPU:", rounds());
    println!("{}; RSS {:.1} MiB", runs.report("    ", "tollgate-gateway"), total.max_rss / 1024.0);
    println!("  {}", tollgate_bench::target("CPU per call at this scale / with one budget", total.per_call() / one_budget, 1.2, "×"));
    Ok(())
}

/// The latency the gateway adds (its ledger and a budget on) against what LiteLLM's proxy adds
/// without either, one connection each: the gateway is to add at most a fiftieth of LiteLLM's.
/// In rounds of a block of calls for each path, LiteLLM's first: what it still does after
/// answering (its callbacks) falls on the direct path's block, which does not run on its CPU.
fn against_litellm(cp: &ControlPlane, rt: &tokio::runtime::Runtime, p: &Paths<'_>, provider: &str, body: &Bytes) -> Result<()> {
    let Some(install) = tollgate_bench::litellm::installed() else {
        println!("\n[against LiteLLM] skipped: TOLLGATE_LITELLM names no install (hack/bench.sh makes one)");
        return Ok(());
    };
    let litellm = tollgate_bench::litellm::start(&install, provider, cp.dir())?;
    let litellm_headers = [("authorization", litellm.authorization.as_str())];
    let mut samples: [Vec<u64>; 4] = Default::default();
    rt.block_on(async {
        let mut lc = Conn::open(&litellm.url, &litellm_headers).await?;
        let answer = lc.text(body).await.with_context(|| format!("via LiteLLM; its log:\n{}", litellm.process.log_tail()))?;
        ensure!(answer.contains("All tests pass"), "LiteLLM did not pass the answer on: {answer}");
        let mut conns = [lc, Conn::open(p.direct, &[]).await?, Conn::open(p.bare, &[]).await?, Conn::open(p.via, p.headers).await?];
        for conn in &mut conns {
            for _ in 0..50 {
                conn.call(body).await?;
            }
        }
        for _round in 0..5 {
            for (conn, samples) in conns.iter_mut().zip(samples.iter_mut()) {
                for _ in 0..50 {
                    samples.push(conn.timed(body).await?);
                }
            }
        }
        anyhow::Ok(())
    })?;
    let [(l50, l99), (d50, _), (b50, _), (g50, g99)] = samples.map(|mut v| quantiles(&mut v));
    let (l_added, b_added, g_added) = (l50 - d50, b50 - d50, g50 - d50);
    let share = |added: f64| l_added / added.max(0.001);
    println!("\n[against LiteLLM {} (its proxy, no database), on the gateway's CPU] one connection, 250 calls per path (rounds of 50 each)", litellm.version);
    println!("  direct to the provider    p50 {d50:7.1} µs");
    println!("  via LiteLLM               p50 {l50:7.1} µs   p99 {l99:7.1} µs   added p50 {l_added:7.1} µs");
    println!("  via bare hyper proxy      p50 {b50:7.1} µs   added p50 {b_added:7.1} µs: 1/{:.0} of LiteLLM's", share(b_added));
    println!(
        "  via tollgate-gateway      p50 {g50:7.1} µs   p99 {g99:7.1} µs   added p50 {g_added:7.1} µs: 1/{:.0} of LiteLLM's (ledger and a budget)",
        share(g_added)
    );
    println!("  {}", tollgate_bench::target("added p50, the gateway's as a share of LiteLLM's", 100.0 * g_added / l_added, 2.0, " %"));
    Ok(())
}

fn quantiles(v: &mut [u64]) -> (f64, f64) {
    (quantile_us(v, 0.5), quantile_us(v, 0.99))
}

/// Where the three paths are, and the processes whose CPU is counted.
struct Paths<'a> {
    direct: &'a str,
    bare: &'a str,
    via: &'a str,
    headers: &'a [(&'a str, &'a str)],
    bare_pid: u32,
    gateway_pid: u32,
}

impl Paths<'_> {
    fn bare(&self) -> Target<'_> {
        Target { url: self.bare, headers: &[], pid: self.bare_pid }
    }

    fn gateway(&self) -> Target<'_> {
        Target { url: self.via, headers: self.headers, pid: self.gateway_pid }
    }
}

/// How a saturation run is taken, for its heading.
fn rounds() -> String {
    format!("{} rounds of {} s for each in turn", tollgate_bench::load::ROUNDS, tollgate_bench::load::WINDOW.as_secs())
}

/// Latency, first stream event and saturation of the three paths, printed; the gateway's CPU
/// seconds per call at saturation.
fn measure(rt: &tokio::runtime::Runtime, p: &Paths<'_>, body: &Bytes, stream_body: &Bytes, budget: bool) -> Result<f64> {
    let label = if budget { "ledger + a budget reserved and settled per call" } else { "ledger only" };
    let (mut d, mut b, mut g) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fd, mut fb, mut fg) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let mut dc = Conn::open(p.direct, &[]).await?;
        let mut bc = Conn::open(p.bare, &[]).await?;
        let mut gc = Conn::open(p.via, p.headers).await?;
        for _ in 0..200 {
            dc.call(body).await?;
            bc.call(body).await?;
            gc.call(body).await?;
        }
        for _round in 0..10 {
            for _ in 0..200 {
                d.push(dc.timed(body).await?);
            }
            for _ in 0..200 {
                b.push(bc.timed(body).await?);
            }
            for _ in 0..200 {
                g.push(gc.timed(body).await.with_context(|| "via the gateway")?);
            }
            for _ in 0..10 {
                fd.push(dc.first_frame(stream_body).await?);
                fb.push(bc.first_frame(stream_body).await?);
                fg.push(gc.first_frame(stream_body).await?);
            }
        }
        anyhow::Ok(())
    })?;
    let ((d50, d99), (b50, b99), (g50, g99)) = (quantiles(&mut d), quantiles(&mut b), quantiles(&mut g));
    println!("\n[{label}] latency, one connection, {} calls per path (interleaved rounds)", d.len());
    println!("  direct to the provider    p50 {d50:7.1} µs   p99 {d99:7.1} µs");
    println!("  via bare hyper proxy      p50 {b50:7.1} µs   p99 {b99:7.1} µs   added p50 {:6.1} µs  p99 {:6.1} µs", b50 - d50, b99 - d99);
    println!("  via tollgate-gateway      p50 {g50:7.1} µs   p99 {g99:7.1} µs   added p50 {:6.1} µs  p99 {:6.1} µs", g50 - d50, g99 - d99);
    let ((fd50, _), (fb50, _), (fg50, fg99)) = (quantiles(&mut fd), quantiles(&mut fb), quantiles(&mut fg));
    println!("  stream first event: direct p50 {fd50:.1} µs; via bare proxy p50 {fb50:.1} µs; via gateway p50 {fg50:.1} µs, p99 {fg99:.1} µs");
    // TOLLGATE_BENCH_PROFILE=FILE records the gateway's saturation runs (FILE.ledger, FILE.budget).
    let profile = Profile::start(p.gateway_pid, if budget { ".budget" } else { ".ledger" });
    let written = tollgate_bench::load::storage_written(p.gateway_pid);
    let runs = Saturation::run(rt, body, p.bare(), p.gateway())?;
    let written = tollgate_bench::load::storage_written(p.gateway_pid) - written;
    drop(profile);
    let total = runs.proxy_total();
    println!("  saturation, 16 connections, {}, proxy on one CPU:", rounds());
    println!("{}; RSS {:.1} MiB", runs.report("    ", "tollgate-gateway"), total.max_rss / 1024.0);
    // Not timing: what the ledger's pages cost the disk, the same from run to run.
    println!("    ledger and audit writes to storage: {:.2} KiB per call", written / total.calls / 1024.0);
    println!("  {}", tollgate_bench::target("CPU per call, the gateway's / the bare proxy's", runs.cpu_ratio().0, if budget { 2.5 } else { 2.0 }, "×"));
    println!("  {}", tollgate_bench::target("p50 via the gateway / via the bare proxy", g50 / b50, 1.2, "×"));
    println!("  {}", tollgate_bench::target("p99 via the gateway / via the bare proxy", g99 / b99, 1.5, "×"));
    println!("  {}", tollgate_bench::target("first stream event p50, added to the bare proxy's", fg50 - fb50, 50.0, " µs"));
    Ok(total.per_call())
}

/// A chat completion of about 1 KiB answered, and a stream.
fn bodies() -> (Bytes, Bytes) {
    let content = "Summarise the test run. ".repeat(10);
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 256, "messages": [{"role": "user", "content": content}]});
    let stream = serde_json::json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Go."}]});
    (Bytes::from(body.to_string()), Bytes::from(stream.to_string()))
}

/// A budget over every call, once the gateway has seen it (it reserves against it from then on).
fn add_budget(cp: &ControlPlane) -> Result<()> {
    cp.apply(User::Admin, NS, "apiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: bench}\nspec: {period: Monthly, hardLimitUSD: 1000000}\n")?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let b = cp.kubectl_ok(User::Admin, ["get", "budget", "bench", "-n", NS, "-o", "jsonpath={.status.state}"])?;
        Ok((!b.trim().is_empty()).then_some(()))
    })
}

/// The namespace with a provider and an agent; the key the operator minted for it.
fn agent_key(cp: &ControlPlane, provider: &str) -> Result<String> {
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    let objects = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: openai}}\nspec: {{type: openai, baseURL: \"{provider}/v1\", models: [{{name: gpt-4o-mini, pricing: {{inputPerMillionUSD: 0.15, outputPerMillionUSD: 0.6}}}}]}}\n---\n\
         apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {{name: coder}}\nspec: {{selector: {{matchLabels: {{app: coder}}}}, serviceAccountName: coder, models: {{allowed: [\"*\"]}}}}\n"
    );
    cp.apply(User::Admin, NS, &objects)?;
    let key = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let out = cp.kubectl(User::Admin, ["get", "secret", "tollgate-key-coder", "-n", NS, "-o", "jsonpath={.data.api-key}"])?;
        let encoded = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((!encoded.is_empty()).then(|| base64::engine::general_purpose::STANDARD.decode(&encoded).ok().and_then(|k| String::from_utf8(k).ok())).flatten())
    })
    .context("the agent's key")?;

    Ok(key)
}

/// The gateway on CPU 1, its ledger in SQLite, ready; and its port.
fn start_gateway(cp: &ControlPlane, gateway_bin: &std::path::Path) -> Result<(Process, u16)> {
    cp.install_tollgate_system()?;
    let kubeconfig = cp.service_account_kubeconfig("tollgate-system", "tollgate-gateway")?;
    let [port, admin] = free_ports::<2>()?;
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(gateway_bin)
        .env("KUBECONFIG", &kubeconfig)
        // Logging as the operator deploys it (JSON, the default filter): the gateway measured is
        // the gateway deployed, its per-call log lines included.
        .env_remove("RUST_LOG")
        .env("TOLLGATE_LOG_JSON", "true")
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("TOLLGATE_DATABASE_URL", format!("sqlite://{}?mode=rwc", cp.dir().join("bench-ledger.db").display()));
    let gateway = Process::spawn(cmd, cp.dir().join("gateway.log"))?;
    gateway.wait_http_ok("the gateway", admin, "/readyz")?;
    Ok((gateway, port))
}
