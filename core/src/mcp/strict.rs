//! Bodies that two JSON parsers could read as two different messages are refused before anything
//! is decided: the firewall decides on what it parsed, the upstream runs what it parsed.
//!
//! - A duplicate key anywhere: serde keeps the last, other parsers the first.
//! - At the envelope and in `params`, a key that is a case variant of a field MCP defines (`Name`
//!   beside `name`): Go's `encoding/json` matches field names case-insensitively, with Unicode
//!   simple folding (`ſ` is `s`, the Kelvin sign is `k`), and keeps the last match.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

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

/// What the check read on its way through a body.
#[derive(Debug, Default)]
pub struct Checked {
    /// A single message's `params.arguments`, as a value: the one every parser reads (each key
    /// once), so the firewall need not parse them a second time.
    pub arguments: Option<Value>,
}

/// Checks a POST body (one message or a batch); `Ok` means every parser reads the same message.
pub fn check(body: &[u8]) -> Result<(), Ambiguity> {
    read(body).map(|_| ())
}

/// [`check`], keeping what it read of a single message (its arguments).
pub fn read(body: &[u8]) -> Result<Checked, Ambiguity> {
    let found = RefCell::new(None);
    let arguments = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = Walk { role: Role::Top, found: &found, arguments: Some(&arguments) }.deserialize(&mut de).and_then(|()| de.end());
    match (result, found.into_inner()) {
        (_, Some(ambiguity)) => Err(ambiguity),
        (Ok(()), None) => Ok(Checked { arguments: arguments.into_inner() }),
        (Err(e), None) => Err(Ambiguity::Json(e.to_string())),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The body: a message or a batch of messages.
    Top,
    Envelope,
    Params,
    Arguments,
    Other,
}

impl Role {
    fn at(self) -> &'static str {
        match self {
            Role::Top | Role::Envelope => "the JSON-RPC message",
            Role::Params => "params",
            Role::Arguments => "the arguments",
            Role::Other => "the body",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Role::Top | Role::Envelope => ENVELOPE_FIELDS,
            Role::Params => PARAMS_FIELDS,
            _ => &[],
        }
    }

    fn child(self, key: &str) -> Role {
        match (self, key) {
            (Role::Top | Role::Envelope, "params") => Role::Params,
            (Role::Params, "arguments") => Role::Arguments,
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

/// Walks one value; the first ambiguity found is left in `found` (serde's errors carry only text).
struct Walk<'f> {
    role: Role,
    found: &'f RefCell<Option<Ambiguity>>,
    /// Where a single message's arguments are kept, on the way to them (none in a batch).
    arguments: Option<&'f RefCell<Option<Value>>>,
}

impl Walk<'_> {
    fn refuse<E: de::Error>(&self, a: Ambiguity) -> E {
        refuse(self.found, a)
    }
}

fn refuse<E: de::Error>(found: &RefCell<Option<Ambiguity>>, a: Ambiguity) -> E {
    let e = E::custom(&a);
    *found.borrow_mut() = Some(a);
    e
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // A batch's elements are messages; any other array's are plain values.
        let role = if self.role == Role::Top { Role::Envelope } else { Role::Other };
        while seq.next_element_seed(Walk { role, found: self.found, arguments: None })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let role = if self.role == Role::Top { Role::Envelope } else { self.role };
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut seen: std::collections::HashSet<Cow<'de, str>> = std::collections::HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let fields = role.fields();
            if !fields.contains(&key.as_ref())
                && let Some(field) = fields.iter().find(|f| folds_equal(&key, f))
            {
                return Err(self.refuse(Ambiguity::CaseVariant { key: key.into_owned(), field, at: role.at() }));
            }
            // Small objects are the rule: a linear scan beats hashing until they grow.
            let duplicate = if keys.len() < 16 { keys.contains(&key) } else { !seen.insert(key.clone()) };
            if duplicate {
                return Err(self.refuse(Ambiguity::DuplicateKey { key: key.into_owned(), at: role.at() }));
            }
            let child = role.child(&key);
            if keys.len() < 16 {
                keys.push(key);
                if keys.len() == 16 {
                    seen.extend(keys.iter().cloned());
                }
            }
            match self.arguments {
                Some(slot) if child == Role::Arguments => *slot.borrow_mut() = Some(map.next_value_seed(Read { role: child, found: self.found })?),
                _ => {
                    let arguments = self.arguments.filter(|_| child == Role::Params);
                    map.next_value_seed(Walk { role: child, found: self.found, arguments })?;
                }
            }
        }
        Ok(())
    }
}

/// A value read whole (a single message's arguments), each object's keys checked once as
/// [`Walk`] checks them: below `params`, names are the tool's own, so no field's case rules.
struct Read<'f> {
    role: Role,
    found: &'f RefCell<Option<Ambiguity>>,
}

impl<'de> DeserializeSeed<'de> for Read<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Read<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Read { role: Role::Other, found: self.found })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(refuse(self.found, Ambiguity::DuplicateKey { key, at: self.role.at() }));
            }
            let value = map.next_value_seed(Read { role: Role::Other, found: self.found })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Object keys, borrowed from the body unless they contain escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
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
        let read = read(body.as_bytes()).unwrap().arguments;
        assert_eq!(read, Some(serde_json::from_str::<Value>(arguments).unwrap()));
        let none = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"arguments":{"a":1}}}}"#;
        assert_eq!(super::read(none.as_bytes()).unwrap().arguments, None, "only params.arguments");
        let batch = format!("[{body}]");
        assert_eq!(super::read(batch.as_bytes()).unwrap().arguments, None, "a batch's elements are decided one by one");
    }

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        for bad in [&b"{"[..], b"\xff", b"[1,", &[b'['; 10_000][..]] {
            assert!(matches!(check(bad), Err(Ambiguity::Json(_))));
        }
    }
}
