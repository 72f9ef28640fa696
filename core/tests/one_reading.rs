//! The strict check reads a body once, with a scanner of our own; serde_json reads it in the
//! rest of the firewall and in the tools an upstream may run. Held to serde here, on bodies built
//! to reach the edges (escapes, surrogates, odd numbers, case variants, duplicates, nesting, cut
//! and damaged text): what the check accepts serde reads, and as the same message; what serde
//! cannot read the check refuses; and a refused ambiguity is one the rules name.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tollgate_core::mcp::{jsonrpc, strict};

/// Any JSON value, every object's keys kept in order, repeats included: what a parser that keeps
/// the first of two keys sees as much as one that keeps the last.
#[derive(Debug)]
enum Node {
    Scalar,
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Node>()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

const ENVELOPE: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS: &[&str] =
    &["name", "arguments", "_meta", "uri", "cursor", "ref", "argument", "level", "task", "protocolVersion", "taskId", "inputResponses", "requestState"];

/// The rules, as plainly as they can be said: a key twice in an object anywhere; at a message
/// (the body, or a batch's element) and in its params, a key that folds to a field's name.
fn ambiguous(node: &Node, fields: &[&str]) -> bool {
    let fold = |s: &str| {
        s.chars()
            .map(|c| {
                if c == '\u{17F}' {
                    's'
                } else if c == '\u{212A}' {
                    'k'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect::<String>()
    };
    match node {
        Node::Scalar => false,
        Node::Array(items) => items.iter().any(|i| ambiguous(i, &[])),
        Node::Object(members) => members.iter().enumerate().any(|(i, (key, value))| {
            let repeated = members[..i].iter().any(|(k, _)| k == key);
            let variant = !fields.contains(&key.as_str()) && fields.iter().any(|f| fold(f) == fold(key));
            let child = if fields == ENVELOPE && key == "params" { PARAMS } else { &[][..] };
            repeated || variant || ambiguous(value, child)
        }),
    }
}

fn rules_refuse(body: &[u8]) -> Option<bool> {
    let node: Node = serde_json::from_slice(body).ok()?;
    Some(match &node {
        Node::Array(items) => items.iter().any(|i| ambiguous(i, ENVELOPE)),
        other => ambiguous(other, ENVELOPE),
    })
}

fn pick(texts: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(texts).prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "0",
            "-0",
            "7",
            "-3",
            "1.5",
            "-2.5e-3",
            "1E2",
            "1e400",
            "-1e400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678",
            "1234567890123456789",
            "01",
            "1.",
            "-",
            ".5",
            "true",
            "false",
            "null",
            "nul"
        ]),
        pick(&[
            r#""x""#,
            r#""tools/call""#,
            r#""tools\/call""#,
            r#""\u00e9é""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""a\"b\\""#,
            "\"\u{1}\"",
            r#""\q""#,
            r#""a long string of more than eight bytes \n with an escape""#,
            r#""deploy""#
        ]),
        "\"[a-z/ ]{0,20}\"",
    ]
}

fn key() -> impl Strategy<Value = String> {
    pick(&[
        "method",
        "Method",
        "params",
        "PARAMS",
        "id",
        "jsonrpc",
        "name",
        "Name",
        "n\\u0061me",
        "arguments",
        "argumentſ",
        "_meta",
        "progressToken",
        "traceparent",
        "\u{212A}",
        "k",
        "x",
        "y",
    ])
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", "", " ", "\n\t", "\r "][..])
}

fn json() -> impl Strategy<Value = String> {
    scalar().prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..5), ws()).prop_map(|(items, w)| format!("[{w}{}]", items.join(&format!(",{w}")))),
            (prop::collection::vec((key(), inner), 0..6), ws())
                .prop_map(|(members, w)| format!("{{{}}}", members.iter().map(|(k, v)| format!("{w}\"{k}\"{w}:{w}{v}")).collect::<Vec<_>>().join(","))),
        ]
    })
}

/// A `tools/call` with each field maybe left out, given twice, or odd.
fn call() -> impl Strategy<Value = String> {
    let field = |k: &'static str, v: BoxedStrategy<String>| prop::option::weighted(0.85, v.prop_map(move |v| format!("\"{k}\":{v}")));
    let meta = prop_oneof![Just(r#"{"progressToken":"t"}"#.to_owned()), Just(r#"{"traceparent":5}"#.to_owned()), Just("7".to_owned()), json()].boxed();
    let params = (field("name", prop_oneof![Just(r#""deploy""#.to_owned()), scalar()].boxed()), field("arguments", json().boxed()), field("_meta", meta))
        .prop_map(|(n, a, m)| format!("{{{}}}", [n, a, m].into_iter().flatten().collect::<Vec<_>>().join(",")));
    let id = prop_oneof![Just("1".to_owned()), Just(r#""a""#.to_owned()), Just("null".to_owned()), scalar()].boxed();
    let method = prop_oneof![Just(r#""tools/call""#.to_owned()), scalar()].boxed();
    (
        field("jsonrpc", Just(r#""2.0""#.to_owned()).boxed()),
        field("id", id),
        field("method", method),
        field("params", prop_oneof![params, json()].boxed()),
        key(),
        json(),
    )
        .prop_map(|(j, i, m, p, k, extra)| {
            let mut members: Vec<String> = [j, i, m, p].into_iter().flatten().collect();
            members.push(format!("\"{k}\":{extra}"));
            format!("{{{}}}", members.join(","))
        })
}

/// A body, now and then cut short or with a byte put in.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![3 => call(), 1 => json(), 1 => prop::collection::vec(call(), 1..3).prop_map(|c| format!("[{}]", c.join(",")))];
    (text, 0..10u8, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(text, damage, at, byte)| {
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len() + 1);
        match damage {
            0 => bytes.truncate(at),
            1 => bytes.insert(at, byte),
            _ => {}
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_one_reading_agrees_with_serde(body in body()) {
        let checked = strict::read(&body);
        match (&checked, rules_refuse(&body)) {
            (Ok(_), None) => prop_assert!(false, "accepted what serde cannot read"),
            (Ok(_), Some(true)) => prop_assert!(false, "accepted what the rules refuse"),
            (Err(strict::Ambiguity::Json(e)), Some(_)) => prop_assert!(false, "refused as not JSON what serde reads: {e}"),
            (Err(strict::Ambiguity::Json(_)), None) | (Ok(_), Some(false)) => {}
            // Found before the text went wrong, or as the rules say.
            (Err(e), refused) => prop_assert!(refused != Some(false), "refused what the rules accept: {e}"),
        }
        let Ok(checked) = checked else { return Ok(()) };
        let parsed = jsonrpc::parse(&body);
        let Some(message) = checked.message else {
            prop_assert!(!matches!(parsed, Ok(jsonrpc::Incoming::Single(_))), "a message the check did not keep");
            return Ok(());
        };
        let Ok(jsonrpc::Incoming::Single(env)) = parsed else { return Err(TestCaseError::fail("kept a message serde does not read as one")) };
        prop_assert_eq!(message.envelope.id.map(|i| i.get()), env.id.map(|i| i.get()));
        prop_assert_eq!(message.envelope.method(), env.method());
        prop_assert_eq!(message.envelope.params, env.params);
        let whole: Value = serde_json::from_slice(&body).unwrap();
        let arguments = whole.get("params").filter(|p| p.is_object()).and_then(|p| p.get("arguments"));
        let read = message.call.arguments.as_ref().map(|t| t.to_value());
        prop_assert_eq!(read.as_ref(), arguments);
        let by_serde = jsonrpc::tool_call_params(env.params);
        if let Some(call) = &message.call.params {
            prop_assert_eq!(format!("{call:?}"), format!("{:?}", by_serde.unwrap()));
        } else if let Some(params) = whole.get("params").filter(|p| p.is_object()) {
            // Left to serde only where serde refuses it.
            prop_assert!(by_serde.is_err(), "{params}");
        }
    }
}
