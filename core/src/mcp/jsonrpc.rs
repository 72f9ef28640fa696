//! The JSON-RPC envelope of MCP messages: only what the firewall must read (method, id, tool
//! name); everything else stays raw bytes and passes through unchanged.

use rmcp::model::{CallToolResult, ContentBlock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// One message, parsed only as far as its envelope.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// The params' JSON text.
    #[serde(borrow, default, deserialize_with = "raw_text")]
    pub params: Option<&'a str>,
}

/// A value's JSON text, borrowed from the body; `null` is `None`, as serde reads an `Option`.
fn raw_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    Ok(Option::<&'de RawValue>::deserialize(d)?.map(RawValue::get))
}

impl Envelope<'_> {
    /// A request: has a method and an id (a notification has no id; a response no method).
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
}

#[derive(Debug)]
pub enum Incoming<'a> {
    Single(Envelope<'a>),
    Batch(Vec<Element<'a>>),
}

/// One element of a batch: its bytes as sent, and its envelope (`None` when the element is not
/// a JSON-RPC message, which JSON-RPC answers with an error of its own, not by failing the batch).
#[derive(Debug)]
pub struct Element<'a> {
    pub raw: &'a RawValue,
    pub envelope: Option<Envelope<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("an empty batch is not a JSON-RPC message")]
    EmptyBatch,
}

impl ParseError {
    /// The JSON-RPC error code: -32700 parse error, -32600 invalid request.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) => -32700,
            ParseError::EmptyBatch => -32600,
        }
    }
}

/// Parses a POST body: one message or a batch. Invalid UTF-8, invalid JSON and nesting past
/// serde_json's recursion limit are errors, never panics.
pub fn parse(body: &[u8]) -> Result<Incoming<'_>, ParseError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let raws: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
        if raws.is_empty() {
            return Err(ParseError::EmptyBatch);
        }
        let elements = raws.into_iter().map(|raw| Element { raw, envelope: serde_json::from_str(raw.get()).ok() }).collect();
        Ok(Incoming::Batch(elements))
    } else {
        serde_json::from_slice(body).map(Incoming::Single).map_err(|e| ParseError::Json(e.to_string()))
    }
}

/// The params of `tools/call`, arguments kept raw.
#[derive(Debug, Deserialize)]
pub struct ToolCallParams<'a> {
    pub name: String,
    /// The arguments' JSON text.
    #[serde(borrow, default, deserialize_with = "raw_text")]
    pub arguments: Option<&'a str>,
    #[serde(rename = "_meta", default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Meta {
    #[serde(rename = "progressToken", default)]
    pub progress_token: Option<Value>,
    /// W3C trace context, where MCP carries it besides the HTTP headers. Anything but a string
    /// is ignored, never an error: tracing must not refuse a call.
    #[serde(default, deserialize_with = "string_or_nothing")]
    pub traceparent: Option<String>,
    #[serde(default, deserialize_with = "string_or_nothing")]
    pub tracestate: Option<String>,
}

fn string_or_nothing<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

pub fn tool_call_params(params: Option<&str>) -> Result<ToolCallParams<'_>, String> {
    let raw = params.ok_or("tools/call without params")?;
    serde_json::from_str(raw).map_err(|e| format!("invalid tools/call params: {e}"))
}

fn id_value(id: Option<&RawValue>) -> Value {
    id.and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or(Value::Null)
}

/// A JSON-RPC error response.
pub fn error_response(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id_value(id), "error": {"code": code, "message": message}})).unwrap_or_default()
}

/// A successful response with `result`. A tool result the firewall makes itself says it is
/// complete (`resultType`, which 2026-07-28 clients require; earlier revisions allow extra keys).
pub fn result_response(id: Option<&RawValue>, mut result: Value) -> Vec<u8> {
    if let Value::Object(map) = &mut result
        && map.contains_key("content")
        && !map.contains_key("resultType")
    {
        map.insert("resultType".into(), Value::String("complete".into()));
    }
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id_value(id), "result": result})).unwrap_or_default()
}

/// A successful response carrying one of MCP's typed results, serialized once, straight into
/// the envelope.
pub fn typed_response<T: Serialize>(id: Option<&RawValue>, result: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Response<'a, T> {
        jsonrpc: &'static str,
        id: Option<&'a RawValue>,
        result: &'a T,
    }
    serde_json::to_vec(&Response { jsonrpc: "2.0", id, result }).unwrap_or_default()
}

/// A `tools/call` result the model reads: one text item, `isError` as given. Errors are results,
/// not JSON-RPC errors, so the connection stays healthy and the model can adapt.
pub fn text_result(text: impl Into<String>, is_error: bool) -> CallToolResult {
    let content = vec![ContentBlock::text(text)];
    if is_error { CallToolResult::error(content) } else { CallToolResult::success(content) }
}

/// A text result that also says where things stand for a program (`structuredContent`).
pub fn text_result_with(text: impl Into<String>, structured: Value) -> CallToolResult {
    let mut result = text_result(text, false);
    result.structured_content = Some(structured);
    result
}

/// [`text_result`] as a whole response.
pub fn tool_text_result(id: Option<&RawValue>, text: &str, is_error: bool) -> Vec<u8> {
    typed_response(id, &text_result(text, is_error))
}

/// `notifications/progress` for a held call.
pub fn progress_notification(token: &Value, progress: u64, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": token, "progress": progress, "message": message},
    }))
    .unwrap_or_default()
}

/// The `tools/call` request with new arguments (the justification removed), other fields kept.
pub fn with_arguments(id: Option<&RawValue>, params: &str, arguments: &crate::json_tree::Tree<'_>) -> Result<Vec<u8>, String> {
    let mut p: serde_json::Map<String, Value> = serde_json::from_str(params).map_err(|e| format!("invalid tools/call params: {e}"))?;
    p.insert("arguments".into(), arguments.to_value());
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id_value(id), "method": "tools/call", "params": p})).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let Ok(Incoming::Single(e)) = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,{"b":2}]}}}"#) else {
            panic!("single");
        };
        assert!(e.is_request());
        assert_eq!(e.method(), Some("tools/call"));
        assert_eq!(e.id.map(|i| i.get()), Some("7"));
        let call = tool_call_params(e.params).unwrap();
        assert_eq!(call.name, "x");
        assert_eq!(call.arguments, Some(r#"{"a":[1,{"b":2}]}"#));

        let Ok(Incoming::Single(n)) = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#) else { panic!() };
        assert!(!n.is_request());
        let Ok(Incoming::Single(r)) = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#) else { panic!() };
        assert!(r.method.is_none());
        let Ok(Incoming::Batch(b)) = parse(br#" [{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":1,"method":"b"}]"#) else { panic!() };
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].envelope.as_ref().and_then(|e| e.method()), Some("b"));
        assert_eq!(b[1].raw.get(), r#"{"jsonrpc":"2.0","id":1,"method":"b"}"#);
        // JSON-RPC answers a bad element on its own; the others still count.
        let Ok(Incoming::Batch(b)) = parse(br#"[1, {"jsonrpc":"2.0","id":2,"method":"c"}]"#) else { panic!() };
        assert!(b[0].envelope.is_none());
        assert!(b[1].envelope.is_some());
    }

    #[test]
    fn escaped_method_names_are_read() {
        let Ok(Incoming::Single(e)) = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#) else { panic!() };
        assert_eq!(e.method(), Some("tools/call"));
    }

    #[test]
    fn bad_input_is_an_error() {
        for body in [&b""[..], b"{", b"[]", b"\xff\xfe", b"{\"method\": 5}", &[b'['; 10_000][..]] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse(b"[]").unwrap_err().code(), -32600);
        assert_eq!(parse(b"{").unwrap_err().code(), -32700);
    }

    #[test]
    fn responses_keep_the_id() {
        let Ok(Incoming::Single(e)) = parse(br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"x"}}"#) else { panic!() };
        let out: Value = serde_json::from_slice(&tool_text_result(e.id, "Access denied: no", true)).unwrap();
        assert_eq!(
            out,
            json!({"jsonrpc":"2.0","id":"abc","result":{"content":[{"type":"text","text":"Access denied: no"}],"isError":true,"resultType":"complete"}})
        );
        let err: Value = serde_json::from_slice(&error_response(None, -32700, "bad")).unwrap();
        assert_eq!(err["id"], Value::Null);
    }

    #[test]
    fn arguments_are_replaced_and_the_rest_kept() {
        let Ok(Incoming::Single(e)) = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":1,"justification":"j"},"_meta":{"progressToken":"t"}}}"#,
        ) else {
            panic!()
        };
        let out: Value = serde_json::from_slice(&with_arguments(e.id, e.params.unwrap(), &crate::json_tree::Tree::borrowed(&json!({"a":1}))).unwrap()).unwrap();
        assert_eq!(out["params"], json!({"name":"x","arguments":{"a":1},"_meta":{"progressToken":"t"}}));
    }
}
