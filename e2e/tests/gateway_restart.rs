//! A gateway stopped mid-call: killed (SIGKILL, as a node failure), the call it was streaming is
//! settled by its successor as interrupted, at the estimate its budget already holds, once; shut
//! down (SIGTERM, as a rolling update), it finishes the stream and settles it before it exits.
//! The ledger is read directly (SQLite), so what is checked is what is stored.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::operator;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use tollgate_e2e::gateway::{GatewayProcess, Scene};
use tollgate_e2e::{ControlPlane, wait_until};

fn sql(db: &Path, query: &str) -> Result<Vec<Vec<Value>>> {
    tollgate_e2e::gateway::ledger_rows(db, query)
}

/// The one integer `query` selects: no row, or a NULL, is an error (a wrong query must not read
/// as zero); a sum over no rows says `COALESCE(SUM(…), 0)` itself.
fn count(db: &Path, query: &str) -> Result<i64> {
    let rows = sql(db, query)?;
    match rows.as_slice() {
        [row] => row.first().and_then(Value::as_i64).with_context(|| format!("{query}: not one integer: {row:?}")),
        _ => anyhow::bail!("{query}: {} rows, not one: {rows:?}", rows.len()),
    }
}

/// A streamed call POSTed to `path`, read up to its first event; the fake provider holds the rest
/// until the test releases the tag its last message names (`hold:<tag>`).
fn open(port: u16, path: &str, auth: &str, body: &Value) -> Result<BufReader<TcpStream>> {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: gw\r\n{auth}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the stream ended before its first event");
        }
        if line.starts_with("data:") {
            return Ok(reader);
        }
    }
}

/// A streamed chat call of the `slow` model.
fn open_stream(port: u16, key: &str, tag: &str) -> Result<BufReader<TcpStream>> {
    let body = json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": format!("hold:{tag}")}]});
    open(port, "/openai/v1/chat/completions", &format!("authorization: Bearer {key}"), &body)
}

/// A streamed Anthropic message of `claude-sonnet-4-5`.
fn open_anthropic_stream(port: u16, key: &str, tag: &str) -> Result<BufReader<TcpStream>> {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true, "messages": [{"role": "user", "content": format!("hold:{tag}")}]});
    open(port, "/anthropic/v1/messages", &format!("x-api-key: {key}"), &body)
}

fn rest(mut reader: BufReader<TcpStream>) -> String {
    let mut out = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        out.push_str(&line);
        line.clear();
    }
    out
}

fn scene(prefix: &str, budget: &str, models: &str) -> Result<Scene> {
    operator();
    Scene::with_total_budget(ControlPlane::shared(), prefix, budget, models)
}

#[test]
fn a_gateway_stopped_mid_stream_loses_no_call_and_counts_none_twice() -> Result<()> {
    let Scene { fake, ns, key, db, port } = scene("gateway-restart", "slow", ", models: [slow]")?;
    let cp = ControlPlane::shared();
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let lease = [("TOLLGATE_INSTANCE_LEASE_SECONDS", "2")];
    let rows = |status: i64| count(&db, &format!("SELECT COUNT(*) FROM ledger WHERE namespace = '{ns}' AND status = {status}"));
    let spent = || count(&db, "SELECT spent_micros FROM budget_spend WHERE budget LIKE '%/slow'");
    let charged = || count(&db, &format!("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE namespace = '{ns}' AND model = 'slow'"));
    let inflight = || count(&db, "SELECT COUNT(*) FROM inflight");

    // Killed mid-stream: the call was reserved (and written in flight) before it was forwarded.
    let first = GatewayProcess::start_with(cp, &url, port, &lease)?;
    let stream = open_stream(port, &key, "killed")?;
    ensure!(inflight()? == 1, "the call is in flight in the ledger before it is answered");
    let estimate = spent()?;
    ensure!(estimate > 0, "its estimate is reserved");
    first.process.kill();
    drop(stream);
    ensure!(rows(0)? == 0 && charged()? == 0, "nothing settled by a killed gateway");

    // Its successor settles it, once, at what its budget already holds.
    let second = GatewayProcess::start_with(cp, &url, port, &lease)?;
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || Ok((rows(0)? == 1 && inflight()? == 0).then_some(())))
        .with_context(|| format!("the interrupted call is not settled: {:?}", sql(&db, "SELECT * FROM inflight")))?;
    assert_eq!((charged()?, spent()?), (estimate, estimate), "charged once, at its estimate");
    let audited = count(&db, &format!("SELECT COUNT(*) FROM audit WHERE namespace = '{ns}' AND record LIKE '%interrupted%'"))?;
    assert_eq!(audited, 1, "the interrupted call is in the audit store once");

    // Shut down mid-stream: the stream is finished and settled before the gateway exits.
    let stream = open_stream(port, &key, "terminated")?;
    second.process.terminate();
    // Still serving the stream it has, and no longer taking calls, before the provider ends it.
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || Ok(TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())))
        .context("a stopping gateway still takes connections")?;
    ensure!(second.process.exited().is_none(), "the gateway exited with a stream in progress");
    fake.release("terminated")?;
    let tail = rest(stream);
    assert!(tail.contains("[DONE]"), "the stream was cut off by a graceful stop: {tail}");
    wait_until(Duration::from_secs(15), Duration::from_millis(50), || Ok(second.process.exited()))
        .with_context(|| format!("the gateway did not stop: {}", second.process.log_tail()))?;
    ensure!(TcpStream::connect(("127.0.0.1", port)).is_err(), "a stopped gateway still takes connections");
    assert_eq!((rows(200)?, rows(0)?, inflight()?), (1, 1, 0), "{:?}", sql(&db, "SELECT model, status, cost_micros FROM ledger"));
    let served = count(&db, &format!("SELECT cost_micros FROM ledger WHERE namespace = '{ns}' AND status = 200"))?;
    ensure!(served > 0 && served < estimate, "the finished call is charged its actual usage ({served}), not its estimate ({estimate})");
    assert_eq!(spent()?, estimate + served, "the budget holds exactly what the ledger charged");
    assert_eq!(charged()?, estimate + served);
    Ok(())
}

/// A client that leaves an Anthropic stream after its first event (`message_start`, which counts
/// one output token) is charged the call's reservation, not that one token: the provider runs,
/// and bills, the whole answer.
#[test]
fn a_stream_the_client_leaves_early_costs_its_reservation() -> Result<()> {
    let scene = scene("gateway-left", "sonnet", "")?;
    let (fake, ns, key, db, port) = (&scene.fake, &scene.ns, &scene.key, &scene.db, scene.port);
    let _gateway = GatewayProcess::start_with(ControlPlane::shared(), &scene.ledger_url(), port, &[])?;
    let stream = open_anthropic_stream(port, key, "left")?;
    let estimate = count(db, "SELECT spent_micros FROM budget_spend WHERE budget LIKE '%/sonnet'")?;
    ensure!(estimate > 0, "its estimate is reserved");
    drop(stream);
    // Settled while the provider is still silent: the gateway notices the client has gone.
    let charged = settled(db, ns).context("a call left early, its provider silent, is not settled")?;
    assert_eq!(charged, estimate, "charged what its first event said, not its reservation");
    fake.release("left")?;
    Ok(())
}

/// The one ledger row of `ns`'s calls, once there is one: its cost.
fn settled(db: &Path, ns: &str) -> Result<i64> {
    wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        let rows = sql(db, &format!("SELECT cost_micros FROM ledger WHERE namespace = '{ns}'"))?;
        Ok(rows.first().and_then(|r| r.first()).and_then(Value::as_i64))
    })
}

/// A provider that stops sending mid-stream does not hold the call for ever: after the
/// provider timeout without an event, the stream ends for the client with an error and costs
/// its reservation.
#[test]
fn a_stream_whose_provider_stalls_ends_and_costs_its_reservation() -> Result<()> {
    let scene = scene("gateway-stall", "slow", ", models: [slow]")?;
    let (fake, ns, key, db, port) = (&scene.fake, &scene.ns, &scene.key, &scene.db, scene.port);
    let _gateway = GatewayProcess::start_with(ControlPlane::shared(), &scene.ledger_url(), port, &[("TOLLGATE_PROVIDER_TIMEOUT_SECONDS", "2")])?;
    let stream = open_stream(port, key, "stalled")?;
    let estimate = count(db, "SELECT spent_micros FROM budget_spend WHERE budget LIKE '%/slow'")?;
    let started = std::time::Instant::now();
    let tail = rest(stream);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8) && !tail.contains("[DONE]"), "a stalled stream was kept {took:?}: {tail}");
    assert_eq!(settled(db, ns)?, estimate, "a stalled stream costs its reservation");
    fake.release("stalled")?;
    Ok(())
}

/// A client that stops reading a stream (its socket full) is cut off once the gateway could
/// write nothing to it for `TOLLGATE_CLIENT_WRITE_SECONDS`, and its call is settled at its
/// reservation: it used to hold the stream, the provider's connection and the reservation for
/// as long as it kept its socket open.
#[test]
fn a_client_that_stops_reading_a_stream_is_cut_off_and_charged_its_reservation() -> Result<()> {
    let Scene { fake: _fake, ns, key, db, port } = scene("gateway-unread", "flood", ", models: [flood]")?;
    let cp = ControlPlane::shared();
    let _gateway = GatewayProcess::start_with(cp, &format!("sqlite://{}?mode=rwc", db.display()), port, &[("TOLLGATE_CLIENT_WRITE_SECONDS", "2")])?;
    let body = json!({"model": "flood", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    // Read up to the first event, then nothing more, with the socket kept open.
    let stalled = open(port, "/openai/v1/chat/completions", &format!("authorization: Bearer {key}"), &body)?;
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let r = sql(&db, &format!("SELECT cost_micros, status FROM ledger WHERE namespace = '{ns}' AND model = 'flood'"))?;
        Ok(r.first().cloned())
    })
    .context("a client reading nothing held its stream (and its reservation) past the write deadline")?;
    let spent = count(&db, "SELECT spent_micros FROM budget_spend WHERE budget LIKE '%/flood'")?;
    ensure!(settled[0].as_i64() == Some(spent) && spent > 1_000, "the call cost {settled:?}, not its reservation ({spent} micro-USD held)");
    ensure!(count(&db, "SELECT COUNT(*) FROM inflight")? == 0, "the call is still in flight");
    drop(stalled);
    Ok(())
}

/// A budget far from its limit is leased into the gateway's memory, and its calls are reserved
/// from it; the allowance is drawn by the calls it served, handed back when idle and when the
/// gateway stops, and charged whole when the gateway dies (the calls it served last may be in
/// it, not yet written). Throughout, what the budget holds is what the ledger charged.
#[test]
fn a_gateways_allowance_is_drawn_handed_back_and_charged_when_it_dies() -> Result<()> {
    let Scene { fake: _fake, ns, key, db, port } = scene("gateway-lease", "cheap", ", models: [cheap]")?;
    let cp = ControlPlane::shared();
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let env = [("TOLLGATE_INSTANCE_LEASE_SECONDS", "2")];
    let budget = "budget LIKE '%/cheap'";
    let leased = || count(&db, &format!("SELECT leased_micros FROM budget_spend WHERE {budget}"));
    let lease_rows = || count(&db, &format!("SELECT COUNT(*) FROM budget_leases WHERE {budget}"));
    let spent = || count(&db, &format!("SELECT spent_micros FROM budget_spend WHERE {budget}"));
    let charged = || count(&db, &format!("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE namespace = '{ns}'"));
    let calls = |n: usize| -> Result<()> {
        for _ in 0..n {
            let status =
                tollgate_e2e::gateway::chat_status(port, &key, r#"{"model": "cheap", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}"#)?;
            ensure!(status == "200", "a call answered {status}");
        }
        Ok(())
    };
    let settled = |n: i64| {
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            Ok((count(&db, &format!("SELECT COUNT(*) FROM ledger WHERE namespace = '{ns}' AND model = 'cheap'"))? == n).then_some(()))
        })
    };

    let first = GatewayProcess::start_with(cp, &url, port, &env)?;
    calls(20)?;
    ensure!(leased()? > 0 && lease_rows()? == 1, "no allowance was leased for a budget far from its limit");
    settled(20)?;
    ensure!(count(&db, "SELECT COUNT(*) FROM inflight")? == 0, "calls still in flight");
    assert_eq!(spent()?, charged()?, "the calls served from the allowance are drawn from it as they are written");
    // Idle, it goes back.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok((leased()? == 0 && lease_rows()? == 0).then_some(())))
        .context("an idle allowance was kept")?;
    // Leased again, and handed back by a gateway that stops.
    calls(5)?;
    ensure!(leased()? > 0, "no allowance for the next calls");
    first.process.terminate();
    wait_until(Duration::from_secs(15), Duration::from_millis(50), || Ok(first.process.exited())).context("the gateway did not stop")?;
    assert_eq!((leased()?, lease_rows()?), (0, 0), "a stopped gateway keeps no allowance");
    assert_eq!(spent()?, charged()?);

    // Killed holding one: its successor charges it, whole, and says so in the ledger.
    let second = GatewayProcess::start_with(cp, &url, port, &env)?;
    calls(5)?;
    let held = leased()?;
    ensure!(held > 0, "no allowance leased");
    second.process.kill();
    let _third = GatewayProcess::start_with(cp, &url, port, &env)?;
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || Ok((lease_rows()? == 0).then_some(())))
        .context("a dead gateway's allowance is still held")?;
    assert_eq!(leased()?, 0);
    let charge = count(&db, &format!("SELECT cost_micros FROM ledger WHERE namespace = '{ns}' AND agent = '' AND status = 0"))?;
    ensure!(charge > 0 && charge <= held, "the dead gateway's allowance charged {charge} (it held {held})");
    assert_eq!(spent()?, charged()?, "what the budget holds is what the ledger charged, the dead gateway's allowance included");
    let audited = count(&db, &format!("SELECT COUNT(*) FROM audit WHERE namespace = '{ns}' AND record LIKE '%charged whole%'"))?;
    assert_eq!(audited, 1);
    Ok(())
}

/// A gateway on an empty ledger (its SQLite volume lost, or a new one) starts a budget period
/// it never counted from the spend the Budget's status shows, as it reserves its first call
/// there: it used to count the period again from nothing, letting through what the budget had
/// refused.
#[test]
fn a_gateway_on_an_empty_ledger_starts_a_budget_from_its_status() -> Result<()> {
    let counted = Counted::by_a_first_gateway("gateway-floor")?;
    let (scene, cp, shown) = (&counted.scene, ControlPlane::shared(), counted.shown);
    let (spent_usd, chat) = (|| counted.spent_usd(), |port: u16| counted.chat(port));

    // The same Budget, a new ledger: the period starts from the status, and the call adds to it.
    let db = cp.dir().join(format!("{}-new-ledger.db", scene.ns));
    let second = GatewayProcess::start(cp, &format!("sqlite://{}?mode=rwc", db.display()))?;
    ensure!(chat(second.port)? == "200", "a call within the budget is served");
    let budget = format!("SELECT spent_micros FROM budget_spend WHERE budget = '{}/total'", scene.ns);
    let charged = format!("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE namespace = '{}'", scene.ns);
    let settled = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        let charged = count(&db, &charged)?;
        Ok((charged > 0).then_some(charged))
    })?;
    assert_eq!(count(&db, &budget)?, (shown * 1e6).round() as i64 + settled, "the period starts from the status's {shown} USD");
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || Ok((spent_usd()? > shown).then_some(())))
        .with_context(|| format!("the status went back from {shown} USD: {}", spent_usd().unwrap_or_default()))?;
    Ok(())
}

/// A gateway taking over a budget whose period another Gateway's ledger counted, its own ledger
/// having counted the budget in another period, leaves the Budget's status alone until its first
/// call there and starts the period from it. It used to start the period from nothing (its
/// ledger "knew" the budget), and its status loop wrote the nothing over the figure.
#[test]
fn a_gateway_taking_over_starts_the_period_from_the_status_though_it_counted_another() -> Result<()> {
    let counted = Counted::by_a_first_gateway("gateway-takeover")?;
    let (scene, cp, shown) = (&counted.scene, ControlPlane::shared(), counted.shown);
    let (spent_usd, chat) = (|| counted.spent_usd(), |port: u16| counted.chat(port));

    // The successor's ledger counted this budget once, in another period.
    let db = cp.dir().join(format!("{}-successor-ledger.db", scene.ns));
    let url = format!("sqlite://{}?mode=rwc", db.display());
    drop(GatewayProcess::start(cp, &url)?);
    let earlier = format!("INSERT INTO budget_spend (budget, period_start_us, spent_micros) VALUES ('{}/total', 12345, 7)", scene.ns);
    ledger_exec(&db, &earlier)?;
    let second = GatewayProcess::start(cp, &url)?;
    // Its status loop (every second) keeps the figure, saying so, rather than write its nothing.
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let kept = std::fs::read_to_string(&second.process.log)?.contains("budget status kept: another ledger counted this period");
        Ok((kept || spent_usd()? != shown).then_some(()))
    })
    .context("the successor's status loop never came to the budget")?;
    assert_eq!(spent_usd()?, shown, "the status kept the figure the successor starts from");
    ensure!(chat(second.port)? == "200", "a call within the budget is served");
    let this_period = format!("SELECT spent_micros FROM budget_spend WHERE budget = '{}/total' AND period_start_us = 0", scene.ns);
    let charged = format!("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE namespace = '{}'", scene.ns);
    let settled = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        let charged = count(&db, &charged)?;
        Ok((charged > 0 && count(&db, "SELECT COUNT(*) FROM inflight")? == 0).then_some(charged))
    })?;
    assert_eq!(count(&db, &this_period)?, (shown * 1e6).round() as i64 + settled, "the period starts from the status's {shown} USD");
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || Ok((spent_usd()? > shown).then_some(())))
        .with_context(|| format!("the status went back from {shown} USD: {}", spent_usd().unwrap_or_default()))?;
    Ok(())
}

/// A Budget (`total`) that a first gateway counted one call against, stopped once the Budget's
/// status shows the settled call: the figure (`shown`, USD) a later gateway starts from.
struct Counted {
    scene: Scene,
    shown: f64,
}

impl Counted {
    fn by_a_first_gateway(prefix: &str) -> Result<Counted> {
        let scene = scene(prefix, "total", "")?;
        let cp = ControlPlane::shared();
        let mut counted = Counted { scene, shown: 0.0 };
        let first = GatewayProcess::start_with(cp, &counted.scene.ledger_url(), counted.scene.port, &[])?;
        ensure!(counted.chat(first.port)? == "200", "the first call is served");
        // The status once it shows the settled call (a refresh while it was in flight shows its estimate).
        let db = &counted.scene.db;
        let old_spent = format!("SELECT spent_micros FROM budget_spend WHERE budget = '{}/total'", counted.scene.ns);
        counted.shown = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            let settled = count(db, "SELECT COUNT(*) FROM inflight")? == 0 && count(db, "SELECT COUNT(*) FROM ledger")? == 1;
            let shown = counted.spent_usd()?;
            Ok((settled && shown > 0.0 && (shown * 1e6).round() as i64 == count(db, &old_spent)?).then_some(shown))
        })
        .context("the budget's status never showed the settled call's spend")?;
        Ok(counted)
    }

    fn spent_usd(&self) -> Result<f64> {
        let budget = tollgate_e2e::gateway::get(ControlPlane::shared(), &self.scene.ns, "budget", "total")?;
        Ok(budget["status"]["spentUSD"].as_f64().unwrap_or(0.0))
    }

    /// The HTTP status of a small chat call to the gateway on `port`.
    fn chat(&self, port: u16) -> Result<String> {
        let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hello"}]}).to_string();
        tollgate_e2e::gateway::chat_status(port, &self.scene.key, &body)
    }
}

/// Runs one statement on the SQLite ledger at `db`, committed.
fn ledger_exec(db: &Path, statement: &str) -> Result<()> {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(sys.argv[2])\nc.commit()";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(db).arg(statement).output()?;
    ensure!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
