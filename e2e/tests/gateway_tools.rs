//! What a model call may make the provider do besides answering: no MCP server called by the
//! provider, no hosted tool the agent was not given, no field or beta the gateway does not know;
//! and what a call may cost: every name of a model counted by its budgets, and no answer longer
//! than the output its reservation covered. The agent is the official `openai` and `anthropic`
//! SDKs; each refusal is checked where the harm would land, the fake provider's own log of calls.

mod common;

use anyhow::{Context, Result, ensure};
use common::operator;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_e2e::free_ports;
use tollgate_e2e::gateway::{
    ANTHROPIC_KEY, FakeProvider, GatewayProcess, OPENAI_KEY, agent_key, ledger_rows, model_client, model_provider, model_records, setup,
};
use tollgate_e2e::{ControlPlane, User, wait_until};

#[test]
fn the_provider_runs_no_tool_the_agent_was_not_given() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let (ns, key) = setup(cp, &fake, "gateway-tools", "")?;
    let ledger = format!("sqlite://{}?mode=rwc", cp.dir().join(format!("{ns}-ledger.db")).display());
    let [port] = free_ports::<1>()?;
    // Anthropic's MCP beta is allowed here, so that its `mcp_servers` is refused for what it
    // asks, not for its header.
    let gateway = GatewayProcess::start_with(cp, &ledger, port, &[("TOLLGATE_ALLOWED_BETAS", "mcp-client-2025-04-04,prompt-caching-2024-07-31")])?;
    let call = |step: Value| -> Result<Value> { Ok(model_client(&gateway.agent_env(&key), &json!([step]))?.remove(0)) };
    // A refusal in the SDK's own exception, saying why, and nothing sent to the provider.
    let refused = |step: Value, error: &str, status: u64, says: &str| -> Result<()> {
        let before = fake.calls()?.len();
        let s = call(step.clone())?;
        ensure!(s["error"] == error && s["status"] == status, "{step}: expected {error} {status}, got {s}");
        ensure!(s["message"].as_str().unwrap_or_default().contains(says), "{step}: the refusal does not say {says:?}: {s}");
        let after = fake.calls()?.len();
        ensure!(after == before, "{step} reached the provider ({before} calls before, {after} after)");
        Ok(())
    };
    let mcp = "MCP through the provider is never allowed";
    let hosted = "spec.models.hostedTools";
    let mcp_tool = json!({"type": "mcp", "server_label": "deploy", "server_url": "https://mcp.example.invalid/mcp", "require_approval": "never"});
    let connector = json!({"type": "mcp", "server_label": "dropbox", "connector_id": "connector_dropbox", "authorization": "token"});
    refused(json!({"op": "responses", "model": "gpt-4o-mini", "kwargs": {"tools": [mcp_tool]}}), "PermissionDeniedError", 403, mcp)?;
    refused(json!({"op": "responses", "model": "gpt-4o-mini", "kwargs": {"tools": [connector]}}), "PermissionDeniedError", 403, mcp)?;
    let servers = json!([{"type": "url", "url": "https://mcp.example.invalid/sse", "name": "deploy"}]);
    let step = json!({"op": "messages", "model": "sonnet", "beta": true, "kwargs": {"betas": ["mcp-client-2025-04-04"], "mcp_servers": servers}});
    refused(step, "PermissionDeniedError", 403, mcp)?;
    let toolset = json!({"betas": ["mcp-client-2025-04-04"], "mcp_servers": servers, "tools": [{"type": "mcp_toolset", "mcp_server_name": "deploy"}]});
    refused(json!({"op": "messages", "model": "sonnet", "beta": true, "kwargs": toolset}), "PermissionDeniedError", 403, mcp)?;
    // Hosted tools, of each provider, none of which the agent was given.
    for tool in [
        json!({"type": "web_search"}),
        json!({"type": "web_search_preview"}),
        json!({"type": "file_search", "vector_store_ids": ["vs_1"]}),
        json!({"type": "code_interpreter", "container": {"type": "auto"}}),
        json!({"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "browser"}),
        json!({"type": "image_generation"}),
    ] {
        refused(json!({"op": "responses", "model": "gpt-4o-mini", "kwargs": {"tools": [tool]}}), "PermissionDeniedError", 403, hosted)?;
    }
    for tool in [
        json!({"type": "web_search_20250305", "name": "web_search"}),
        json!({"type": "web_fetch_20250910", "name": "web_fetch"}),
        json!({"type": "code_execution_20250825", "name": "code_execution"}),
    ] {
        refused(json!({"op": "messages", "model": "sonnet", "kwargs": {"tools": [tool]}}), "PermissionDeniedError", 403, hosted)?;
    }
    let computer = json!({"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768});
    refused(json!({"op": "messages", "model": "sonnet", "beta": true, "kwargs": {"tools": [computer]}}), "PermissionDeniedError", 403, hosted)?;
    refused(json!({"op": "chat", "model": "fast", "kwargs": {"web_search_options": {}}}), "PermissionDeniedError", 403, hosted)?;
    // A field the gateway does not know, and a beta it was not told to pass.
    refused(json!({"op": "chat", "model": "fast", "kwargs": {"extra_body": {"plugins": [{"id": "web"}]}}}), "BadRequestError", 400, "\"plugins\"")?;
    let beta = json!({"op": "messages", "model": "sonnet", "beta": true, "kwargs": {"betas": ["computer-use-2025-01-24"]}});
    refused(beta, "BadRequestError", 400, "computer-use-2025-01-24")?;

    // Function tools, which the agent runs itself, and an allowed beta, pass.
    let function = json!({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}});
    ensure!(call(json!({"op": "chat", "model": "fast", "kwargs": {"tools": [function]}}))?["ok"] == true);
    let custom = json!({"name": "lookup", "input_schema": {"type": "object", "properties": {}}});
    let step = json!({"op": "messages", "model": "sonnet", "beta": true, "kwargs": {"tools": [custom], "betas": ["prompt-caching-2024-07-31"]}});
    ensure!(call(step)?["ok"] == true);

    // MCP can never be given as a hosted tool: the API server refuses it.
    let patch = |tools: Value| -> Result<std::process::Output> {
        let p = json!({"spec": {"models": {"allowed": ["gpt-4o*", "fast", "claude-*"], "hostedTools": tools}}}).to_string();
        cp.kubectl(User::Admin, ["patch", "managedagent", "coder", "-n", &ns, "--type=merge", "-p", &p])
    };
    let out = patch(json!(["mcp"]))?;
    let says = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && says.contains("hostedTools cannot allow MCP"), "hostedTools [mcp] was admitted: {says}");
    // A hosted tool given by name passes, and its audit record names it.
    ensure!(patch(json!(["web_search"]))?.status.success());
    let search = json!({"op": "responses", "model": "gpt-4o-mini", "kwargs": {"tools": [{"type": "web_search"}]}});
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || Ok((call(search.clone())?["ok"] == true).then_some(())))
        .context("a web_search the agent was given was still refused after 5 s")?;
    let sent = fake.calls()?;
    ensure!(sent.last().is_some_and(|c| c["body"]["tools"][0]["type"] == "web_search"), "the provider did not get the tool: {:?}", sent.last());
    // Still only that one: MCP beside it is refused.
    let both = json!({"op": "responses", "model": "gpt-4o-mini", "kwargs": {"tools": [{"type": "web_search"}, mcp_tool]}});
    refused(both, "PermissionDeniedError", 403, mcp)?;
    let audited = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        Ok(model_records(cp, &gateway, &ns)?.into_iter().find(|r| r["hostedTools"] == json!(["web_search"])))
    })
    .context("no audit record names the hosted tool")?;
    ensure!(audited["decision"] == "allow" && audited["agent"]["name"] == "coder", "{audited}");
    let refusals: Vec<Value> = model_records(cp, &gateway, &ns)?.into_iter().filter(|r| r["decision"] == "deny").collect();
    ensure!(refusals.iter().any(|r| r["reason"].as_str().unwrap_or_default().contains(mcp)), "refusals are audited: {refusals:?}");
    Ok(())
}

/// A budget on an alias counts calls by the model's own name (three calls ran past a 1 USD
/// budget on `fast` when they said `gpt-4o-mini`), and the gateway tells the provider the output
/// limit it reserved for, so no answer costs more than its reservation.
#[test]
fn a_budget_counts_every_name_of_its_model_and_no_call_costs_more_than_it_reserved() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let fake = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
    let ns = cp.create_namespace("gateway-names")?;
    // An output token costs 0.1 USD; the fake answers 5 of them (0.5 USD a call), and the model
    // writes at most 8 (0.8 USD reserved a call).
    let provider = model_provider(
        "openai",
        &fake.openai_url(),
        "secretKeyRef: {name: provider-keys, key: openai}",
        &["{name: dear, aliases: [fast-dear], maxOutputTokens: 8, pricing: {inputPerMillionUSD: 0.0, outputPerMillionUSD: 100000.0}}"],
    );
    let objects = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: provider-keys}}
stringData: {{openai: "{OPENAI_KEY}"}}
{provider}---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec:
  selector: {{matchLabels: {{app: coder}}}}
  serviceAccountName: coder
  models: {{allowed: [dear, fast-dear]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Budget
metadata: {{name: on-alias}}
spec: {{period: Total, hardLimitUSD: 1.0, models: [fast-dear]}}
"#
    );
    cp.apply(User::Admin, &ns, &objects)?;
    let key = agent_key(cp, &ns, "coder")?;
    let db = cp.dir().join(format!("{ns}-ledger.db"));
    let gateway = GatewayProcess::start(cp, &format!("sqlite://{}?mode=rwc", db.display()))?;
    let call = |step: Value| -> Result<Value> { Ok(model_client(&gateway.agent_env(&key), &json!([step]))?.remove(0)) };
    // By its own name, with no output limit: served, and the provider is told the model's limit.
    ensure!(call(json!({"op": "chat", "model": "dear"}))?["ok"] == true);
    let sent = fake.calls()?;
    let body = &sent.last().context("nothing reached the provider")?["body"];
    ensure!(body["max_completion_tokens"] == 8, "the provider was not told the limit the call was reserved for: {body}");
    // The budget on the alias counts it: a call is admitted while the budget is below its limit
    // (0.5 of 1.0 spent), and once it holds 1.0 the next is refused, by either name.
    ensure!(call(json!({"op": "chat", "model": "dear"}))?["ok"] == true);
    // Two calls hold at least 1.0 whether or not they have settled (each reserves 0.8, costs 0.5).
    let s = call(json!({"op": "chat", "model": "dear"}))?;
    ensure!(s["status"] == 403, "a third call by the model's own name ran past a budget on its alias: {s}");
    ensure!(s["message"].as_str().unwrap_or_default().contains("budget on-alias is spent"), "{s}");
    let s = call(json!({"op": "chat", "model": "fast-dear", "max_tokens": 1000}))?;
    ensure!(s["status"] == 403, "by its alias: {s}");
    let served = fake.calls()?.len();
    let (calls, cost) = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let r = ledger_rows(&db, &format!("SELECT COUNT(*), SUM(cost_micros) FROM ledger WHERE namespace = '{ns}' AND status = 200"))?;
        Ok((r[0][0] == json!(served)).then(|| (r[0][0].clone(), r[0][1].as_i64())))
    })
    .context("the served calls in the ledger")?;
    ensure!(calls == json!(2), "{calls} calls served under a 1 USD budget of 0.5 USD calls");
    ensure!(cost == Some(1_000_000), "the calls cost {cost:?} micro-USD, not the 0.5 USD of each one's 5 tokens");
    // A request asking for more than the model writes is sent with the model's limit.
    cp.kubectl_ok(User::Admin, ["patch", "budget", "on-alias", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"hardLimitUSD":100}}"#])?;
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        Ok((call(json!({"op": "chat", "model": "fast-dear", "max_tokens": 1000}))?["ok"] == true).then_some(()))
    })?;
    let sent = fake.calls()?;
    let body = &sent.last().context("nothing reached the provider")?["body"];
    ensure!(body["max_tokens"] == 8 && body["model"] == "dear", "the limit sent is not the one reserved for: {body}");
    // Input the provider would add itself cannot be reserved for: refused while a budget applies.
    let before = fake.calls()?.len();
    for (kwargs, says) in [
        (json!({"previous_response_id": "resp_1"}), "\"previous_response_id\""),
        (json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://example.com/big.pdf"}]}]}), "a file read by id or URL"),
    ] {
        let s = call(json!({"op": "responses", "model": "dear", "kwargs": kwargs}))?;
        ensure!(s["status"] == 403 && s["message"].as_str().unwrap_or_default().contains(says), "{kwargs}: {s}");
    }
    ensure!(fake.calls()?.len() == before, "a call with uncountable input reached the provider");
    Ok(())
}
