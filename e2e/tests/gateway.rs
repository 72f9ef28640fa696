//! The model gateway with the official `openai` and `anthropic` SDKs as the agent (configured
//! only by the variables injection gives a pod), a fake provider speaking both wire formats, the
//! operator minting the agent's key, and the ledger in SQLite or a real PostgreSQL.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, GatewayProcess, OPENAI_KEY, Scene, agent_key, get, model_client, model_records};
use tollgate_e2e::postgres::Postgres;
use tollgate_e2e::{ControlPlane, User, wait_until};

fn text(step: &Value) -> &str {
    step["text"].as_str().unwrap_or_default()
}

#[test]
fn the_official_sdks_call_models_through_the_gateway_under_the_agents_key() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "gateway", "")?;
    // One thread, as on one CPU: the other tests run the gateway's multi-threaded runtime.
    let gateway = GatewayProcess::start_single_threaded(cp, &scene.ledger_url())?;
    let Scene { fake, ns, key, .. } = scene;
    let env = gateway.agent_env(&key);
    let steps = model_client(
        &env,
        &json!([
            {"op": "models"},
            {"op": "chat", "model": "fast"},
            {"op": "chat", "model": "gpt-4o-mini", "stream": true},
            {"op": "chat", "model": "gpt-4o-mini", "stream": true, "include_usage": true},
            {"op": "responses", "model": "gpt-4o-mini"},
            {"op": "responses", "model": "gpt-4o-mini", "stream": true},
            {"op": "messages", "model": "sonnet"},
            {"op": "messages", "model": "claude-sonnet-4-5", "stream": true},
            {"op": "chat", "model": "slow", "stream": true},
        ]),
    )?;
    for s in &steps {
        ensure!(s["ok"] == true, "{s}");
    }
    let models: Vec<&str> = steps[0]["models"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(models.contains(&"gpt-4o-mini") && models.contains(&"fast") && !models.contains(&"gpt-5"), "only what the agent may use: {models:?}");
    assert_eq!(text(&steps[1]), "Hello from gpt-4o-mini", "an alias is the model it names");
    assert!(steps[1]["usage"]["prompt_tokens"].as_u64().is_some());
    assert_eq!(text(&steps[2]), "Hello from gpt-4o-mini");
    assert!(steps[2]["usage"].is_null(), "usage the client did not ask for is not shown to it: {}", steps[2]);
    assert!(steps[3]["usage"]["completion_tokens"].as_u64() == Some(5), "usage it asked for is: {}", steps[3]);
    assert_eq!(text(&steps[4]), "Hello from gpt-4o-mini");
    assert_eq!(text(&steps[5]), "Hello from gpt-4o-mini");
    assert!(steps[5]["usage"]["output_tokens"].as_u64() == Some(5), "{}", steps[5]);
    assert_eq!(text(&steps[6]), "Hello from claude-sonnet-4-5");
    assert_eq!(text(&steps[7]), "Hello from claude-sonnet-4-5");
    assert_eq!(steps[7]["usage"]["output_tokens"], 5);
    // The stream is passed on event by event: its first event came long before its end.
    let (first, total) = (steps[8]["first_event_s"].as_f64().unwrap_or(f64::MAX), steps[8]["total_s"].as_f64().unwrap_or(0.0));
    assert!(first + 0.5 < total, "the first event waited for the stream: first {first}s, total {total}s");

    // What the provider saw: its own key, the model's own name, usage asked for; never the agent's key.
    let calls = fake.calls()?;
    assert_eq!(calls.len(), 8, "{calls:?}");
    for c in &calls {
        let shown = c.to_string();
        assert!(!shown.contains(&key), "the agent's key reached the provider: {shown}");
    }
    let chat: Vec<&Value> = calls.iter().filter(|c| c["path"] == "/v1/chat/completions").collect();
    assert_eq!(chat[0]["headers"]["authorization"], format!("Bearer {OPENAI_KEY}"));
    assert_eq!(chat[0]["body"]["model"], "gpt-4o-mini");
    assert_eq!(chat[1]["body"]["stream_options"]["include_usage"], true, "the gateway asks for usage in streams");
    let anthropic: Vec<&Value> = calls.iter().filter(|c| c["path"] == "/v1/messages").collect();
    assert_eq!(anthropic[0]["headers"]["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(anthropic[0]["body"]["model"], "claude-sonnet-4-5");

    // Every call is in the ledger: the agent's spend shows within 5 s, and nowhere a key.
    let spent = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let a = get(cp, &ns, "managedagent", "coder")?;
        Ok(a["status"]["spendUSD"].as_f64().filter(|s| *s > 0.0))
    })
    .context("the agent's spendUSD")?;
    assert!(spent < 0.01, "{spent}");
    let log = std::fs::read_to_string(cp.dir().join(format!("gateway-{}.log", gateway.port)))?;
    assert_eq!(log.matches("model call settled").count(), 8, "one ledger row per call");
    assert!(!log.contains(&key) && !log.contains(OPENAI_KEY) && !log.contains(ANTHROPIC_KEY), "a key in the gateway's log");
    let agent = get(cp, &ns, "managedagent", "coder")?.to_string();
    assert!(!agent.contains(&key), "the key itself in the agent's status");
    // And every call is in the audit store, chained with the tool calls, without a key.
    let admin = cp.token(User::Admin);
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{}/audit/v1/records?namespace={ns}", gateway.url()), "-H", &format!("authorization: Bearer {admin}")])
        .output()?;
    let audit = String::from_utf8_lossy(&out.stdout).into_owned();
    let records: Value = serde_json::from_str(&audit)?;
    let calls: Vec<&Value> = records["records"].as_array().into_iter().flatten().filter(|r| r["record"]["kind"] == "model_call").collect();
    assert_eq!(calls.len(), 8, "{audit}");
    assert!(calls.iter().all(|c| c["record"]["agent"]["name"] == "coder" && c["record"]["costUSD"].as_f64().is_some()), "{audit}");
    assert!(!audit.contains(&key) && !audit.contains(OPENAI_KEY), "a key in the audit store");
    Ok(())
}

#[test]
fn refused_calls_are_clear_errors_in_each_sdks_own_exception() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let budget = "---\napiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: tiny}\nspec: {period: Daily, hardLimitUSD: 0.000001, softLimitUSD: 0.0000005, models: [\"claude-*\"]}\n";
    let scene = Scene::new(cp, "gateway-refusals", budget)?;
    let gateway = GatewayProcess::start(cp, &scene.ledger_url())?;
    let Scene { fake, ns, key, .. } = scene;
    let other = agent_key(cp, &ns, "other")?;
    let call = |key: &str, step: Value| -> Result<Value> { Ok(model_client(&gateway.agent_env(key), &json!([step]))?.remove(0)) };
    // Each refusal by its SDK's exception and message, and by what reached the provider: a
    // gateway that forwarded the call and then answered 403 would otherwise pass.
    let refused = |key: &str, step: Value, error: &str, status: u64, says: &str, forwarded: usize| -> Result<()> {
        let before = fake.calls()?.len();
        let s = call(key, step)?;
        ensure!((s["error"].as_str(), s["status"].as_u64()) == (Some(error), Some(status)), "{s}");
        ensure!(s["message"].as_str().unwrap_or_default().contains(says), "{s}");
        let reached = fake.calls()?.len() - before;
        ensure!(reached == forwarded, "{reached} calls reached the provider, not {forwarded}: {s}");
        Ok(())
    };
    refused("tgk-wrong", json!({"op": "chat", "model": "fast"}), "AuthenticationError", 401, "invalid API key", 0)?;
    refused("tgk-wrong", json!({"op": "messages", "model": "sonnet"}), "AuthenticationError", 401, "invalid API key", 0)?;
    refused(&key, json!({"op": "chat", "model": "gpt-5"}), "PermissionDeniedError", 403, "not in its models.allowed", 0)?;
    refused(&other, json!({"op": "chat", "model": "fast"}), "PermissionDeniedError", 403, "agent other may not use model", 0)?;
    refused(&key, json!({"op": "chat", "model": "gpt-9"}), "NotFoundError", 404, "not served here", 0)?;
    // The provider's own 429 passes through, for the SDK to retry as it would (it does, twice).
    let before = fake.calls()?.len();
    let limited = call(&key, json!({"op": "chat", "model": "rate-limited"}))?;
    ensure!(
        limited["error"] == "RateLimitError" && limited["status"] == 429 && limited["message"].as_str().unwrap_or_default().contains("Rate limit reached"),
        "{limited}"
    );
    ensure!(fake.calls()?.len() > before, "the provider's own 429 never came from the provider");
    // A budget: the first call is reserved and served, then the budget is spent.
    assert_eq!(call(&key, json!({"op": "messages", "model": "sonnet"}))?["ok"], true);
    refused(&key, json!({"op": "messages", "model": "sonnet"}), "PermissionDeniedError", 403, "budget tiny is spent", 0)?;
    // Models the budget does not count are still served.
    assert_eq!(call(&key, json!({"op": "chat", "model": "fast"}))?["ok"], true);
    let status = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let b = get(cp, &ns, "budget", "tiny")?;
        Ok((b["status"]["state"] == "HardExceeded").then_some(b))
    })
    .context("the budget's status")?;
    assert!(status["status"]["spentUSD"].as_f64().unwrap_or_default() > 0.0, "{status}");
    let table = cp.kubectl_ok(User::Admin, ["get", "budgets", "-n", &ns])?;
    assert!(table.contains("HardExceeded"), "{table}");
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=HardLimitReached", "-o", "name"])?;
        Ok((!events.trim().is_empty()).then_some(()))
    })
    .context("an Event when the budget reached its hard limit")?;
    // A replica that read the ledger a moment before the last call wrote after this one: the
    // figure it left is put right, though the ledger's has not changed since (it stayed before).
    let spent = status["status"]["spentUSD"].clone();
    cp.kubectl_ok(
        User::Admin,
        ["patch", "budget", "tiny", "-n", &ns, "--subresource=status", "--type=merge", "-p", r#"{"status":{"spentUSD":0,"state":"Ok"}}"#],
    )?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let b = get(cp, &ns, "budget", "tiny")?;
        Ok((b["status"]["state"] == "HardExceeded" && b["status"]["spentUSD"] == spent).then_some(()))
    })
    .context("a stale figure written over the gateway's is never put right")?;
    // The kill switch: the key stops working within 2 s; deleting the agent too.
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"suspended":true}}"#])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || Ok((call(&key, json!({"op": "chat", "model": "fast"}))?["status"] == 403).then_some(())))
        .context("a suspended agent's key still worked after 2 s")?;
    refused(&key, json!({"op": "chat", "model": "fast"}), "PermissionDeniedError", 403, "suspended", 0)?;
    // Refusals of a known agent are in the audit store too.
    let admin = cp.token(User::Admin);
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{}/audit/v1/records?namespace={ns}&decision=deny", gateway.url()), "-H", &format!("authorization: Bearer {admin}")])
        .output()?;
    let audit = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(audit.contains("not in its models.allowed") && audit.contains("budget tiny is spent"), "{audit}");
    cp.kubectl_ok(User::Admin, ["delete", "managedagent", "other", "-n", &ns])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        Ok((call(&other, json!({"op": "messages", "model": "sonnet"}))?["status"] == 401).then_some(()))
    })
    .context("a deleted agent's key still worked after 2 s")?;
    Ok(())
}

/// An agent that opens connections until the gateway has no file descriptors left does not stop
/// it (the listener used to end on the first failed accept, and the process with it): once the
/// connections are gone, the gateway serves again.
#[test]
fn a_gateway_out_of_file_descriptors_serves_again_once_they_are_freed() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "gateway-fds", "")?;
    let gateway = GatewayProcess::start_with_file_limit(cp, &scene.ledger_url(), 96)?;
    let key = scene.key.clone();
    let list = || -> Result<String> {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{}/openai/v1/models", gateway.url()),
                "-H",
                &format!("authorization: Bearer {key}"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ensure!(list()? == "200", "the gateway does not serve before the test");
    // Connections that send nothing, more than it has descriptors for.
    let held: Vec<std::net::TcpStream> = (0..200).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", gateway.port)).ok()).collect();
    let log = cp.dir().join(format!("gateway-{}.log", gateway.port));
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        if let Some(status) = gateway.process.exited() {
            anyhow::bail!("the gateway exited when it ran out of file descriptors ({status}): {}", gateway.process.log_tail());
        }
        Ok(std::fs::read_to_string(&log)?.contains("cannot take connections").then_some(()))
    })
    .with_context(|| format!("{} connections held, and the gateway never ran out", held.len()))?;
    drop(held);
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || Ok((list()? == "200").then_some(())))
        .with_context(|| format!("the gateway does not serve again: {}", gateway.process.log_tail()))?;
    ensure!(gateway.process.exited().is_none(), "the gateway exited");
    Ok(())
}

/// A container runtime that stops reading the gateway's log leaves its stderr a full pipe. Each
/// refused call logs a line; a pipe holds 64 KiB. The calls must still be answered: lines are
/// written by a thread of their own and dropped past a bound (runtime/src/log_writer.rs).
#[test]
fn a_gateway_whose_log_nobody_reads_still_answers() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "gateway-log", "")?;
    let gateway = GatewayProcess::start_with_unread_log(cp, &scene.ledger_url())?;
    // Four thousand refusals (a key nobody has), over one connection: about 600 KiB of log.
    let calls = 4000;
    // The first call not answered within 5 s ends the run (a gateway stuck on its log would
    // otherwise take 5 s for each call left).
    let out = std::process::Command::new("curl")
        .args(["-s", "--fail-early", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}\n", "-H", "authorization: Bearer tg-not-a-key"])
        .arg(format!("{}/openai/v1/models?n=[1-{calls}]", gateway.url()))
        .output()?;
    let codes = String::from_utf8_lossy(&out.stdout);
    let answered = codes.lines().filter(|c| *c == "401").count();
    ensure!(answered == calls, "{answered} of {calls} refusals answered while nobody read the log; the others: {:?}", {
        let mut others: Vec<&str> = codes.lines().filter(|c| *c != "401").collect();
        others.dedup();
        others
    });
    let key = scene.key.clone();
    let list = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("authorization: Bearer {key}")])
        .arg(format!("{}/openai/v1/models", gateway.url()))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&list.stdout), "200", "the agent's own calls are served too");
    ensure!(gateway.process.exited().is_none(), "the gateway exited");
    Ok(())
}

/// A client that sends its headers and then its body a little at a time, or never, is answered
/// 408 once the body's deadline passes, on every endpoint, and one that sends nothing is cut off: the Slack one is anyone's to call,
/// and connections held open for ever would take the gateway's descriptors from every agent.
#[test]
fn clients_that_never_finish_their_body_are_cut_off() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "gateway-dribble", "")?;
    let (key, port) = (scene.key.clone(), scene.port);
    let env = [("TOLLGATE_REQUEST_BODY_SECONDS", "1"), ("TOLLGATE_HEADER_READ_TIMEOUT_SECONDS", "1"), ("TOLLGATE_SLACK_SIGNING_SECRET", "e2e-signing-secret")];
    let gateway = GatewayProcess::start_with(cp, &scene.ledger_url(), port, &env)?;
    let auth = format!("Bearer {key}");
    for (path, headers) in
        [("/openai/v1/chat/completions", vec![("authorization", auth.as_str())]), ("/slack/interactions", vec![]), ("/audit/v1/batches", vec![])]
    {
        let started = std::time::Instant::now();
        let status = tollgate_e2e::http::dribble(gateway.port, path, &headers, Duration::from_secs(10))?;
        // The audit endpoint refuses a caller without a token before it reads a byte of the body.
        let expected = if path.starts_with("/audit") { "HTTP/1.1 401" } else { "HTTP/1.1 408" };
        assert!(status.starts_with(expected), "{path}: answered {status:?} after {:?}", started.elapsed());
    }
    // Nor does one that connects and says nothing at all.
    let closed = tollgate_e2e::http::silent(gateway.port, Duration::from_secs(10))?;
    assert!(closed.is_some_and(|t| t < Duration::from_secs(5)), "a silent connection was kept: closed after {closed:?}");
    Ok(())
}

/// A client that goes away while the provider works on its call does not take the call out of
/// the ledger or the audit trail: the provider bills what it ran. The call's handler was dropped
/// with the connection, and its settlement with it, until the gateway's successor found the
/// `inflight` row (for a call served from an allowance, not even that).
#[test]
fn a_call_whose_client_goes_away_is_settled_at_its_reservation_and_audited() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "gateway-gone", "")?;
    let gateway = GatewayProcess::start(cp, &scene.ledger_url())?;
    let Scene { fake, ns, key, .. } = scene;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hold:gone"}]}).to_string();
    // The client gives up after a second; the provider is still holding the call then.
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "1", "-X", "POST", &format!("{}/openai/v1/chat/completions", gateway.url())])
        .args(["-H", &format!("authorization: Bearer {key}"), "-H", "content-type: application/json", "-d", &body])
        .output()?;
    ensure!(out.status.code() == Some(28), "the client was answered before it gave up: {out:?}");
    ensure!(fake.calls()?.iter().any(|c| c["body"].to_string().contains("hold:gone")), "the call never reached the provider");
    fake.release("gone")?;
    let record = wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok(model_records(cp, &gateway, &ns)?.into_iter().next()))
        .context("no audit record of the call whose client went away")?;
    assert_eq!(record["status"], 499, "recorded as a call whose client closed it: {record}");
    assert!(record["costUSD"].as_f64().is_some_and(|c| c > 0.0), "charged its reservation: {record}");
    let spent = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok(get(cp, &ns, "managedagent", "coder")?["status"]["spendUSD"].as_f64().filter(|s| *s > 0.0))
    })
    .context("the agent's spendUSD")?;
    assert!(spent > 0.0);
    Ok(())
}

/// A request that asks for an absurd number of output tokens reserves a bounded estimate: its
/// estimate used to be the largest 64-bit integer, which SQLite's sum turned into a float, and
/// releasing it rounded away what the budget had spent.
#[test]
fn an_absurd_output_limit_cannot_round_a_budgets_spend_away() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::with_total_budget(cp, "gateway-absurd", "team", "")?;
    let (ns, key, db) = (scene.ns.clone(), scene.key.clone(), scene.db.clone());
    let gateway = GatewayProcess::start(cp, &format!("sqlite://{}?mode=rwc", db.display()))?;
    let chat = |body: Value| tollgate_e2e::gateway::chat_status(gateway.port, &key, &body.to_string());
    let hi = json!([{"role": "user", "content": "hi"}]);
    ensure!(chat(json!({"model": "fast", "messages": hi}))? == "200");
    ensure!(chat(json!({"model": "fast", "messages": hi, "max_tokens": u64::MAX, "n": 1_000_000}))? == "200");
    let rows = |q: &str| tollgate_e2e::gateway::ledger_rows(&db, q);
    let (charged, spent) = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let calls = rows(&format!("SELECT COUNT(*), SUM(cost_micros) FROM ledger WHERE namespace = '{ns}'"))?;
        let spent = rows("SELECT spent_micros, typeof(spent_micros) FROM budget_spend WHERE budget LIKE '%/team'")?;
        Ok((calls[0][0] == 2).then(|| (calls[0][1].clone(), spent[0].clone())))
    })?;
    assert_eq!(spent, vec![charged, json!("integer")], "what the budget holds is what the ledger charged, as an integer");
    Ok(())
}

/// 200 calls in flight at once at a budget's limit, spread over the gateways (two replicas
/// sharing one ledger, or one). A call of `cheap` is estimated at its 10 output tokens × 2 USD per
/// million = 20 micro-USD, and the fake provider makes it cost exactly that: so a correct ledger
/// serves exactly 1000 / 20 = 50 calls, whatever the interleaving, and refuses the other 150 for
/// the budget, and the spend is exactly the limit. One racy admission more shows as 51.
fn race(cp: &ControlPlane, prefix: &str, start: impl Fn() -> Result<Vec<GatewayProcess>>) -> Result<()> {
    let budget = "---\napiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: race}\nspec: {period: Total, hardLimitUSD: 0.001, models: [cheap]}\n";
    let Scene { fake, ns, key, .. } = Scene::new(cp, prefix, budget)?;
    let gateways = start()?;
    let base_urls: Vec<String> = gateways.iter().map(|g| format!("{}/openai/v1", g.url())).collect();
    let env = gateways[0].agent_env(&key);
    let out = model_client(&env, &json!([{"op": "burst", "model": "cheap", "count": 200, "concurrency": 200, "base_urls": base_urls}]))?;
    let calls = out[0]["calls"].as_array().context("per-call results")?;
    ensure!(calls.len() == 200, "{} calls reported", calls.len());
    let served: Vec<&Value> = calls.iter().filter(|c| c["status"] == "200").collect();
    let refused: Vec<&Value> = calls.iter().filter(|c| c["status"] == "403").collect();
    assert_eq!((served.len(), refused.len()), (50, 150), "a correct ledger serves exactly 50: {}", out[0]["counts"]);
    for r in &refused {
        let message = r["message"].as_str().unwrap_or_default();
        ensure!(message.contains("budget race is spent"), "a call refused for another reason than the budget: {r}");
    }
    for replica in 0..gateways.len() {
        ensure!(served.iter().any(|c| c["replica"] == replica), "replica {replica} served no call: {}", out[0]["counts"]);
    }
    // Every call that reached the provider was served, and each was paid for: once all are
    // settled the spend in status is exactly the limit (the refresh can lag a round under load).
    let provider_calls = fake.calls()?.iter().filter(|c| c["body"]["model"] == "cheap").count();
    assert_eq!(provider_calls, 50, "calls of cheap that reached the provider");
    let mut last = None;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let now = get(cp, &ns, "budget", "race")?["status"]["spentUSD"].as_f64();
        last = now;
        Ok(now.filter(|s| (s - 0.001).abs() < 1e-12))
    })
    .with_context(|| format!("spent {last:?}, not the 0.001 USD of 50 calls of 0.00002 USD"))?;
    Ok(())
}

#[test]
fn a_budget_holds_under_200_concurrent_calls_across_two_replicas_on_postgres() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let pg = Postgres::start(cp.dir())?;
    race(cp, "race-pg", || Ok(vec![GatewayProcess::start(cp, &pg.url())?, GatewayProcess::start(cp, &pg.url())?]))
}

#[test]
fn a_budget_holds_under_200_concurrent_calls_on_sqlite() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    race(cp, "race-sqlite", || {
        let path = cp.dir().join(format!("race-{}.db", std::process::id()));
        // Served on one thread, as a gateway limited to one CPU is.
        Ok(vec![GatewayProcess::start_single_threaded(cp, &format!("sqlite://{}?mode=rwc", path.display()))?])
    })
}

/// Budgets far from their limit are leased into each replica's memory: 700 calls at once over
/// two replicas sharing PostgreSQL, against a budget of 500 calls' worth (0.01 USD at 20
/// micro-USD a call; 31 calls' worth is a sixteenth of it, so both replicas lease, then take the
/// exact path near the limit). Never more than the limit and one call is served; what the
/// replicas hold never leaves the books (`leased_micros` is the sum of the leases); at most a
/// lease per replica is stranded at the end; idle, the allowances go back and the budget holds
/// exactly what the ledger charged.
#[test]
fn leased_allowances_hold_a_budget_across_two_replicas_on_postgres() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let pg = Postgres::start(cp.dir())?;
    let budget = "---\napiVersion: tollgate.dev/v1alpha1\nkind: Budget\nmetadata: {name: leased}\nspec: {period: Total, hardLimitUSD: 0.01, models: [cheap]}\n";
    let Scene { fake: _fake, ns, key, .. } = Scene::new(cp, "leased-pg", budget)?;
    let gateways = [GatewayProcess::start(cp, &pg.url())?, GatewayProcess::start(cp, &pg.url())?];
    let base_urls: Vec<String> = gateways.iter().map(|g| format!("{}/openai/v1", g.url())).collect();
    let env = gateways[0].agent_env(&key);
    let out = model_client(&env, &json!([{"op": "burst", "model": "cheap", "count": 700, "concurrency": 100, "base_urls": base_urls}]))?;
    let calls = out[0]["calls"].as_array().context("per-call results")?;
    let served = calls.iter().filter(|c| c["status"] == "200").count();
    let others: Vec<&Value> = calls.iter().filter(|c| c["status"] != "200").collect();
    ensure!(others.iter().all(|c| c["status"] == "403" && c["message"].as_str().is_some_and(|m| m.contains("budget leased is spent"))), "{}", out[0]["counts"]);
    ensure!(served <= 501, "{served} calls served: past the limit by more than one call");
    // Stranded at most: a lease per replica, each at most a sixteenth of the budget (31 calls).
    ensure!(served >= 500 - 2 * 32, "{served} calls served: more stranded than a lease per replica");
    let sum = |sql: &str| -> Result<i64> { Ok(pg.query(sql)?.parse().unwrap_or(-1)) };
    let books = || -> Result<(i64, i64)> {
        Ok((
            sum("SELECT COALESCE(SUM(leased_micros), 0) FROM budget_spend WHERE budget LIKE '%/leased'")?,
            sum("SELECT COALESCE(SUM(amount_micros), 0) FROM budget_leases WHERE budget LIKE '%/leased'")?,
        ))
    };
    let (leased, rows) = books()?;
    ensure!(leased == rows, "leased_micros {leased} but the leases sum to {rows}");
    // Both replicas served calls from memory.
    for g in &gateways {
        let out = std::process::Command::new("curl").args(["-sf", "--max-time", "5", &format!("http://127.0.0.1:{}/metrics", g.admin_port)]).output()?;
        let metrics = String::from_utf8_lossy(&out.stdout);
        let from_memory =
            metrics.lines().find_map(|l| l.strip_prefix("tollgate_budget_reservations_total{path=\"memory\"} ")).and_then(|n| n.trim().parse::<u64>().ok());
        ensure!(from_memory.is_some_and(|n| n > 0), "a replica took no call from an allowance: {metrics}");
    }
    // Idle for two seconds, both replicas hand theirs back; the budget then holds the ledger's.
    let charged = i64::try_from(served)? * 20;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let spent = sum(&format!("SELECT spent_micros FROM budget_spend WHERE budget = '{ns}/leased'"))?;
        Ok((books()? == (0, 0) && spent == charged).then_some(()))
    })
    .with_context(|| format!("allowances not handed back, or the budget is not what was charged: {:?}", books()))?;
    ensure!(sum(&format!("SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE namespace = '{ns}'"))? == charged);
    Ok(())
}
