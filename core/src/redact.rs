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
    let normalized: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SENSITIVE.iter().any(|s| normalized.contains(s))
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
