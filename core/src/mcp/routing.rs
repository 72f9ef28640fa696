//! The routing headers of MCP 2026-07-28 (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`,
//! `MCP-Protocol-Version`) mirror parts of the body so intermediaries can route without parsing
//! it. The firewall decides on the body and forwards the headers, so an upstream (or anything in
//! front of it) that routes on a header must see the call the firewall decided: a header that
//! disagrees with the body is refused before any decision (HTTP 400, JSON-RPC -32020), as the
//! spec requires of whatever processes the body.

use crate::mcp::jsonrpc::Envelope;
use base64::Engine;
use serde_json::Value;

/// JSON-RPC error code of a header that disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// The routing headers of one request, as sent (values still encoded).
#[derive(Debug, Default, Clone)]
pub struct RoutingHeaders<'a> {
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Param-<token>` headers: the token and the value.
    pub params: Vec<(&'a str, &'a str)>,
    /// A routing header sent more than once (first-copy and last-copy readers would disagree).
    pub repeated: Option<&'a str>,
}

impl RoutingHeaders<'_> {
    /// Whether any header that mirrors the body is present (then the body must agree with it).
    pub fn any(&self) -> bool {
        self.method.is_some() || self.name.is_some() || self.protocol_version.is_some() || !self.params.is_empty() || self.repeated.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    #[error("header {0} appears more than once")]
    Repeated(String),
    #[error("Mcp-Method header {header:?} does not match the body's method {body:?}")]
    Method { header: String, body: String },
    #[error("Mcp-Name header {header:?} does not match the body's {field} {body:?}")]
    Name { header: String, field: &'static str, body: String },
    #[error("Mcp-Name header {0:?} on a method that names nothing")]
    NameWithoutName(String),
    #[error("header {0} carries a malformed base64 value")]
    Malformed(String),
    #[error("MCP-Protocol-Version header {header:?} does not match the body's _meta protocol version {body:?}")]
    Version { header: String, body: String },
    #[error("Mcp-Param-{token} header {value:?} is not a value of the call's arguments")]
    Param { token: String, value: String },
    #[error("Mcp-Param-{0} header on a request that is not a tools/call")]
    ParamWithoutCall(String),
    #[error("routing headers on a batch: they mirror one message")]
    Batch,
}

/// The params key a method's `Mcp-Name` mirrors.
fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// A header value as the spec encodes it: verbatim, or `=?base64?<payload>?=` for values that
/// would not survive as a header. A malformed or non-canonical payload is `None`.
pub fn decode(value: &str) -> Option<String> {
    let Some(payload) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Some(value.to_owned());
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).ok()?;
    if engine.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Whether `value` is the header rendering of a scalar somewhere in `args` (strings as they are,
/// booleans `true`/`false`, numbers as written or, for integers, numerically equal).
fn carried(args: &Value, value: &str, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    match args {
        Value::String(s) => s == value,
        Value::Bool(b) => value == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == value || value.parse::<i128>().ok().zip(n.as_i64().map(i128::from)).is_some_and(|(a, b)| a == b),
        Value::Array(items) => items.iter().any(|v| carried(v, value, depth + 1)),
        Value::Object(map) => map.values().any(|v| carried(v, value, depth + 1)),
        Value::Null => false,
    }
}

/// Checks one message's headers against it. `params` is the message's parsed params (`Null`
/// when absent). Without the tool's schema the firewall cannot tell which argument an
/// `Mcp-Param-*` header mirrors, so it requires what can be checked: its value is one the
/// arguments carry; the server, which knows the schema, checks the rest.
pub fn check(h: &RoutingHeaders<'_>, env: &Envelope<'_>, params: &Value) -> Result<(), HeaderMismatch> {
    if let Some(name) = h.repeated {
        return Err(HeaderMismatch::Repeated(name.to_owned()));
    }
    let method = env.method().unwrap_or_default();
    if let Some(header) = h.method
        && header != method
    {
        return Err(HeaderMismatch::Method { header: header.to_owned(), body: method.to_owned() });
    }
    if let Some(raw) = h.name {
        let header = decode(raw).ok_or_else(|| HeaderMismatch::Malformed("Mcp-Name".into()))?;
        let Some(field) = name_key(method) else { return Err(HeaderMismatch::NameWithoutName(header)) };
        let body = params.get(field).and_then(Value::as_str).unwrap_or_default();
        if header != body {
            return Err(HeaderMismatch::Name { header, field, body: body.to_owned() });
        }
    }
    if let Some(header) = h.protocol_version
        && let Some(body) = params.pointer("/_meta").and_then(|m| m.get(PROTOCOL_VERSION_META)).and_then(Value::as_str)
        && header != body
    {
        return Err(HeaderMismatch::Version { header: header.to_owned(), body: body.to_owned() });
    }
    for (token, raw) in &h.params {
        if method != "tools/call" {
            return Err(HeaderMismatch::ParamWithoutCall((*token).to_owned()));
        }
        let value = decode(raw).ok_or_else(|| HeaderMismatch::Malformed(format!("Mcp-Param-{token}")))?;
        if !carried(params.get("arguments").unwrap_or(&Value::Null), &value, 0) {
            return Err(HeaderMismatch::Param { token: (*token).to_owned(), value });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::{Incoming, parse};
    use serde_json::json;

    fn checked(body: &Value, h: &RoutingHeaders<'_>) -> Result<(), HeaderMismatch> {
        let text = body.to_string();
        let Ok(Incoming::Single(env)) = parse(text.as_bytes()) else { panic!("single") };
        check(h, &env, body.get("params").unwrap_or(&Value::Null))
    }

    #[test]
    fn headers_that_agree_pass() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/tmp/a b", "n": 42, "deep": {"region": "eu"}},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let h = RoutingHeaders {
            method: Some("tools/call"),
            name: Some("read_file"),
            protocol_version: Some("2026-07-28"),
            params: vec![("Region", "eu"), ("N", "42"), ("Path", "=?base64?L3RtcC9hIGI=?=")],
            repeated: None,
        };
        assert_eq!(checked(&call, &h), Ok(()));
        assert_eq!(checked(&call, &RoutingHeaders::default()), Ok(()));
        let read = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///x"}});
        assert_eq!(checked(&read, &RoutingHeaders { name: Some("file:///x"), ..Default::default() }), Ok(()));
        // Stateless clients name the task they poll, so requests for it reach the instance that holds it.
        for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
            let poll = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"taskId": "t-1"}});
            assert_eq!(checked(&poll, &RoutingHeaders { method: Some(method), name: Some("t-1"), ..Default::default() }), Ok(()), "{method}");
            assert!(checked(&poll, &RoutingHeaders { name: Some("t-2"), ..Default::default() }).is_err(), "{method}");
        }
    }

    #[test]
    fn headers_that_lie_are_refused() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {"confirm": true},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let cases = [
            RoutingHeaders { name: Some("read_file"), ..Default::default() },
            RoutingHeaders { method: Some("tools/list"), ..Default::default() },
            RoutingHeaders { protocol_version: Some("2025-11-25"), ..Default::default() },
            RoutingHeaders { params: vec![("Path", "/etc/passwd")], ..Default::default() },
            RoutingHeaders { name: Some("=?base64?!!?="), ..Default::default() },
            RoutingHeaders { name: Some("=?base64?ZGVsZXRlX2V2ZXJ5dGhpbmc?="), ..Default::default() },
            RoutingHeaders { repeated: Some("Mcp-Name"), ..Default::default() },
        ];
        for h in &cases {
            assert!(checked(&call, h).is_err(), "{h:?}");
        }
        // The canonical base64 of the real name passes.
        assert_eq!(checked(&call, &RoutingHeaders { name: Some("=?base64?ZGVsZXRlX2V2ZXJ5dGhpbmc=?="), ..Default::default() }), Ok(()));
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert!(matches!(checked(&list, &RoutingHeaders { name: Some("x"), ..Default::default() }), Err(HeaderMismatch::NameWithoutName(_))));
        assert!(matches!(checked(&list, &RoutingHeaders { params: vec![("A", "1")], ..Default::default() }), Err(HeaderMismatch::ParamWithoutCall(_))));
    }
}
