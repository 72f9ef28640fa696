//! What a model request may ask its provider to do (DESIGN §3.4), decided on the parsed body.
//!
//! A provider can run tools itself: it calls an MCP server (OpenAI `mcp` tools and connectors,
//! Anthropic `mcp_servers` and `mcp_toolset`), searches the web, fetches pages, runs code. None
//! of that passes the sidecar, so no policy, approval or audit would see it. So the body is read
//! on an allow-list: every top-level field must be one the gateway knows for the endpoint, every
//! tool must be a function tool (which the agent runs itself) or a type the agent's
//! `ManagedAgent.spec.models.hostedTools` names, and MCP through the provider is never allowed.
//! A field or tool type a provider adds tomorrow is refused until it is known here.

use crate::model::Refusal;
use serde_json::{Map, Value};

/// The model endpoints a body is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    Responses,
    Messages,
}

/// OpenAI `POST /v1/chat/completions`. `web_search_options` is a hosted tool (below).
const CHAT_FIELDS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "modalities",
    "model",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
];

/// OpenAI `POST /v1/responses`. Not `prompt`: a stored prompt brings tools of its own, which
/// the gateway cannot read.
const RESPONSES_FIELDS: &[&str] = &[
    "background",
    "context_management",
    "conversation",
    "image",
    "include",
    "input",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "model",
    "moderation",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
    "verbosity",
];

/// Anthropic `POST /v1/messages`. `container` is code execution's (a hosted tool, below). Not
/// the betas' `fallbacks` (other models, past `models.allowed` and their prices) nor `thread`
/// (state the provider keeps).
const MESSAGES_FIELDS: &[&str] = &[
    "cache_control",
    "context_management",
    "diagnostics",
    "inference_geo",
    "max_tokens",
    "messages",
    "metadata",
    "model",
    "output_config",
    "output_format",
    "service_tier",
    "speed",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

/// Longest field or tool type quoted back in a refusal: it is the agent's text.
const QUOTED: usize = 64;

fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(QUOTED).collect();
    format!("{cut:?}")
}

/// Checks `body` for `op`: the hosted tools it asks for (by name, without a date), or why it is
/// refused. `allowed_hosted` is the agent's `models.hostedTools`.
pub fn check(op: Operation, body: &Map<String, Value>, agent: &str, allowed_hosted: &[String]) -> Result<Vec<String>, Refusal> {
    let mut hosted = Vec::new();
    for (field, value) in body {
        match (op, field.as_str()) {
            (Operation::Messages, "mcp_servers") => return Err(provider_mcp("the field \"mcp_servers\"")),
            (Operation::ChatCompletions, "web_search_options") => hosted.push(hosted_tool("web_search", agent, allowed_hosted)?),
            (Operation::Messages, "container") => hosted.push(hosted_tool("code_execution", agent, allowed_hosted)?),
            (_, "tools") => hosted.extend(tools(op, value, agent, allowed_hosted)?),
            (_, f) if fields(op).contains(&f) => {}
            (Operation::Responses, "prompt") => {
                return Err(Refusal::Field {
                    field: "prompt".into(),
                    why: "a stored prompt brings tools the gateway cannot see; send the instructions and tools in the request",
                });
            }
            (_, f) => return Err(Refusal::Field { field: quoted(f), why: UNKNOWN }),
        }
    }
    hosted.sort();
    hosted.dedup();
    Ok(hosted)
}

const UNKNOWN: &str = "the gateway forwards only the fields it knows for this endpoint, so that nothing asks the provider to act unchecked";

fn fields(op: Operation) -> &'static [&'static str] {
    match op {
        Operation::ChatCompletions => CHAT_FIELDS,
        Operation::Responses => RESPONSES_FIELDS,
        Operation::Messages => MESSAGES_FIELDS,
    }
}

fn provider_mcp(what: &str) -> Refusal {
    Refusal::ProviderMcp { what: what.to_owned() }
}

/// The hosted tools in a `tools` array; function tools pass without a name.
fn tools(op: Operation, tools: &Value, agent: &str, allowed_hosted: &[String]) -> Result<Vec<String>, Refusal> {
    let Some(items) = tools.as_array() else {
        return Err(Refusal::BadRequest("\"tools\" is not an array".into()));
    };
    let mut hosted = Vec::new();
    for (i, tool) in items.iter().enumerate() {
        let kind = match tool.get("type") {
            None if op == Operation::Messages => "custom",
            None => return Err(Refusal::BadRequest(format!("tools[{i}] has no \"type\""))),
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(Refusal::BadRequest(format!("tools[{i}].type is not a string"))),
        };
        match (op, kind) {
            (Operation::ChatCompletions | Operation::Responses, "function" | "custom") | (Operation::Messages, "custom") => {}
            (_, k) if k.starts_with("mcp") => return Err(provider_mcp(&format!("tools[{i}] of type {}", quoted(k)))),
            (_, k) => hosted.push(hosted_tool(k, agent, allowed_hosted)?),
        }
    }
    Ok(hosted)
}

/// `kind`'s name (without its date), if the agent may use it.
fn hosted_tool(kind: &str, agent: &str, allowed_hosted: &[String]) -> Result<String, Refusal> {
    let name = undated(kind);
    if allowed_hosted.iter().any(|a| a == name || a == kind) {
        Ok(name.to_owned())
    } else {
        Err(Refusal::HostedTool { agent: agent.to_owned(), tool: quoted(kind) })
    }
}

/// A tool type without its version date: `web_search_20250305` (Anthropic) and
/// `web_search_preview_2025_03_11` (OpenAI) name `web_search` and `web_search_preview`.
pub fn undated(kind: &str) -> &str {
    let b = kind.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    if n > 9 && b[n - 9] == b'_' && digits(&b[n - 8..]) {
        return &kind[..n - 9];
    }
    if n > 11 && b[n - 11] == b'_' && b[n - 6] == b'_' && b[n - 3] == b'_' && digits(&b[n - 10..n - 6]) && digits(&b[n - 5..n - 3]) && digits(&b[n - 2..]) {
        return &kind[..n - 11];
    }
    kind
}

/// Input the provider adds to a request itself, which its bytes do not show: context it keeps
/// (`previous_response_id`, `conversation`), files it reads by id or URL, images it fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderInput {
    /// The field that asks for context the provider keeps, if one does.
    pub stored_context: Option<&'static str>,
    /// Files (documents, PDFs) the provider reads by id or URL: of any size.
    pub files: usize,
    /// Images the provider fetches by URL or reads by id: each bounded by the provider's scaling.
    pub images: usize,
}

/// Input tokens an image fetched by the provider is reserved at: providers scale images down to
/// a bounded number of tokens (about 1 600 for Anthropic, at most a few thousand for OpenAI's
/// largest detail), so this bounds one.
pub const IMAGE_TOKENS: u64 = 6000;

/// Deepest nesting scanned for files and images (bodies are parsed JSON, already bounded).
const SCAN_DEPTH: usize = 32;

/// What input `body` makes the provider add by itself.
pub fn provider_input(body: &Map<String, Value>) -> ProviderInput {
    let mut found = ProviderInput {
        stored_context: ["previous_response_id", "conversation"].into_iter().find(|f| body.get(*f).is_some_and(|v| !v.is_null())),
        ..ProviderInput::default()
    };
    for v in body.values() {
        scan(v, 0, &mut found);
    }
    found
}

fn by_reference(o: &Map<String, Value>) -> bool {
    let url = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
    let source = o.get("source").and_then(Value::as_object);
    o.contains_key("file_id")
        || url(o.get("file_url"))
        || url(o.get("image_url"))
        || url(o.get("image_url").and_then(|i| i.get("url")))
        || url(o.get("url"))
        || source.is_some_and(|s| matches!(s.get("type").and_then(Value::as_str), Some("url" | "file")))
        || o.get("file").and_then(Value::as_object).is_some_and(|f| f.contains_key("file_id"))
}

fn scan(v: &Value, depth: usize, found: &mut ProviderInput) {
    if depth > SCAN_DEPTH {
        return;
    }
    match v {
        Value::Array(a) => a.iter().for_each(|x| scan(x, depth + 1, found)),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            // One part is one input: what it holds (its `source`) is not another.
            Some("image_url" | "input_image" | "image") if by_reference(o) => found.images += 1,
            Some("file" | "input_file" | "document") if by_reference(o) => found.files += 1,
            _ => o.values().for_each(|x| scan(x, depth + 1, found)),
        },
        _ => {}
    }
}

/// The beta features a request asks for in `anthropic-beta` / `openai-beta` (comma-separated):
/// each must be in `allowed` (the gateway's configuration). A beta changes what a body means
/// (Anthropic's `mcp-client-…` turns on `mcp_servers`), so only vetted ones pass.
pub fn check_betas(header: &str, value: &str, allowed: &[String]) -> Result<(), Refusal> {
    for beta in value.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        if !allowed.iter().any(|a| a == beta) {
            return Err(Refusal::Beta { header: header.to_owned(), value: quoted(beta) });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(op: Operation, body: Value, allowed: &[&str]) -> Result<Vec<String>, Refusal> {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        check(op, body.as_object().unwrap(), "coder", &allowed)
    }

    #[test]
    fn function_tools_pass_and_name_nothing() {
        let chat = json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto", "stream": true});
        assert_eq!(run(Operation::ChatCompletions, chat, &[]).unwrap(), Vec::<String>::new());
        let resp = json!({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {}}, {"type": "custom", "name": "g"}]});
        assert!(run(Operation::Responses, resp, &[]).unwrap().is_empty());
        let msgs = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "f", "input_schema": {}}, {"type": "custom", "name": "g", "input_schema": {}}]});
        assert!(run(Operation::Messages, msgs, &[]).unwrap().is_empty());
    }

    #[test]
    fn mcp_through_the_provider_is_never_allowed() {
        let everything = &["mcp", "mcp_toolset", "web_search"];
        let openai =
            json!({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s", "server_url": "https://x", "require_approval": "never"}]});
        let connector = json!({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "d", "connector_id": "connector_dropbox"}]});
        let servers = json!({"model": "m", "max_tokens": 5, "messages": [], "mcp_servers": [{"type": "url", "url": "https://x", "name": "s"}]});
        let toolset = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": "mcp_toolset", "mcp_server_name": "s"}]});
        for (op, body) in [(Operation::Responses, openai), (Operation::Responses, connector), (Operation::Messages, servers), (Operation::Messages, toolset)] {
            let r = run(op, body, everything).unwrap_err();
            assert!(matches!(r, Refusal::ProviderMcp { .. }), "{r}");
            assert_eq!(r.status(), 403);
            assert!(r.to_string().contains("MCP server"), "{r}");
        }
    }

    #[test]
    fn hosted_tools_pass_only_by_name() {
        let search = json!({"model": "m", "input": "x", "tools": [{"type": "web_search_preview_2025_03_11"}]});
        assert_eq!(run(Operation::Responses, search.clone(), &["web_search_preview"]).unwrap(), vec!["web_search_preview"]);
        assert_eq!(run(Operation::Responses, search.clone(), &["web_search_preview_2025_03_11"]).unwrap(), vec!["web_search_preview"]);
        let r = run(Operation::Responses, search, &["web_search"]).unwrap_err();
        assert!(matches!(r, Refusal::HostedTool { .. }) && r.to_string().contains("hostedTools"), "{r}");
        for kind in ["file_search", "code_interpreter", "computer_use_preview", "image_generation", "local_shell", "web_search"] {
            let body = json!({"model": "m", "input": "x", "tools": [{"type": kind}]});
            assert_eq!(run(Operation::Responses, body, &[]).unwrap_err().status(), 403, "{kind}");
        }
        for kind in ["web_search_20250305", "web_fetch_20250910", "code_execution_20250825", "computer_20250124", "bash_20250124", "text_editor_20250728"] {
            let body = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": kind, "name": "x"}]});
            assert_eq!(run(Operation::Messages, body.clone(), &[]).unwrap_err().status(), 403, "{kind}");
            assert_eq!(run(Operation::Messages, body, &[undated(kind)]).unwrap(), vec![undated(kind).to_owned()]);
        }
        // Chat Completions' web search and Anthropic's code execution container are hosted tools too.
        let chat = json!({"model": "m", "messages": [], "web_search_options": {}});
        assert_eq!(run(Operation::ChatCompletions, chat.clone(), &[]).unwrap_err().status(), 403);
        assert_eq!(run(Operation::ChatCompletions, chat, &["web_search"]).unwrap(), vec!["web_search"]);
        let container = json!({"model": "m", "max_tokens": 5, "messages": [], "container": "c"});
        assert_eq!(run(Operation::Messages, container, &[]).unwrap_err().status(), 403);
        // A chat tool that is not a function (a hosted type a provider might add) is hosted.
        let chat = json!({"model": "m", "messages": [], "tools": [{"type": "web_search"}]});
        assert_eq!(run(Operation::ChatCompletions, chat, &[]).unwrap_err().status(), 403);
    }

    #[test]
    fn unknown_fields_and_shapes_are_refused() {
        for (op, body) in [
            (Operation::ChatCompletions, json!({"model": "m", "messages": [], "plugins": [{"id": "web"}]})),
            (Operation::Responses, json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}})),
            (Operation::Messages, json!({"model": "m", "max_tokens": 5, "messages": [], "mcp_tool_registry": {}})),
            (Operation::Messages, json!({"model": "m", "max_tokens": 5, "messages": [], "input": "x"})),
        ] {
            let r = run(op, body, &["web_search"]).unwrap_err();
            assert_eq!(r.status(), 400, "{r}");
        }
        let long = json!({"model": "m", "messages": [], "x".repeat(10_000): 1});
        let r = run(Operation::ChatCompletions, long, &[]).unwrap_err();
        assert!(r.to_string().len() < 400, "the refusal repeats a long field: {r}");
        for tools in [json!({"type": "function"}), json!([{"function": {}}]), json!([{"type": 5}])] {
            let body = json!({"model": "m", "messages": [], "tools": tools});
            assert_eq!(run(Operation::ChatCompletions, body, &[]).unwrap_err().status(), 400);
        }
    }

    #[test]
    fn dates_come_off_tool_types() {
        assert_eq!(undated("web_search_20250305"), "web_search");
        assert_eq!(undated("web_search_preview_2025_03_11"), "web_search_preview");
        assert_eq!(undated("web_search"), "web_search");
        assert_eq!(undated("x_2025"), "x_2025");
        assert_eq!(undated("_20250305"), "_20250305");
        assert_eq!(undated("é_2025_03_1x"), "é_2025_03_1x");
    }

    #[test]
    fn input_the_provider_adds_is_found() {
        let found = |v: Value| provider_input(v.as_object().unwrap());
        assert_eq!(found(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})), ProviderInput::default());
        assert_eq!(found(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).stored_context, Some("previous_response_id"));
        assert_eq!(found(json!({"model": "m", "input": "x", "conversation": "conv_1"})).stored_context, Some("conversation"));
        let chat = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_id": "file-1"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}}]}]});
        assert_eq!(found(chat), ProviderInput { stored_context: None, files: 1, images: 1 });
        let responses = json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png"}, {"type": "input_image", "file_id": "file-2"},
            {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]});
        assert_eq!(found(responses), ProviderInput { stored_context: None, files: 1, images: 2 });
        let anthropic = json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
            {"type": "document", "source": {"type": "file", "file_id": "file_1"}}]}]});
        assert_eq!(found(anthropic), ProviderInput { stored_context: None, files: 1, images: 1 });
    }

    #[test]
    fn betas_pass_only_from_the_allow_list() {
        let allowed = vec!["prompt-caching-2024-07-31".to_owned()];
        assert!(check_betas("anthropic-beta", "prompt-caching-2024-07-31", &allowed).is_ok());
        assert!(check_betas("anthropic-beta", "", &allowed).is_ok());
        let r = check_betas("anthropic-beta", "prompt-caching-2024-07-31, mcp-client-2025-04-04", &allowed).unwrap_err();
        assert!(r.to_string().contains("mcp-client-2025-04-04") && r.status() == 400, "{r}");
    }
}
