//! A call's arguments as a tree that borrows its strings from the body they were read from.
//!
//! Every `tools/call` is decided on its arguments, digested and recorded. Read into a
//! `serde_json::Value`, each key and each string is a copy of its own and each object a
//! `BTreeMap`: about thirty allocations for a 1 KiB call, a tenth of the sidecar's instructions
//! per call (docs/performance-history.md). Here a string without escapes stays a slice of the
//! body, and an object is one vector of members in the order a `serde_json::Map` keeps (by
//! key, bytewise), so what is written from a tree is what was written from a `Value`: the
//! digest (docs/design.md §3.5), the arguments forwarded without a justification.

use crate::mcp::scan::{Scanner, SyntaxError};
use serde_json::{Number, Value};
use std::borrow::Cow;

/// A JSON value whose strings borrow from the text it was read from where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Tree<'a>>),
    Object(Members<'a>),
}

/// An object's members, sorted by key (bytewise, as a `serde_json::Map` iterates), each key once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members<'a>(Vec<(Cow<'a, str>, Tree<'a>)>);

/// Why a text is not one tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    /// serde_json would keep the last of two, other parsers the first: refused.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
}

impl<'a> Members<'a> {
    /// The members of `entries`, in any order; a key twice is refused.
    pub fn new(mut entries: Vec<(Cow<'a, str>, Tree<'a>)>) -> Result<Members<'a>, ReadError> {
        // A stable sort of the usual few, mostly sorted members: near a single pass.
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        match entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            Some(pair) => Err(ReadError::DuplicateKey(pair[0].0.clone().into_owned())),
            None => Ok(Members(entries)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Tree<'a>> {
        // Most objects are a handful of members: their lengths tell most keys apart before a
        // byte is compared, where a binary search compares bytes at each step.
        if self.0.len() <= 8 {
            return self.0.iter().find(|(k, _)| k.len() == key.len() && k.as_ref() == key).map(|(_, v)| v);
        }
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Takes the member `key` out.
    pub fn remove(&mut self, key: &str) -> Option<Tree<'a>> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Tree<'a>)> + Clone {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The members in key order, as they are kept.
    pub fn entries(&self) -> &[(Cow<'a, str>, Tree<'a>)] {
        &self.0
    }
}

impl<'a> Tree<'a> {
    /// `value` as a tree that borrows its strings.
    pub fn borrowed(value: &'a Value) -> Tree<'a> {
        match value {
            Value::Null => Tree::Null,
            Value::Bool(b) => Tree::Bool(*b),
            Value::Number(n) => Tree::Number(n.clone()),
            Value::String(s) => Tree::String(Cow::Borrowed(s)),
            Value::Array(items) => Tree::Array(items.iter().map(Tree::borrowed).collect()),
            Value::Object(map) => {
                // A map's keys are unique, and in order already unless serde_json's
                // `preserve_order` is ever turned on: sorted, which costs a pass when they are.
                let mut members: Vec<_> = map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Tree::borrowed(v))).collect();
                members.sort_by(|(a, _), (b, _)| a.cmp(b));
                Tree::Object(Members(members))
            }
        }
    }

    /// The tree as a `serde_json::Value`, for what keeps or edits one (an approval request).
    pub fn to_value(&self) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(*b),
            Tree::Number(n) => Value::Number(n.clone()),
            Tree::String(s) => Value::String(s.as_ref().to_owned()),
            Tree::Array(items) => Value::Array(items.iter().map(Tree::to_value).collect()),
            Tree::Object(members) => Value::Object(members.iter().map(|(k, v)| (k.to_owned(), v.to_value())).collect()),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads one value whole (the reader before it), as serde_json reads it, but refusing a key
/// twice in an object.
pub fn read<'a>(scan: &mut Scanner<'a>) -> Result<Tree<'a>, ReadError> {
    match scan.peek()? {
        b'{' => {
            let mut entries = Vec::new();
            scan.object(|s, key| {
                entries.push((key, read(s)?));
                Ok::<(), ReadError>(())
            })?;
            Ok(Tree::Object(Members::new(entries)?))
        }
        b'[' => {
            let mut items = Vec::new();
            scan.array(|s| read(s).map(|v| items.push(v)))?;
            Ok(Tree::Array(items))
        }
        b'"' => Ok(Tree::String(scan.string()?)),
        _ => Ok(match scan.scalar()? {
            Value::Bool(b) => Tree::Bool(b),
            Value::Number(n) => Tree::Number(n),
            Value::String(s) => Tree::String(Cow::Owned(s)),
            Value::Null => Tree::Null,
            // `scalar` reads no array or object: both are read above.
            Value::Array(_) | Value::Object(_) => return Err(ReadError::Syntax(scan.error("expected a scalar"))),
        }),
    }
}

/// The whole of `text` as one tree.
pub fn parse(text: &str) -> Result<Tree<'_>, ReadError> {
    let mut scan = Scanner::new(text);
    let tree = read(&mut scan)?;
    scan.end()?;
    Ok(tree)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_reads_what_serde_json_reads_in_the_same_text() {
        for text in [
            r#"{"b":1,"a":{"y":[1,2.5,-0,1e300],"x":"s\n\u00e9\"q"},"ü":null,"A":true,"":false}"#,
            r#"[{"k":"v"},[],{},"",18446744073709551615,-9223372036854775808,0.1]"#,
            r#""\ud83d\ude00 and \\ and \/""#,
            "  3  ",
            "[1e400]",
        ] {
            let value: Result<Value, _> = serde_json::from_str(text);
            let tree = parse(text);
            let Ok(value) = value else {
                assert!(tree.is_err(), "{text}: serde refuses it, so must the tree");
                continue;
            };
            let tree = tree.unwrap();
            assert_eq!(tree.to_value(), value, "{text}");
            assert_eq!(Tree::borrowed(&value), tree, "{text}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_members_are_found_by_key() {
        let text = r#"{"path":"/etc/passwd","esc":"a\tb","files":["x","y"],"n":3}"#;
        let Tree::Object(members) = parse(text).unwrap() else { panic!("an object") };
        assert!(matches!(members.get("path"), Some(Tree::String(Cow::Borrowed("/etc/passwd")))));
        assert!(matches!(members.get("esc"), Some(Tree::String(Cow::Owned(s))) if s == "a\tb"));
        assert_eq!(members.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["esc", "files", "n", "path"]);
        assert!(members.contains_key("n") && !members.contains_key("m") && members.get("zz").is_none());
        let many: String = (0..40).rev().map(|i| format!("\"k{i}\":{i},")).collect();
        let text = format!("{{{many}\"k\":-1}}");
        let Tree::Object(members) = parse(&text).unwrap() else { panic!("an object") };
        for i in 0..40 {
            assert_eq!(members.get(&format!("k{i}")), Some(&Tree::Number(i.into())), "k{i} of many");
        }
        assert_eq!(members.get("k"), Some(&Tree::Number((-1).into())));
        assert_eq!(members.get("k40"), None);
    }

    #[test]
    fn a_key_twice_is_refused_wherever_it_is() {
        for text in [r#"{"a":1,"a":2}"#, r#"{"x":[{"k":1,"b":0,"k":2}]}"#, r#"{"n\u0061me":1,"name":2}"#] {
            assert!(matches!(parse(text), Err(ReadError::DuplicateKey(_))), "{text}");
        }
        assert!(matches!(parse("[1,"), Err(ReadError::Syntax(_))));
        assert!(matches!(parse(&"[".repeat(200)), Err(ReadError::Syntax(_))), "nesting is bounded as serde_json bounds it");
    }

    #[test]
    fn removing_a_member_keeps_the_rest_in_order() {
        let mut tree = parse(r#"{"c":3,"justification":"why","a":1}"#).unwrap();
        let Tree::Object(members) = &mut tree else { panic!("an object") };
        assert_eq!(members.remove("justification").and_then(|t| t.as_str().map(str::to_owned)).as_deref(), Some("why"));
        assert_eq!(members.remove("justification"), None);
        assert_eq!(tree.to_value().to_string(), r#"{"a":1,"c":3}"#);
    }
}
