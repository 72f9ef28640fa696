//! The canonical argument digest: `sha256:` over a canonical JSON form, so the same arguments give
//! the same digest whatever their key order or whitespace.

use crate::json_text::write_str;
use crate::json_tree::Tree;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` canonically: object keys sorted by their UTF-16 code units (as RFC 8785 does),
/// no insignificant whitespace, strings escaped as serde_json escapes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    value.write_canonical(&mut out);
    // Only whole strings and serde_json's numbers were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// What a canonical form is written from, in place: a `serde_json::Value` (the audit chain's
/// records, a tool's schema) or a call's arguments read as a tree (json_tree.rs).
trait Canonical {
    fn write_canonical(&self, out: &mut Vec<u8>);
}

impl Canonical for Value {
    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Value::Object(map) => write_object(map.iter().map(|(k, v)| (k.as_str(), v)), out),
            Value::Array(items) => write_array(items, out),
            Value::String(s) => write_str(out, s),
            // serde_json's own writing of a number, `true`, `false` or `null`, into a Vec: cannot fail.
            scalar => {
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
}

impl Canonical for Tree<'_> {
    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Object(members) => write_object(members.iter(), out),
            Tree::Array(items) => write_array(items, out),
            Tree::String(s) => write_str(out, s),
            Tree::Null => out.extend_from_slice(b"null"),
            Tree::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // serde_json's own writing of a number, into a Vec: cannot fail.
            Tree::Number(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
    }
}

/// Both a map and a tree keep their keys in byte order, which for ASCII keys is the order
/// wanted: the usual object is written as it stands, without a sorted copy of its entries.
fn write_object<'a, T: Canonical + 'a>(entries: impl Iterator<Item = (&'a str, &'a T)> + Clone, out: &mut Vec<u8>) {
    if in_utf16_order(entries.clone().map(|(k, _)| k)) {
        return write_members(entries, out);
    }
    let mut sorted: Vec<(&str, &T)> = entries.collect();
    sorted.sort_by(|(a, _), (b, _)| utf16_cmp(a, b));
    write_members(sorted.into_iter(), out)
}

fn write_members<'a, T: Canonical + 'a>(entries: impl Iterator<Item = (&'a str, &'a T)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        v.write_canonical(out);
    }
    out.push(b'}');
}

fn write_array<T: Canonical>(items: &[T], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_canonical(out);
    }
    out.push(b']');
}

/// RFC 8785's key order. ASCII keys (nearly all) compare the same bytewise as by UTF-16 units.
fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() { a.as_bytes().cmp(b.as_bytes()) } else { a.encode_utf16().cmp(b.encode_utf16()) }
}

/// Whether `keys` already stand in RFC 8785's order: all ASCII and ascending.
fn in_utf16_order<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    let Some(mut previous) = keys.next() else { return true };
    if !previous.is_ascii() {
        return false;
    }
    keys.all(|key| {
        let ordered = key.is_ascii() && previous.as_bytes() < key.as_bytes();
        previous = key;
        ordered
    })
}

/// `sha256:<hex>` of the canonical form of `value`.
pub fn arguments_digest(value: &Value) -> String {
    digest_of(value)
}

/// `sha256:<hex>` of the canonical form of a call's arguments, read as a tree.
pub fn tree_digest(tree: &Tree<'_>) -> String {
    digest_of(tree)
}

/// Written out whole and hashed at once: fed to the hash piece by piece as written, the many
/// small pieces cost more than the copy.
fn digest_of(value: &impl Canonical) -> String {
    let mut out = Vec::with_capacity(256);
    value.write_canonical(&mut out);
    crate::sha256_text::sha256_text(&Sha256::digest(&out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stable_under_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str("{\"a\":{\"x\":\"s\",\n \"y\":[1,2]},\"b\":1}").unwrap();
        assert_eq!(arguments_digest(&a), arguments_digest(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn a_value_and_a_tree_write_the_same_canonical_bytes() {
        let text = r#"{"😀":1,"b":-0,"a":18446744073709551615,"é":"x\n\"","":[1e300,0.5,-3,true,null],"\ue000":{"z":{},"y":[]}}"#;
        let want = "{\"\":[1e+300,0.5,-3,true,null],\"a\":18446744073709551615,\"b\":-0.0,\"é\":\"x\\n\\\"\",\"😀\":1,\"\u{e000}\":{\"y\":[],\"z\":{}}}";
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(canonical_json(&value), want);
        let tree = crate::json_tree::parse(text).unwrap();
        let mut written = Vec::new();
        tree.write_canonical(&mut written);
        assert_eq!(String::from_utf8(written).unwrap(), want);
        assert_eq!(tree_digest(&tree), arguments_digest(&value));
    }

    #[test]
    fn different_arguments_differ() {
        let cases = [
            (json!({"a": 1}), json!({"a": 2})),
            (json!({"a": 1}), json!({"a": "1"})),
            (json!([1, 2]), json!([2, 1])),
            (json!({"a": null}), json!({})),
            (json!({"ü": 1}), json!({"u": 1})),
        ];
        for (x, y) in cases {
            assert_ne!(arguments_digest(&x), arguments_digest(&y), "{x} vs {y}");
        }
    }

    #[test]
    fn digest_format() {
        let d = arguments_digest(&json!({}));
        assert!(d.starts_with("sha256:"));
        assert_eq!(d.len(), "sha256:".len() + 64);
        // sha256("{}")
        assert_eq!(d, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }

    #[test]
    fn objects_in_order_and_out_of_it_write_the_same() {
        let mut map = serde_json::Map::new();
        for k in ["b", "a", "c", "ab"] {
            map.insert(k.to_owned(), json!(k));
        }
        assert_eq!(canonical_json(&Value::Object(map)), r#"{"a":"a","ab":"ab","b":"b","c":"c"}"#);
        assert!(in_utf16_order(["a", "ab", "b"].into_iter()));
        assert!(!in_utf16_order(["b", "a"].into_iter()));
        assert!(!in_utf16_order(["a", "\u{e000}"].into_iter()), "non-ASCII keys are sorted by UTF-16 units");
    }

    #[test]
    fn keys_sort_by_utf16_like_rfc8785() {
        // U+E000 sorts before U+1F600 in UTF-16 (the surrogate pair starts with 0xD83D < 0xE000? no:
        // 0xD83D < 0xE000), so the emoji comes first, unlike byte order.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2});
        assert_eq!(canonical_json(&v), "{\"\u{1f600}\":2,\"\u{e000}\":1}");
    }
}
