//! MCP 2026-07-28 through the firewall (DESIGN §3.2): the official Python SDK 2.x as a stateless
//! client (no initialize, `_meta` and routing headers on every request) against a stateless
//! server on the same SDK, through the sidecar; and routing headers that lie about the body.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tollgate_e2e::raw_mcp::request;
use tollgate_e2e::{Modern, User, py_modern_client, py_modern_client_with, tool_text};

mod common;
use common::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {name: modern}
spec:
  tools:
    - {server: modern, name: delete_everything, rules: [{action: Deny, message: nothing gets deleted here}]}
    - server: modern
      name: remove_file
      rules:
        - {action: Allow, when: "args.path.startsWith('/tmp/')"}
        - {action: Deny, message: only files under /tmp}
    - {server: modern, name: "*", rules: [{action: Allow}]}
"#;

fn modern_env(prefix: &str) -> Result<(Env, Modern)> {
    let env = setup(prefix, false)?;
    let server = Modern::start(env.cp)?;
    let yaml = format!("apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: modern}}\nspec: {{url: \"{}\"}}\n---\n{POLICY}", server.url());
    let path = env.cp.dir().join(format!("{}-modern.yaml", env.ns));
    std::fs::write(&path, yaml)?;
    env.cp.kubectl_ok(User::Admin, ["apply", "-n", &env.ns, "-f", path.to_str().context("path")?])?;
    Ok((env, server))
}

#[test]
fn a_stateless_2026_07_28_client_and_server_work_through_the_sidecar() -> Result<()> {
    let (env, _server) = modern_env("modern")?;
    let steps = py_modern_client(
        &env.sidecar.url("modern"),
        "2026-07-28",
        &json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "echo", "arguments": {"message": "stateless"}},
            {"op": "call_tool", "name": "delete_everything", "arguments": {}},
            {"op": "call_tool", "name": "whoami_headers", "arguments": {}},
        ]),
    )?;
    let listed = &step(&steps, 0)["result"];
    let tools: Vec<&str> = listed["tools"].as_array().context("tools")?.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get_approval_status"), "{tools:?}");
    assert!(!tools.contains(&"delete_everything"), "an unconditionally denied tool is hidden: {tools:?}");
    // The revision's caching hints survive the rewrite of the list.
    assert!(listed.get("ttlMs").is_some() && listed.get("cacheScope").is_some(), "{listed}");
    assert_eq!(tool_text(step(&steps, 1))?, ("Echo: stateless".to_owned(), false));
    assert_eq!(tool_text(step(&steps, 2))?, ("Access denied: nothing gets deleted here".to_owned(), true), "{}", step(&steps, 2));
    // The spec's routing headers reach the server.
    let (seen, _) = tool_text(step(&steps, 3))?;
    assert!(seen.contains("mcp-method=tools/call") && seen.contains("mcp-name=whoami_headers") && seen.contains("mcp-protocol-version=2026-07-28"), "{seen}");

    // An older client on the aggregate: the handshake, with the same server behind it.
    let steps = py_modern_client(
        &format!("{}/mcp", env.sidecar.base),
        "auto",
        &json!([
            {"op": "call_tool", "name": "modern__echo", "arguments": {"message": "aggregated"}},
            {"op": "call_tool", "name": "modern__delete_everything", "arguments": {}},
        ]),
    )?;
    assert_eq!(tool_text(step(&steps, 0))?, ("Echo: aggregated".to_owned(), false));
    assert!(tool_text(step(&steps, 1))?.1);
    Ok(())
}

#[test]
fn routing_headers_that_disagree_with_the_body_are_refused_and_audited() -> Result<()> {
    let (env, _server) = modern_env("modern-forged")?;
    let url = env.sidecar.url("modern");
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let body =
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {"confirm": true}, "_meta": meta}})
            .to_string();
    let base = ["content-type: application/json", "accept: application/json, text/event-stream", "mcp-protocol-version: 2026-07-28"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|h| (*h).to_owned()).collect() };
    for (extra, says) in [
        (vec!["mcp-method: tools/call", "mcp-name: read_file"], "Mcp-Name header \"read_file\" does not match"),
        (vec!["mcp-method: tools/list", "mcp-name: delete_everything"], "Mcp-Method header \"tools/list\""),
        (vec!["mcp-method: tools/call", "mcp-name: delete_everything", "mcp-param-path: /etc/passwd"], "Mcp-Param-path"),
        (vec!["mcp-method: tools/call", "mcp-name: delete_everything", "mcp-name: read_file"], "appears more than once"),
    ] {
        let a = request("POST", &url, &with(&extra), Some(&body))?;
        assert_eq!(a.status, 400, "{extra:?}: {a:?}");
        let err = a.messages.first().map(|m| m["error"].clone()).unwrap_or(Value::Null);
        assert_eq!(err["code"], -32020, "{extra:?}: {a:?}");
        assert!(err["message"].as_str().unwrap_or_default().contains(says), "{extra:?}: {a:?}");
    }
    // Honest headers: decided on the body like any call.
    let honest = request("POST", &url, &with(&["mcp-method: tools/call", "mcp-name: delete_everything"]), Some(&body))?;
    assert_eq!(honest.tool_text(&json!(7))?, ("Access denied: nothing gets deleted here".to_owned(), true), "{honest:?}");
    let audit = env
        .sidecar
        .wait_audit(|a| a.iter().filter(|r| r["tool"] == "delete_everything" && r["policy"] == "an invalid request" && r["kind"] == "outcome").count() == 4)?;
    assert!(audit.iter().all(|r| r["outcome"] != "forwarded" || r["tool"] != "delete_everything"), "{audit:?}");
    Ok(())
}

/// MRTR (2026-07-28): a server that needs the user's input answers `input_required`; the client
/// retries the call with `inputResponses` and the server's `requestState`. The firewall passes the
/// answer through unchanged and decides every retry again on its own arguments, so answers given
/// for a harmless call cannot carry a different one past the policy.
#[test]
fn input_required_results_pass_through_and_every_retry_is_decided_again() -> Result<()> {
    let (env, _server) = modern_env("modern-mrtr")?;
    let url = env.sidecar.url("modern");
    // The SDK drives the rounds itself: asked, answered, retried.
    let steps = py_modern_client_with(
        &url,
        "2026-07-28",
        &["--elicit", r#"{"confirm": true}"#],
        &json!([{"op": "call_tool", "name": "remove_file", "arguments": {"path": "/tmp/scratch"}}]),
    )?;
    assert_eq!(tool_text(step(&steps, 0))?, ("removed /tmp/scratch".to_owned(), false), "{steps:?}");
    assert_eq!(step(&steps, 0)["elicitations"], 1, "{steps:?}");
    env.sidecar.wait_audit(|a| a.iter().filter(|r| r["tool"] == "remove_file" && r["kind"] == "decision" && r["decision"] == "allow").count() == 2)?;

    let headers: Vec<String> = [
        "content-type: application/json",
        "accept: application/json, text/event-stream",
        "mcp-protocol-version: 2026-07-28",
        "mcp-method: tools/call",
        "mcp-name: remove_file",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}});
    let first = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "remove_file", "arguments": {"path": "/tmp/a"}, "_meta": meta}});
    let asked = request("POST", &url, &headers, Some(&first.to_string()))?;
    let input = asked.response(&json!(1)).map(|m| m["result"].clone()).unwrap_or_default();
    assert_eq!(input["resultType"], "input_required", "passed through unchanged: {asked:?}");
    let (key, state) = (input["inputRequests"].as_object().and_then(|r| r.keys().next().cloned()).context("inputRequests")?, input["requestState"].clone());
    assert!(state.is_string(), "{input}");

    // The retry carries the answers and the state, but names another file.
    let retry = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "remove_file", "arguments": {"path": "/etc/passwd"},
        "inputResponses": {key: {"action": "accept", "content": {"confirm": true}}}, "requestState": state, "_meta": meta}});
    let answered = request("POST", &url, &headers, Some(&retry.to_string()))?;
    assert_eq!(answered.tool_text(&json!(2))?, ("Access denied: only files under /tmp".to_owned(), true), "{answered:?}");
    let audit = env.sidecar.wait_audit(|a| a.iter().any(|r| r["tool"] == "remove_file" && r["outcome"] == "denied"))?;
    assert!(audit.iter().filter(|r| r["tool"] == "remove_file" && r["outcome"] == "forwarded").count() == 3, "{audit:?}");

    // Spelled in another case, the retry's fields are refused before any decision.
    let sly = retry.to_string().replace("\"requestState\"", "\"requestState\":\"x\",\"RequestState\"");
    let refused = request("POST", &url, &headers, Some(&sly))?;
    assert_eq!(refused.status, 400, "{refused:?}");
    Ok(())
}
