//! Scale (docs/design.md §5):
//! - the operator's memory once it has reconciled 2,000 Tollgate objects;
//! - sidecars by the hundred on one API server: its watches and memory, the sidecars' own memory,
//!   and the time from a policy edit to the last sidecar enforcing it, measured with 200 and 500
//!   sidecars and projected (linearly) to 1,000.
//!
//! Build first: `cargo build --release --workspace --bins`. Every sidecar is a real process with
//! its own identity, watches and connection to the API server.

use anyhow::{Context, Result};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tollgate_bench::load::{Conn, MockAnswer, memory_breakdown, mock_upstream, rss_kib};
use tollgate_e2e::{ControlPlane, Launch, Operator, Sidecar, User, wait_until};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NS: &str = "scale";
/// Namespaces × objects per namespace = the operator's 2,000.
const OPERATOR_NAMESPACES: usize = 20;

fn main() -> Result<()> {
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let sidecar_bin = std::env::var_os("TOLLGATE_BENCH_SIDECAR").map_or_else(|| release.join("tollgate-sidecar"), PathBuf::from);
    anyhow::ensure!(sidecar_bin.is_file(), "build first: cargo build --release --workspace --bins");
    let upstream = format!("{}/mcp", mock_upstream(MockAnswer::Mcp)?);
    let cp = ControlPlane::start()?;
    let operator = Operator::start(&cp)?;
    operator_memory(&cp, &operator, &upstream)?;
    // `TOLLGATE_BENCH_SCALE=operator`: the operator's part alone (a minute, not fifteen).
    if std::env::var("TOLLGATE_BENCH_SCALE").as_deref() != Ok("operator") {
        sidecars(&cp, &upstream, &sidecar_bin)?;
    }
    drop(operator);
    tollgate_bench::finish()
}

/// The operator's RSS idle, at its peak while 2,000 objects are reconciled, and once they are.
fn operator_memory(cp: &ControlPlane, operator: &Operator, upstream: &str) -> Result<()> {
    let pid = operator.process.pid().context("operator pid")?;
    let idle = memory_breakdown(pid).text;
    for n in 0..OPERATOR_NAMESPACES {
        let ns = format!("scale-op-{n}");
        cp.kubectl_ok(User::Admin, ["create", "namespace", &ns])?;
        apply_file(cp, &ns, &operator_objects(upstream))?;
    }
    let started = Instant::now();
    let mut peak = rss_kib(pid);
    let total = OPERATOR_NAMESPACES * 100;
    wait_until(Duration::from_secs(300), Duration::from_millis(200), || {
        peak = peak.max(rss_kib(pid));
        let seen = cp.kubectl_ok(
            User::Admin,
            [
                "get",
                "toolpolicies,managedagents,mcpservers,approvalworkflows",
                "-A",
                "-l",
                "scale=operator",
                "-o",
                "jsonpath={range .items[*]}{.status.observedGeneration}{\"\\n\"}{end}",
            ],
        )?;
        Ok((seen.lines().filter(|l| !l.is_empty()).count() >= total).then_some(()))
    })
    .context("the operator reconciling every object")?;
    let after = rss_kib(pid);
    println!("operator with {total} objects (ToolPolicies, ManagedAgents and their keys, MCPServers, ApprovalWorkflows in {OPERATOR_NAMESPACES} namespaces)");
    println!("  idle before: {idle}");
    println!("  all reconciled in {:.1} s; RSS peak {:.1} MiB; after: {}", started.elapsed().as_secs_f64(), peak / 1024.0, memory_breakdown(pid).text);
    println!("  {}", tollgate_bench::target("operator RSS with 2,000 objects", after / 1024.0, 32.0, " MiB"));
    Ok(())
}

/// One namespace's 100 objects: 40 policies, 25 agents, 15 servers, 20 workflows.
fn operator_objects(upstream: &str) -> String {
    let mut out = String::new();
    let meta = |name: String| format!("metadata: {{name: {name}, labels: {{scale: operator}}}}");
    for i in 0..40 {
        out.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ToolPolicy\n{}\nspec: {{tools: [{{name: \"write_*\", approvalWorkflow: w{}, rules: [{{action: Deny, when: \"args.path.startsWith('/etc/')\"}}, {{action: RequireApproval}}]}}]}}\n---\n",
            meta(format!("p{i}")),
            i % 20
        ));
    }
    for i in 0..25 {
        out.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\n{}\nspec: {{selector: {{matchLabels: {{app: a{i}}}}}, serviceAccountName: a{i}, mcpServers: [\"*\"]}}\n---\n",
            meta(format!("a{i}"))
        ));
    }
    for i in 0..15 {
        out.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\n{}\nspec: {{url: \"{upstream}\", timeoutSeconds: 5}}\n---\n",
            meta(format!("s{i}"))
        ));
    }
    for i in 0..20 {
        out.push_str(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ApprovalWorkflow\n{}\nspec: {{approvers: {{users: [u{i}]}}, requiredApprovals: 1}}\n---\n",
            meta(format!("w{i}"))
        ));
    }
    out
}

fn apply_file(cp: &ControlPlane, ns: &str, yaml: &str) -> Result<()> {
    let path = cp.dir().join(format!("{ns}.yaml"));
    std::fs::write(&path, yaml)?;
    cp.kubectl_ok(User::Admin, ["apply", "-n", ns, "-f", path.to_str().context("path")?])?;
    Ok(())
}

/// What the API server carries with `n` sidecars, and how long a policy edit takes to reach all.
struct AtScale {
    sidecars: usize,
    watches: f64,
    apiserver_mib: f64,
    slowest_ms: f64,
}

/// Sidecars started to 200, measured, then to 500, measured; the projection to 1,000.
fn sidecars(cp: &ControlPlane, upstream: &str, bin: &Path) -> Result<()> {
    cp.kubectl_ok(User::Admin, ["create", "namespace", NS])?;
    apply_file(cp, NS, &format!(include_str!("bench-objects.yaml.in"), upstream = upstream))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let apiserver = cp.component_pid("kube-apiserver").context("kube-apiserver pid")?;
    println!("\nsidecars on one API server (binary {}); API server RSS with none: {:.1} MiB", bin.display(), rss_kib(apiserver) / 1024.0);
    let mut running: Vec<Sidecar> = Vec::new();
    let mut conns: Vec<Caller> = Vec::new();
    let mut points = Vec::new();
    for n in [200, 500] {
        let started = Instant::now();
        while running.len() < n {
            let i = running.len();
            let sidecar = Sidecar::start_binary(cp, NS, "coder", "coder", &format!("pod-{i}"), bin, Launch::Direct, &[], &[])?;
            conns.push(Caller { url: format!("{}/mcp/upstream", sidecar.base), conn: None });
            running.push(sidecar);
        }
        let start_s = started.elapsed().as_secs_f64();
        let anonymous: f64 = running.iter().filter_map(|s| s.process.pid()).map(|pid| memory_breakdown(pid).anonymous_kib).sum();
        let mut slowest: Vec<u64> = Vec::new();
        for round in 0..4 {
            slowest.push(propagate(cp, &rt, &mut conns, round)?);
        }
        // After round 3 (Allow): a sweep that finds every sidecar enforcing as it is.
        let sweep = sweep_ms(&rt, &mut conns, false)?;
        let point = AtScale {
            sidecars: n,
            watches: watch_count(cp)?,
            apiserver_mib: rss_kib(apiserver) / 1024.0,
            slowest_ms: tollgate_bench::quantile_us(&mut slowest, 1.0) / 1000.0,
        };
        println!(
            "  {n} sidecars (started in {start_s:.0} s): {:.0} watches open; API server RSS {:.1} MiB; sidecars' anonymous memory {:.1} MiB in all ({:.1} MiB each); policy edit → enforced by all: slowest of 4 {:.0} ms (a sweep of calls to all, {IN_FLIGHT} at once: {sweep:.0} ms)",
            point.watches,
            point.apiserver_mib,
            anonymous / 1024.0,
            anonymous / 1024.0 / n as f64,
            point.slowest_ms
        );
        points.push(point);
    }
    project(&points)
}

/// A straight line through the two measured points, read at 1,000 sidecars.
fn project(points: &[AtScale]) -> Result<()> {
    let [a, b] = points else { anyhow::bail!("two measured points") };
    let at = |f: fn(&AtScale) -> f64| f(b) + (f(b) - f(a)) / (b.sidecars - a.sidecars) as f64 * (1000 - b.sidecars) as f64;
    let (watches, memory, slowest) = (at(|p| p.watches), at(|p| p.apiserver_mib), at(|p| p.slowest_ms));
    println!("  projected to 1,000 sidecars: {watches:.0} watches; API server RSS {memory:.0} MiB; policy edit → enforced by all {slowest:.0} ms");
    println!("  {}", tollgate_bench::target("policy edit → enforced by all 500 sidecars", b.slowest_ms, 2000.0, " ms"));
    println!("  {}", tollgate_bench::target("policy edit → enforced by 1,000 sidecars (projected)", slowest, 2000.0, " ms"));
    Ok(())
}

/// Calls to sidecars in flight at once in a sweep: with one call at a time, a sweep of 500
/// sidecars took longer than the edit took to reach them, and the figure measured the sweep.
const IN_FLIGHT: usize = 32;

/// Flips the `toggle` tool's rule and calls every sidecar until each enforces the new rule; the
/// time from the edit to the last one, in nanoseconds. Every sidecar is asked in each sweep (up
/// to [`IN_FLIGHT`] at once) until it enforces the rule, so the figure is at most one sweep late.
fn propagate(cp: &ControlPlane, rt: &tokio::runtime::Runtime, conns: &mut [Caller], round: usize) -> Result<u64> {
    let deny = round.is_multiple_of(2);
    let patch = format!(r#"[{{"op":"replace","path":"/spec/tools/2/rules/0/action","value":"{}"}}]"#, if deny { "Deny" } else { "Allow" });
    cp.kubectl_ok(User::Admin, ["patch", "tp", "bench", "-n", NS, "--type=json", "-p", &patch])?;
    let applied = Instant::now();
    let mut enforcing = vec![false; conns.len()];
    rt.block_on(async {
        while enforcing.contains(&false) {
            let left = enforcing.iter().filter(|e| !**e).count();
            anyhow::ensure!(applied.elapsed() < Duration::from_secs(30), "{left} sidecars still not enforcing after 30 s");
            sweep(conns, &mut enforcing, deny).await?;
        }
        anyhow::Ok(())
    })?;
    Ok(u64::try_from(applied.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Calls each sidecar not yet `enforcing` the rule once, and notes which now do.
async fn sweep(conns: &mut [Caller], enforcing: &mut [bool], deny: bool) -> Result<()> {
    use futures::StreamExt;
    let toggle = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"toggle","arguments":{}}}"#);
    let calls = conns.iter_mut().zip(enforcing.iter_mut()).filter(|(_, done)| !**done).map(|(conn, done)| {
        let toggle = toggle.clone();
        async move {
            let text = conn.text(&toggle).await?;
            *done = text.contains("Access denied") == deny;
            anyhow::Ok(())
        }
    });
    let answers: Vec<Result<()>> = futures::stream::iter(calls).buffer_unordered(IN_FLIGHT).collect().await;
    answers.into_iter().collect()
}

/// How long one sweep of calls to every sidecar takes, with nothing to wait for: how late the
/// propagation figure may be.
fn sweep_ms(rt: &tokio::runtime::Runtime, conns: &mut [Caller], deny: bool) -> Result<f64> {
    let started = Instant::now();
    let mut enforcing = vec![false; conns.len()];
    rt.block_on(sweep(conns, &mut enforcing, deny))?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// A sidecar's address and a connection to it, opened again when the sidecar closed it idle.
struct Caller {
    url: String,
    conn: Option<Conn>,
}

impl Caller {
    async fn text(&mut self, body: &Bytes) -> Result<String> {
        if let Some(conn) = &mut self.conn
            && let Ok(text) = conn.text(body).await
        {
            return Ok(text);
        }
        let conn = self.conn.insert(Conn::open(&self.url, &[]).await?);
        conn.text(body).await
    }
}

/// Watches the API server holds open now (its own gauge of long-running requests).
fn watch_count(cp: &ControlPlane) -> Result<f64> {
    let metrics = cp.kubectl_ok(User::Admin, ["get", "--raw", "/metrics"])?;
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{") && l.contains("verb=\"WATCH\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}
