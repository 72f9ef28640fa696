//! Redaction of sensitive values in tool arguments (and justifications) before they are stored in
//! an `ApprovalRequest` or an audit record. Two nets:
//! - by key: the value of a key named like a credential (`password`, `api_key`, …), and the
//!   `value` of a `{"name": "Authorization", "value": …}` pair;
//! - by shape, in any string: bearer and basic credentials, passwords in URLs and DSNs,
//!   private-key blocks, and the token formats of well-known providers.

use crate::json_tree::{Members, Tree};
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

pub const REDACTED: &str = "[REDACTED]";

/// Fragments of key names whose values are never stored. Matched case-insensitively against the
/// key with `-` and `_` removed, so `API-Key`, `api_key` and `apiKey` are all caught.
const SENSITIVE: &[&str] =
    &["password", "passwd", "passphrase", "secret", "token", "apikey", "credential", "authorization", "privatekey", "accesskey", "cookie", "sessionid"];

/// Deeper than this, whole subtrees are replaced: redaction must terminate on hostile input.
const MAX_DEPTH: usize = 64;

pub fn is_sensitive_key(key: &str) -> bool {
    // Every key of every call's arguments comes here: the usual short ASCII key is normalized on
    // the stack.
    if key.len() <= 64 && key.is_ascii() {
        let mut buf = [0u8; 64];
        let mut n = 0;
        for b in key.bytes().filter(|b| *b != b'_' && *b != b'-') {
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        return holds_sensitive(&buf[..n]);
    }
    let normalized: String = if key.is_ascii() {
        key.bytes().filter(|c| *c != b'_' && *c != b'-').map(|c| char::from(c.to_ascii_lowercase())).collect()
    } else {
        key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
    };
    holds_sensitive(normalized.as_bytes())
}

/// The bytes a [`SENSITIVE`] fragment starts with.
const STARTS: [bool; 256] = {
    let mut starts = [false; 256];
    let mut i = 0;
    while i < SENSITIVE.len() {
        starts[SENSITIVE[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    starts
};

/// Whether a normalized key holds a [`SENSITIVE`] fragment: one pass over it, trying fragments
/// only where one could start (a search per fragment was most of the redaction check's cost).
fn holds_sensitive(normalized: &[u8]) -> bool {
    (0..normalized.len()).any(|i| STARTS[usize::from(normalized[i])] && SENSITIVE.iter().any(|s| normalized[i..].starts_with(s.as_bytes())))
}

/// The secret shapes, each a branch of [`shapes`]. Word boundaries are ASCII ones: a Unicode
/// `\b` makes the regex engine give up its fast automaton on any string with a non-ASCII
/// character (ten times slower, on every call whose arguments hold text in most of the world's
/// languages), and no secret shape here starts with a non-ASCII letter.
const SHAPES: [&str; 8] = [
    r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    r"(?P<label>(?i:(?-u:\b)(?:bearer|basic|token)\s+))[A-Za-z0-9._~+/=-]{8,}",
    r"(?P<pw>(?i:(?-u:\b)(?:password|passwd|pwd)\s*[=:]\s*))[^\s;&'\x22]+",
    r"(?P<url>(?-u:\b)[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@",
    r"(?-u:\b)(?:sk|rk|pk)[-_](?:live_|test_|proj-|ant-)?[A-Za-z0-9_-]{16,}",
    r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{20,}|(?-u:\b)github_pat_[A-Za-z0-9_]{20,}",
    r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}|(?-u:\b)glpat-[A-Za-z0-9_-]{20,}",
    r"(?-u:\b)AKIA[0-9A-Z]{16}(?-u:\b)|(?-u:\b)AIza[0-9A-Za-z_-]{35}",
];

/// Every shape in one regex: what [`redact_str`] replaces, in one pass.
fn shapes() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| Regex::new(&SHAPES.join("|")).expect("the redaction patterns compile"))
}

/// Whether `s` holds a secret shape. Asked of every call's arguments, most of which hold none:
/// searched for in groups each of which the regex engine can start from a literal (the
/// case-sensitive prefixes together; the URL by its `://`; each case-insensitive label alone),
/// which together cost half of the one regex's search, whose URL branch starts with a class and
/// leaves no literal to look for (docs/performance-history.md).
fn has_shape(s: &str) -> bool {
    static GROUPS: OnceLock<[Regex; 4]> = OnceLock::new();
    let groups = GROUPS.get_or_init(|| {
        let group = |branches: &[usize]| branches.iter().map(|i| SHAPES[*i]).collect::<Vec<_>>().join("|");
        #[allow(clippy::expect_used)]
        [group(&[0, 4, 5, 6, 7]), group(&[3]), group(&[1]), group(&[2])].map(|g| Regex::new(&g).expect("the redaction patterns compile"))
    });
    groups.iter().any(|g| g.is_match(s))
}

/// `s` with every secret-shaped part replaced by `[REDACTED]`; what names it (`Bearer `,
/// `password=`, `postgres://user:`) is kept, so the reader knows what was there.
pub fn redact_str(s: &str) -> Cow<'_, str> {
    // One scan by the regex's own automaton: most strings hold nothing secret-shaped, and
    // scanning for each shape's hint separately cost more than the decision itself.
    if s.len() < 6 || !has_shape(s) {
        return Cow::Borrowed(s);
    }
    shapes().replace_all(s, |c: &regex::Captures<'_>| match (c.name("label").or(c.name("pw")), c.name("url")) {
        (Some(label), _) => format!("{}{REDACTED}", label.as_str()),
        (_, Some(url)) => format!("{}{REDACTED}@", url.as_str()),
        _ => REDACTED.to_owned(),
    })
}

/// Whether an object is a name/value pair naming a credential, e.g. an HTTP header list entry
/// `{"name": "Authorization", "value": "Bearer …"}`: its value goes whatever it looks like.
fn is_sensitive_pair(map: &serde_json::Map<String, Value>) -> bool {
    PAIR_NAMES.iter().any(|k| map.get(*k).and_then(Value::as_str).is_some_and(is_sensitive_key))
}

/// [`is_sensitive_pair`] of an object read as a tree.
fn is_sensitive_pair_tree(members: &Members<'_>) -> bool {
    PAIR_NAMES.iter().any(|k| members.get(k).and_then(Tree::as_str).is_some_and(is_sensitive_key))
}

/// The members that name what a name/value pair holds.
const PAIR_NAMES: [&str; 5] = ["name", "key", "header", "Name", "Key"];

fn pair_value_key(k: &str) -> bool {
    matches!(k, "value" | "Value" | "val")
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
                let pair = is_sensitive_pair(map);
                let mut m = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    if is_sensitive_key(k) || (pair && pair_value_key(k)) {
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
            Value::String(text) => serializer.serialize_str(&redact_str(text)),
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Whether redacting `value`, whose JSON text as received is `raw`, would leave it as it is: no
/// sensitive key or name/value pair, nothing nested past the depth limit, and no secret-shaped
/// string (strings are checked as decoded, so an escape hides nothing). No rendering: most
/// calls' arguments are recorded as they came. Text with a line break between its tokens is
/// never taken as is: it would split an audit line.
pub fn untouched(value: &Tree<'_>, raw: &str) -> bool {
    /// `strings`: whether its strings may hold a secret shape (else only keys and depth are checked).
    fn clean(value: &Tree<'_>, depth: usize, strings: bool) -> bool {
        match value {
            _ if depth >= MAX_DEPTH => false,
            Tree::Object(members) => !is_sensitive_pair_tree(members) && members.iter().all(|(k, v)| !is_sensitive_key(k) && clean(v, depth + 1, strings)),
            Tree::Array(items) => items.iter().all(|v| clean(v, depth + 1, strings)),
            Tree::String(s) => !strings || s.len() < 6 || !has_shape(s),
            _ => true,
        }
    }
    let bytes = raw.as_bytes();
    if memchr::memchr2(b'\n', b'\r', bytes).is_some() {
        return false;
    }
    // Without an escape, every string's decoded text stands in `raw` as it is, between quotes
    // (which bound a word as a string's ends do): no secret shape anywhere in `raw` is none in
    // any string, found in one scan of the text instead of one search per string.
    let strings = memchr::memchr(b'\\', bytes).is_some() || has_shape(raw);
    clean(value, 0, strings)
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
        Value::Object(map) => Value::Object({
            let pair = is_sensitive_pair(map);
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) || (pair && pair_value_key(k)) { Value::String(REDACTED.into()) } else { redact_at(v, depth + 1) };
                    (k.clone(), v)
                })
                .collect()
        }),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_at(v, depth + 1)).collect()),
        Value::String(text) => Value::String(redact_str(text).into_owned()),
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
        for k in [
            "password",
            "PASSWORD",
            "db_password",
            "api_key",
            "apiKey",
            "API-Key",
            "token",
            "refresh_token",
            "client_secret",
            "credentials",
            "Authorization",
            "private_key",
            "aws_access_key_id",
            "Cookie",
            "session_id",
        ] {
            assert!(is_sensitive_key(k), "{k} should be sensitive");
        }
        for k in ["path", "command", "repo", "name", "tokens_used_count_x", "environment"] {
            // `tokens_used_count_x` contains "token": over-redacting is the safe side.
            assert_eq!(is_sensitive_key(k), k.contains("token"), "{k}");
        }
    }

    #[test]
    fn the_one_pass_key_check_finds_what_a_search_per_fragment_finds() {
        let mut keys: Vec<String> = vec![String::new(), "p".into(), "pas".into(), "tokens".into(), "xx".into()];
        for s in SENSITIVE {
            for (pre, post) in [("", ""), ("x", ""), ("", "y"), ("my_", "_value"), ("pp", "s")] {
                keys.push(format!("{pre}{s}{post}"));
                keys.push(format!("{pre}{}{post}", &s[1..]));
                keys.push(format!("{pre}{}{post}", &s[..s.len() - 1]));
                keys.push(format!("{pre}{}{post}", s.to_uppercase()));
            }
        }
        for k in keys {
            let normalized: String = k.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
            assert_eq!(is_sensitive_key(&k), SENSITIVE.iter().any(|s| normalized.contains(s)), "{k}");
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
        assert_eq!(
            r,
            json!({
                "command": "deploy",
                "env": {"API_KEY": REDACTED, "region": "eu"},
                "headers": [{"Authorization": REDACTED}, {"accept": "json"}],
                "password": REDACTED
            })
        );
        assert!(!r.to_string().contains("sk-123"));
    }

    #[test]
    fn secret_shaped_values_are_redacted_wherever_they_are() {
        let secrets = [
            "s3cr3t-bearer-value-123",
            "hunter2-in-a-url",
            "pw-in-a-dsn-77",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "sk-proj-abcdefghijklmnop1234567890",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-1234567890-abcdefghij",
            "AKIAABCDEFGHIJKLMNOP",
            "header-pair-value-9",
        ];
        let v = json!({
            "headers": [{"name": "Authorization", "value": "header-pair-value-9"}, {"name": "Accept", "value": "application/json"}],
            "note": "curl -H 'Authorization: Bearer s3cr3t-bearer-value-123' https://api",
            "url": "https://deploy:hunter2-in-a-url@git.example.com/repo.git",
            "dsn": "host=db user=app password=pw-in-a-dsn-77 sslmode=require",
            "key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END RSA PRIVATE KEY-----",
            "list": ["sk-proj-abcdefghijklmnop1234567890", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "xoxb-1234567890-abcdefghij AKIAABCDEFGHIJKLMNOP"],
        });
        let copy = redact(&v).to_string();
        let streamed = serde_json::to_string(&Redacted(&v)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), redact(&v));
        for s in secrets {
            assert!(!copy.contains(s), "{s} survived: {copy}");
        }
        // What it was stays readable; harmless values stay whole.
        for kept in ["Bearer [REDACTED]", "https://deploy:[REDACTED]@git.example.com", "password=[REDACTED]", "application/json", "sslmode=require"] {
            assert!(copy.contains(kept), "{kept} missing: {copy}");
        }
        for plain in ["deploy checkout to prod", "see https://example.com/a@b", "user@example.com", "the token count is 5", "sk-1"] {
            assert_eq!(redact_str(plain), plain, "{plain}");
        }
    }

    /// The grouped search answers as the one regex would, on every shape and on text near them.
    #[test]
    fn the_grouped_search_finds_what_the_one_regex_finds() {
        let near = [
            "Bearer s3cr3t-bearer-value-123",
            "TOKEN\tabcdefgh1",
            "pwd : x",
            "postgres://u:p@h",
            "sk_live_abcdefghijklmnop",
            "github_pat_abcdefghijklmnopqrstu",
            "xoxp-1234567890",
            "glpat-abcdefghijklmnopqrst",
            "AIzaabcdefghijklmnopqrstuvwxyz012345678",
            "-----BEGIN EC PRIVATE KEY-----",
            "basic",
            "https://example.com/a@b",
            "sk-1",
        ];
        let cases = near.iter().map(|s| s.to_string()).chain(near.iter().map(|s| format!("é {s}!"))).chain(near.iter().map(|s| format!("x{s}")));
        for s in cases {
            assert_eq!(has_shape(&s), shapes().is_match(&s), "{s}");
        }
        proptest::proptest!(|(pieces in proptest::collection::vec(proptest::sample::select(near.to_vec()), 0..4), glue in "[a-zA-Z0-9 :/@=_.-]{0,12}")| {
            let s = pieces.join(&glue);
            proptest::prop_assert_eq!(has_shape(&s), shapes().is_match(&s), "{}", s);
        });
    }

    #[test]
    fn text_in_any_script_is_redacted_the_same() {
        for (text, kept) in [
            ("Schlüssel für die Übergabe: Bearer s3cr3t-bearer-value-123 — danke", "Schlüssel für die Übergabe: Bearer [REDACTED] — danke"),
            ("密码 password=pw-in-a-dsn-77 已更新", "密码 password=[REDACTED] 已更新"),
            ("ключ ghp_abcdefghijklmnopqrstuvwxyz0123456789 здесь", "ключ [REDACTED] здесь"),
            ("ütoken abcdefgh12345678", "ütoken [REDACTED]"),
        ] {
            assert_eq!(redact_str(text), kept, "{text}");
        }
        assert_eq!(redact_str("Grüße aus Köln, ça va? 日本語のテキスト"), "Grüße aus Köln, ça va? 日本語のテキスト");
    }

    #[test]
    fn text_taken_as_is_is_text_redaction_would_not_change() {
        let cases = [
            r#"{"path": "/work/repo/src/main.rs", "files": ["a", "b"], "n": 3, "nested": {"env": "staging"}}"#,
            r#"{"note": "Grüße aus Köln"}"#,
            r#"{"api_key": "k"}"#,
            r#"{"headers": [{"name": "Authorization", "value": "x"}]}"#,
            r#"{"cmd": "curl -H 'Authorization: Bearer s3cr3t-bearer-value-123'"}"#,
            r#"{"url": "https://deploy:hunter2@git.example.com/r.git"}"#,
            r#"{"k": "sk-proj-abcdefghijklmnop1234567890"}"#,
            r#"{"k": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}"#,
            r#"{"k": "Bearer\u0020s3cr3t-bearer-value-123"}"#,
            "{\"a\":\n \"b\"}",
            r#"{"short": "pwd=x", "AKIA": "AKIAABCDEFGHIJKLMNOP"}"#,
            // A shape across two strings' text, in neither: each string is then searched alone.
            r#"{"u":"x://","v":":a@"}"#,
        ];
        let mut taken = 0;
        for raw in cases {
            let v: Value = serde_json::from_str(raw).unwrap();
            if untouched(&Tree::borrowed(&v), raw) {
                taken += 1;
                assert_eq!(redact(&v), v, "{raw} was taken as is, but redaction changes it");
            }
        }
        assert_eq!(taken, 3, "the three harmless cases are taken as is");
        let mut deep = json!("leaf");
        for _ in 0..100 {
            deep = json!({"a": deep});
        }
        assert!(!untouched(&Tree::borrowed(&deep), &deep.to_string()), "past the depth limit, redaction cuts");
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
