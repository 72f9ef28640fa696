//! Bodies that two JSON parsers could read as two different messages are refused before anything
//! is decided: the firewall decides on what it parsed, the upstream runs what it parsed.
//!
//! - A duplicate key anywhere: serde keeps the last, other parsers the first.
//! - At the envelope and in `params`, a key that is a case variant of a field MCP defines (`Name`
//!   beside `name`): Go's `encoding/json` matches field names case-insensitively, with Unicode
//!   simple folding (`ſ` is `s`, the Kelvin sign is `k`), and keeps the last match.
//!
//! The check is the body's one reading ([`crate::mcp::scan`]): on its way it keeps a single
//! message's envelope, its `tools/call` params and its arguments as a value, so nothing reads the
//! body again to decide it.

use crate::json_tree::{self, ReadError, Tree};
use crate::mcp::jsonrpc::{Envelope, Meta, ToolCallParams};
use crate::mcp::scan::{Scanner, SyntaxError};
use serde_json::value::RawValue;
use std::borrow::Cow;

const ENVELOPE_FIELDS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS_FIELDS: &[&str] =
    &["name", "arguments", "_meta", "uri", "cursor", "ref", "argument", "level", "task", "protocolVersion", "taskId", "inputResponses", "requestState"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("duplicate key {key:?} in {at}: refused, since parsers disagree on which one counts")]
    DuplicateKey { key: String, at: &'static str },
    #[error("key {key:?} in {at} is a case variant of {field:?}: refused, since some parsers match field names case-insensitively")]
    CaseVariant { key: String, field: &'static str, at: &'static str },
    #[error("request body is not valid JSON: {0}")]
    Json(String),
}

impl From<SyntaxError> for Ambiguity {
    fn from(e: SyntaxError) -> Ambiguity {
        Ambiguity::Json(e.to_string())
    }
}

/// What the check read on its way through a body.
#[derive(Debug, Default)]
pub struct Checked<'a> {
    /// A single message, when it is one [`crate::mcp::jsonrpc::parse`] reads as a message (an
    /// object whose `method`, if any, is a string); else that parser says what is wrong.
    pub message: Option<Message<'a>>,
}

/// A single message as the check read it.
#[derive(Debug)]
pub struct Message<'a> {
    /// What [`crate::mcp::jsonrpc::parse`] would read.
    pub envelope: Envelope<'a>,
    pub call: ReadCall<'a>,
}

/// What the check read of a `tools/call` on its way, so that it is not read again.
#[derive(Debug, Default)]
pub struct ReadCall<'a> {
    /// `params` as a `tools/call`'s, when they are an object with a string `name` and a readable
    /// `_meta`, as [`crate::mcp::jsonrpc::tool_call_params`] would read them; else that says
    /// what is wrong.
    pub params: Option<ToolCallParams<'a>>,
    /// `params.arguments` as a tree: the one every parser reads (each key once), so the
    /// firewall need not parse them a second time.
    pub arguments: Option<Tree<'a>>,
}

/// Checks a POST body (one message or a batch); `Ok` means every parser reads the same message.
pub fn check(body: &[u8]) -> Result<(), Ambiguity> {
    read(body).map(|_| ())
}

/// [`check`], keeping what it read of a single message.
pub fn read(body: &[u8]) -> Result<Checked<'_>, Ambiguity> {
    let text = std::str::from_utf8(body).map_err(|e| SyntaxError::at("invalid UTF-8", body, e.valid_up_to()))?;
    let mut scan = Scanner::new(text);
    let message = match scan.peek()? {
        b'{' => message(&mut scan)?,
        b'[' => {
            scan.array(|s| walk(s, Role::Envelope))?;
            None
        }
        _ => {
            walk(&mut scan, Role::Other)?;
            None
        }
    };
    scan.end()?;
    Ok(Checked { message })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Envelope,
    Params,
    Arguments,
    Other,
}

impl Role {
    fn at(self) -> &'static str {
        match self {
            Role::Envelope => "the JSON-RPC message",
            Role::Params => "params",
            Role::Arguments => "the arguments",
            Role::Other => "the body",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Role::Envelope => ENVELOPE_FIELDS,
            Role::Params => PARAMS_FIELDS,
            _ => &[],
        }
    }

    fn child(self, key: &str) -> Role {
        match (self, key) {
            (Role::Envelope, "params") => Role::Params,
            _ => Role::Other,
        }
    }
}

/// Go's field matching: ASCII case-insensitive, plus the two non-ASCII letters that fold to ASCII.
fn folds_equal(key: &str, field: &str) -> bool {
    let fold = |c: char| match c {
        '\u{017F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// One object's keys so far, each checked as it comes: once only, and (where MCP names the
/// fields) no case variant of a field.
struct Keys<'a> {
    role: Role,
    few: Vec<Cow<'a, str>>,
    many: std::collections::HashSet<Cow<'a, str>>,
}

impl<'a> Keys<'a> {
    fn new(role: Role) -> Keys<'a> {
        Keys { role, few: Vec::new(), many: Default::default() }
    }

    // A `&Cow`, not a `&str`: a borrowed key is kept without copying its text.
    #[allow(clippy::ptr_arg)]
    fn check(&mut self, key: &Cow<'a, str>) -> Result<(), Ambiguity> {
        let fields = self.role.fields();
        if !fields.contains(&key.as_ref())
            && let Some(field) = fields.iter().find(|f| folds_equal(key, f))
        {
            return Err(Ambiguity::CaseVariant { key: key.clone().into_owned(), field, at: self.role.at() });
        }
        // Small objects are the rule: a linear scan beats hashing until they grow.
        let duplicate = if self.few.len() < 16 { self.few.contains(key) } else { !self.many.insert(key.clone()) };
        if duplicate {
            return Err(Ambiguity::DuplicateKey { key: key.clone().into_owned(), at: self.role.at() });
        }
        if self.few.len() < 16 {
            self.few.push(key.clone());
            if self.few.len() == 16 {
                self.many.extend(self.few.iter().cloned());
            }
        }
        Ok(())
    }
}

/// Checks one value, keeping nothing.
fn walk(scan: &mut Scanner<'_>, role: Role) -> Result<(), Ambiguity> {
    match scan.peek()? {
        b'{' => {
            let mut keys = Keys::new(role);
            scan.object(|s, key| {
                keys.check(&key)?;
                walk(s, role.child(&key))
            })
        }
        b'[' => scan.array(|s| walk(s, Role::Other)),
        _ => Ok(scan.check_scalar()?),
    }
}

/// Reads one value whole (a message's arguments), its objects' keys checked: below `params`,
/// names are the tool's own, so no field's case rules.
fn value<'a>(scan: &mut Scanner<'a>) -> Result<Tree<'a>, Ambiguity> {
    json_tree::read(scan).map_err(|e| match e {
        ReadError::Syntax(e) => Ambiguity::from(e),
        ReadError::DuplicateKey(key) => Ambiguity::DuplicateKey { key, at: Role::Arguments.at() },
    })
}

/// Checks one value and gives back its text.
fn spanned<'a>(scan: &mut Scanner<'a>, role: Role) -> Result<&'a str, Ambiguity> {
    scan.peek()?;
    let start = scan.offset();
    walk(scan, role)?;
    Ok(scan.since(start))
}

/// What a single message's envelope holds, as read.
#[derive(Default)]
struct Fields<'a> {
    id: Option<&'a str>,
    /// `None` absent or `null`, as serde reads an `Option`; `Some(None)` not a string.
    method: Option<Option<Cow<'a, str>>>,
    params: Option<&'a str>,
    call: CallFields<'a>,
}

/// What an object of params holds that a `tools/call` reads.
#[derive(Default)]
struct CallFields<'a> {
    /// Only a string: anything else is serde's to refuse.
    name: Option<Cow<'a, str>>,
    arguments: Option<&'a str>,
    value: Option<Tree<'a>>,
    meta: Option<&'a str>,
}

/// A single message: its object checked, its fields kept.
fn message<'a>(scan: &mut Scanner<'a>) -> Result<Option<Message<'a>>, Ambiguity> {
    let mut f = Fields::default();
    let mut keys = Keys::new(Role::Envelope);
    scan.object(|s, key| {
        keys.check(&key)?;
        match key.as_ref() {
            "id" => f.id = not_null(spanned(s, Role::Other)?),
            "method" => f.method = string_or_not(s)?,
            "params" => f.params = not_null(params(s, &mut f.call)?),
            _ => walk(s, Role::Other)?,
        }
        Ok::<(), Ambiguity>(())
    })?;
    Ok(f.into_message())
}

/// `params`: checked, their text kept, and an object's `tools/call` fields.
fn params<'a>(scan: &mut Scanner<'a>, call: &mut CallFields<'a>) -> Result<&'a str, Ambiguity> {
    if scan.peek()? != b'{' {
        return spanned(scan, Role::Params);
    }
    let start = scan.offset();
    let mut keys = Keys::new(Role::Params);
    scan.object(|s, key| {
        keys.check(&key)?;
        match key.as_ref() {
            "name" => call.name = string_or_not(s)?.flatten(),
            "arguments" => {
                s.peek()?;
                let start = s.offset();
                call.value = Some(value(s)?);
                call.arguments = not_null(s.since(start));
            }
            "_meta" => call.meta = not_null(spanned(s, Role::Other)?),
            _ => walk(s, Role::Other)?,
        }
        Ok::<(), Ambiguity>(())
    })?;
    Ok(scan.since(start))
}

/// A value's text, `None` for `null`: serde reads an `Option` so.
fn not_null(text: &str) -> Option<&str> {
    Some(text).filter(|t| *t != "null")
}

/// A field serde reads as `Option<String>`: `None` for `null`, `Some(None)` for a value that is
/// not a string (which serde refuses).
fn string_or_not<'a>(scan: &mut Scanner<'a>) -> Result<Option<Option<Cow<'a, str>>>, Ambiguity> {
    if scan.peek()? == b'"' {
        return Ok(Some(Some(scan.string()?)));
    }
    Ok(not_null(spanned(scan, Role::Other)?).map(|_| None))
}

impl<'a> Fields<'a> {
    /// The message as `jsonrpc` reads it, or `None` where that reading fails (and so says why).
    fn into_message(self) -> Option<Message<'a>> {
        let method = match self.method {
            Some(None) => return None,
            Some(Some(m)) => Some(m),
            None => None,
        };
        let id = match self.id {
            Some(text) => Some(serde_json::from_str::<&RawValue>(text).ok()?),
            None => None,
        };
        let CallFields { name, arguments, value, meta } = self.call;
        let params = name.and_then(|name| tool_call(name, arguments, meta));
        Some(Message { envelope: Envelope { id, method, params: self.params }, call: ReadCall { params, arguments: value } })
    }
}

fn tool_call<'a>(name: Cow<'a, str>, arguments: Option<&'a str>, meta: Option<&'a str>) -> Option<ToolCallParams<'a>> {
    let meta = match meta {
        Some(text) => Some(serde_json::from_str::<Meta>(text).ok()?),
        None => None,
    };
    Some(ToolCallParams { name: name.into_owned(), arguments, meta })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_pass() {
        for ok in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi","nested":{"a":1,"b":[{"a":1},{"a":2}]}}}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"Name":"fine in a result","name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"Name":"an argument may be called that","name":"y"}}}"#,
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn ambiguous_messages_are_refused() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"delete_all"}}"#, "Name"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}"#, "Method"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","PARAMS":{"name":"x"}}"#, "PARAMS"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","argumentſ":{}}}"#, "argumentſ"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"path":"/tmp","path":"/etc"}}}"#, "path"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","name":"y"}}"#, "name"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[{"k":1,"k":2}]}}}"#, "k"),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"x","method":"tools/call"}]"#, "method"),
            // Escapes are read as what they spell.
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","n\u0061me":"y"}}"#, "name"),
        ];
        for (body, key) in cases {
            let e = check(body.as_bytes()).unwrap_err();
            let named = match &e {
                Ambiguity::DuplicateKey { key, .. } | Ambiguity::CaseVariant { key, .. } => key.clone(),
                Ambiguity::Json(m) => panic!("{body}: {m}"),
            };
            assert_eq!(named, key, "{body}: {e}");
        }
        let many: String = (0..40).map(|i| format!("\"k{i}\":1,")).collect();
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"arguments":{{{many}"k33":2}}}}}}"#);
        assert!(matches!(check(body.as_bytes()), Err(Ambiguity::DuplicateKey { .. })));
    }

    #[test]
    fn a_single_messages_arguments_are_read_as_serde_reads_them_and_a_batchs_are_not() {
        let arguments = r#"{"message":"hi \u00e9","n":-3,"big":18446744073709551615,"x":1.5e3,"list":[null,true,{"a":{}}],"k":"v"}"#;
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{arguments}}}}}"#);
        let read = read(body.as_bytes()).unwrap().message.and_then(|m| m.call.arguments);
        assert_eq!(read.map(|t| t.to_value()), Some(serde_json::from_str::<serde_json::Value>(arguments).unwrap()));
        let none = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"arguments":{"a":1}}}}"#;
        assert_eq!(super::read(none.as_bytes()).unwrap().message.and_then(|m| m.call.arguments), None, "only params.arguments");
        let batch = format!("[{body}]");
        assert!(super::read(batch.as_bytes()).unwrap().message.is_none(), "a batch's elements are decided one by one");
    }

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        for bad in [&b"{"[..], b"\xff", b"[1,", &[b'['; 10_000][..]] {
            assert!(matches!(check(bad), Err(Ambiguity::Json(_))));
        }
    }
}
