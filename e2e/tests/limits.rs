//! Rate limits on tool calls (docs/design.md §3.1): a burst from the official MCP SDK past a
//! rule's limit is refused saying when to retry; an audited limit only records; an edited limit
//! applies within two seconds.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::time::Duration;

use tollgate_e2e::{ControlPlane, Modern, Sidecar, User, py_client, wait_until};

fn objects(server: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{server}"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: capped, labels: {{mode: enforce}}}}
spec: {{selector: {{matchLabels: {{app: capped}}}}, serviceAccountName: capped, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: watched, labels: {{mode: audit}}}}
spec: {{selector: {{matchLabels: {{app: watched}}}}, serviceAccountName: watched, mcpServers: [files]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: capped}}
spec:
  agentSelector: {{matchLabels: {{mode: enforce}}}}
  tools: [{{server: files, name: echo, rules: [{{action: Allow, rateLimit: {{calls: 3, period: 1h}}}}]}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: watched}}
spec:
  enforcement: Audit
  agentSelector: {{matchLabels: {{mode: audit}}}}
  tools: [{{server: files, name: echo, rules: [{{action: Allow, rateLimit: {{calls: 3, period: 1h}}}}]}}]
"#
    )
}

/// Six calls at once through the official Python SDK: each call's result or error.
fn burst(sidecar: &Sidecar) -> Result<Vec<Value>> {
    let steps = py_client(&sidecar.url("files"), &json!([{"op": "concurrent_calls", "name": "echo", "arguments": {"message": "hi"}, "count": 6}]))?;
    steps.first().and_then(|s| s["result"]["results"].as_array()).cloned().with_context(|| format!("no results: {steps:?}"))
}

#[test]
fn a_burst_past_a_rules_limit_is_refused_saying_when_to_retry() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let server = Modern::start(cp)?;
    let ns = cp.create_namespace("limits")?;
    cp.apply(User::Admin, &ns, &objects(&server.url()))?;
    let capped = Sidecar::start(cp, &ns, "capped", "capped", "capped-pod")?;
    let watched = Sidecar::start(cp, &ns, "watched", "watched", "watched-pod")?;

    let results = burst(&capped)?;
    let (served, refused): (Vec<&Value>, Vec<&Value>) = results.iter().partition(|r| r["ok"] == true);
    assert_eq!((served.len(), refused.len()), (3, 3), "{results:?}");
    for r in &refused {
        ensure!(r["code"] == -32029, "{r}");
        let retry = r["data"]["retryAfterSeconds"].as_u64().unwrap_or_default();
        ensure!((1..=1200).contains(&retry), "retry after {retry} s: {r}");
        ensure!(r["error"].as_str().unwrap_or_default().contains(&format!("retry after {retry} s")), "{r}");
        ensure!(r["error"].as_str().unwrap_or_default().contains(&format!("ToolPolicy {ns}/capped")), "{r}");
    }
    let records = capped.wait_audit(|r| r.iter().filter(|r| r["kind"] == "decision").count() >= 6)?;
    let denied: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision" && r["decision"] == "deny").collect();
    ensure!(denied.len() == 3 && denied.iter().all(|r| r["rule"] == "spec.tools[0].rules[0]"), "{records:?}");

    // Audited: every call served; the ones past the limit say so.
    let results = burst(&watched)?;
    ensure!(results.iter().all(|r| r["ok"] == true), "an audited limit refused: {results:?}");
    let records = watched.wait_audit(|r| r.iter().filter(|r| r["kind"] == "decision").count() >= 6)?;
    let would: Vec<&Value> = records.iter().filter(|r| r["shadow"]["would"] == "deny").collect();
    ensure!(would.len() == 3, "{records:?}");
    ensure!(would.iter().all(|r| r["shadow"]["message"].as_str().unwrap_or_default().starts_with("would be rate limited")), "{would:?}");

    // A limit raised is applied within two seconds.
    let patch = r#"[{"op":"replace","path":"/spec/tools/0/rules/0/rateLimit","value":{"calls":1000,"period":"1s"}}]"#;
    cp.kubectl_ok(User::Admin, ["patch", "toolpolicy", "capped", "-n", &ns, "--type=json", "-p", patch])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        let step = py_client(&capped.url("files"), &json!([{"op": "call_tool", "name": "echo", "arguments": {"message": "again"}}]))?;
        Ok((step[0]["ok"] == true).then_some(()))
    })
    .context("the raised limit was not applied within 2 s")?;
    Ok(())
}

/// Model calls past an agent's requests per minute, spread over two gateway replicas sharing a
/// PostgreSQL ledger: exactly the limit is served, the rest get 429 with `retry-after` in the
/// provider's format (the SDK's `RateLimitError`); a raised limit applies within two seconds.
#[test]
fn model_calls_past_an_agents_rate_limit_are_429_across_two_replicas() -> Result<()> {
    use tollgate_e2e::gateway::{GatewayProcess, Scene, model_client};
    operator();
    let cp = ControlPlane::shared();
    let pg = tollgate_e2e::postgres::Postgres::start(cp.dir())?;
    let Scene { fake: _provider, ns, key, .. } = Scene::new(cp, "limits-model", "")?;
    let limit = |rpm: u32| format!(r#"{{"spec":{{"models":{{"rateLimit":{{"requestsPerMinute":{rpm}}}}}}}}}"#);
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", &limit(4)])?;
    let gateways = [GatewayProcess::start(cp, &pg.url())?, GatewayProcess::start(cp, &pg.url())?];
    let base_urls: Vec<String> = gateways.iter().map(|g| format!("{}/openai/v1", g.url())).collect();
    let env = gateways[0].agent_env(&key);
    // Not across a minute's end: the burst is counted in one window.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || Ok((jiff::Timestamp::now().as_second().rem_euclid(60) < 50).then_some(())))?;
    let out = model_client(&env, &json!([{"op": "burst", "model": "fast", "count": 12, "concurrency": 12, "base_urls": base_urls}]))?;
    let calls = out[0]["calls"].as_array().context("per-call results")?;
    let served = calls.iter().filter(|c| c["status"] == "200").count();
    let limited: Vec<&Value> = calls.iter().filter(|c| c["status"] == "429").collect();
    assert_eq!((served, limited.len()), (4, 8), "{}", out[0]["counts"]);
    for c in &limited {
        let message = c["message"].as_str().unwrap_or_default();
        ensure!(message.contains(&format!("rate limit of ManagedAgent {ns}/coder: at most 4 requests per minute; retry after")), "{c}");
        let retry: u64 = c["retry_after"].as_str().unwrap_or_default().parse().with_context(|| format!("no retry-after: {c}"))?;
        ensure!((1..=60).contains(&retry), "{c}");
    }
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", &limit(100)])?;
    wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        let s = model_client(&env, &json!([{"op": "chat", "model": "fast"}]))?.remove(0);
        Ok((s["ok"] == true).then_some(()))
    })
    .context("the raised limit was not applied within 2 s")?;
    Ok(())
}

/// The official SDKs, allowed their own retries, wait as a 429's `retry-after` says and then
/// succeed in the next window: OpenAI's and Anthropic's clients at once, past a limit of two
/// requests a minute that two calls already spent.
#[test]
fn the_sdks_wait_as_retry_after_says_and_succeed_in_the_next_window() -> Result<()> {
    use tollgate_e2e::gateway::{GatewayProcess, Scene, model_client};
    operator();
    let cp = ControlPlane::shared();
    let scene = Scene::new(cp, "limits-retry", "")?;
    let patch = r#"{"spec":{"models":{"rateLimit":{"requestsPerMinute":2}}}}"#;
    cp.kubectl_ok(User::Admin, ["patch", "managedagent", "coder", "-n", &scene.ns, "--type=merge", "-p", patch])?;
    let gateway = GatewayProcess::start(cp, &scene.ledger_url())?;
    let env = gateway.agent_env(&scene.key);
    // Early in a minute, so the two calls and the refused ones share one window.
    wait_until(Duration::from_secs(60), Duration::from_millis(100), || Ok((jiff::Timestamp::now().as_second().rem_euclid(60) < 40).then_some(())))?;
    let filled_at = jiff::Timestamp::now().as_second();
    let fill = model_client(&env, &json!([{"op": "chat", "model": "fast"}, {"op": "chat", "model": "fast"}]))?;
    ensure!(fill.iter().all(|s| s["ok"] == true), "{fill:?}");
    let refused = model_client(&env, &json!([{"op": "chat", "model": "fast"}]))?;
    ensure!(refused[0]["status"] == 429, "a third call in the window was not refused: {refused:?}");
    // When the window the calls filled ends: an SDK that waited as told succeeds after it. (Not
    // a time measured from here: starting the SDKs' interpreter takes seconds of its own.)
    let window_end = (filled_at - filled_at.rem_euclid(60) + 60) as f64;

    let retried: Vec<std::thread::JoinHandle<Result<Vec<Value>>>> =
        [json!({"op": "chat", "model": "fast", "retries": 2}), json!({"op": "messages", "model": "sonnet", "retries": 2})]
            .into_iter()
            .map(|step| {
                let env = env.clone();
                std::thread::spawn(move || model_client(&env, &json!([step])))
            })
            .collect();
    for handle in retried {
        let out = handle.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        ensure!(out[0]["ok"] == true, "the SDK did not succeed after waiting: {out:?}");
        let ended = out[0]["ended_at_s"].as_f64().unwrap_or_default();
        ensure!(ended >= window_end, "the SDK succeeded {:.1} s before the window it was refused in ended: {out:?}", window_end - ended);
    }
    let served = scene.fake.calls()?.len();
    ensure!(served == 4, "the provider got {served} calls: the refused ones must never reach it");
    Ok(())
}
