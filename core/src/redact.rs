//! Redaction of sensitive values in tool arguments before they are stored in an
//! `ApprovalRequest` or an audit record.

use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Fragments of key names whose values are never stored. Matched case-insensitively against the
/// key with `-` and `_` removed, so `API-Key`, `api_key` and `apiKey` are all caught.
const SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "authorization",
    "privatekey",
    "accesskey",
    "cookie",
    "sessionid",
];

/// Deeper than this, whole subtrees are replaced: redaction must terminate on hostile input.
const MAX_DEPTH: usize = 64;

pub fn is_sensitive_key(key: &str) -> bool {
    let normalized: String = if key.is_ascii() {
        key.bytes().filter(|c| *c != b'_' && *c != b'-').map(|c| char::from(c.to_ascii_lowercase())).collect()
    } else {
        key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
    };
    SENSITIVE.iter().any(|s| normalized.contains(s))
}

/// `value` redacted as it is serialized, without a redacted copy: what audit records write.
#[derive(Debug, Clone, Copy)]
pub struct Redacted<'a>(pub &'a Value);

impl serde::Serialize for Redacted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        At(self.0, 0).serialize(serializer)
    }
}

struct At<'a>(&'a Value, usize);

impl serde::Serialize for At<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let At(value, depth) = *self;
        if depth >= MAX_DEPTH {
            return serializer.serialize_str(REDACTED);
        }
        match value {
            Value::Object(map) => {
                let mut m = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    if is_sensitive_key(k) {
                        m.serialize_entry(k, REDACTED)?;
                    } else {
                        m.serialize_entry(k, &At(v, depth + 1))?;
                    }
                }
                m.end()
            }
            Value::Array(items) => {
                let mut s = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    s.serialize_element(&At(v, depth + 1))?;
                }
                s.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// A copy of `value` with the values of sensitive keys replaced by `[REDACTED]`.
pub fn redact(value: &Value) -> Value {
    redact_at(value, 0)
}

fn redact_at(value: &Value, depth: usize) -> Value {
    if depth >= MAX_DEPTH {
        return Value::String(REDACTED.into());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) {
                        Value::String(REDACTED.into())
                    } else {
                        redact_at(v, depth + 1)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_at(v, depth + 1)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialized_redaction_equals_the_redacted_copy() {
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!({"password": "p", "next": deep, "list": [1, {"token": "t"}]});
        }
        for v in [json!({"a": 1, "API_KEY": "k", "nested": {"Cookie": [1, 2], "x": "ü"}}), json!([{"secret": 1}]), json!("plain"), deep] {
            assert_eq!(serde_json::to_value(Redacted(&v)).unwrap(), redact(&v));
        }
    }

    #[test]
    fn sensitive_keys() {
        for k in ["password", "PASSWORD", "db_password", "api_key", "apiKey", "API-Key", "token",
            "refresh_token", "client_secret", "credentials", "Authorization", "private_key",
            "aws_access_key_id", "Cookie", "session_id"] {
            assert!(is_sensitive_key(k), "{k} should be sensitive");
        }
        for k in ["path", "command", "repo", "name", "tokens_used_count_x", "environment"] {
            // `tokens_used_count_x` contains "token": over-redacting is the safe side.
            assert_eq!(is_sensitive_key(k), k.contains("token"), "{k}");
        }
    }

    #[test]
    fn redacts_nested_and_keeps_the_rest() {
        let v = json!({
            "command": "deploy",
            "env": {"API_KEY": "sk-123", "region": "eu"},
            "headers": [{"Authorization": "Bearer x"}, {"accept": "json"}],
            "password": {"nested": "whole subtree goes"}
        });
        let r = redact(&v);
        assert_eq!(r, json!({
            "command": "deploy",
            "env": {"API_KEY": REDACTED, "region": "eu"},
            "headers": [{"Authorization": REDACTED}, {"accept": "json"}],
            "password": REDACTED
        }));
        assert!(!r.to_string().contains("sk-123"));
    }

    #[test]
    fn deep_input_terminates() {
        let mut v = json!("leaf");
        for _ in 0..500 {
            v = json!({"a": v});
        }
        let r = redact(&v);
        assert!(r.to_string().contains(REDACTED));
    }
}
