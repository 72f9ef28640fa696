//! The parsers a hostile agent or server feeds (the JSON-RPC envelope, the ambiguity check, the
//! SSE stream), under bounded property runs: any bytes give an answer or an error, never a panic,
//! and the two readings of a body agree. The same properties are cargo-fuzz targets in
//! `core/fuzz/` for longer runs.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tollgate_core::{mcp::jsonrpc, mcp::sse, mcp::strict};

/// Bodies that look like JSON-RPC often enough to reach the interesting paths.
fn rpc_like() -> impl Strategy<Value = Vec<u8>> {
    let key =
        prop_oneof![Just("method"), Just("Method"), Just("params"), Just("id"), Just("name"), Just("Name"), Just("arguments"), Just("jsonrpc"), Just("x")];
    let value = prop_oneof![Just("\"tools/call\"".to_owned()), Just("1".to_owned()), Just("null".to_owned()), "\"[a-z/]{0,8}\"".prop_map(|s| s)];
    let member = (key, value).prop_map(|(k, v)| format!("\"{k}\":{v}"));
    let object = prop::collection::vec(member, 0..6).prop_map(|m| format!("{{{}}}", m.join(",")));
    let nested = (object.clone(), object.clone()).prop_map(|(a, b)| a.replacen('}', &format!(",\"params\":{b}}}"), 1).replacen("{,", "{", 1));
    prop_oneof![object.prop_map(String::into_bytes), nested.prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..512),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelope_and_ambiguity_check_never_panic_and_agree(body in rpc_like()) {
        let strict = strict::check(&body);
        let parsed = jsonrpc::parse(&body);
        // What the strict check calls valid JSON, the envelope parser reads too.
        if let (Ok(()), Err(e)) = (&strict, &parsed) {
            prop_assert!(matches!(e, jsonrpc::ParseError::EmptyBatch) || e.to_string().contains("invalid type"), "{e}");
        }
        // An accepted single message has one reading: serde's map and the envelope agree on it.
        if let (Ok(()), Ok(jsonrpc::Incoming::Single(env))) = (&strict, &parsed)
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            prop_assert_eq!(map.get("method").and_then(|m| m.as_str()), env.method());
        }
    }

    #[test]
    fn sse_parser_never_panics_on_any_chunks(chunks in prop::collection::vec(prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'd'), Just(b':'), any::<u8>()], 0..64), 0..16)) {
        let mut p = sse::Parser::default();
        for c in &chunks {
            if p.push_bytes(c).is_err() {
                return Ok(());
            }
        }
    }
}

#[test]
fn sse_events_split_anywhere_parse_the_same() {
    let text = "id: 1\nevent: message\ndata: {\"a\":1}\n\ndata: x\r\n\r\n: c\n\ndata: y\r\rdata: z\n\n";
    let whole: Vec<String> = sse::Parser::default().push(text).unwrap().into_iter().map(|e| e.data).collect();
    for cut in 0..text.len() {
        let mut p = sse::Parser::default();
        let mut got: Vec<String> = p.push(&text[..cut]).unwrap().into_iter().map(|e| e.data).collect();
        got.extend(p.push(&text[cut..]).unwrap().into_iter().map(|e| e.data));
        assert_eq!(got, whole, "cut at {cut}");
    }
}

/// Spans name decisions and outcomes as records do: the names are the serialized ones.
#[test]
fn span_names_of_decisions_and_outcomes_are_their_record_names() {
    use tollgate_core::audit::{AuditDecision, Outcome, RecordKind};
    for d in AuditDecision::ALL {
        assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
    }
    for k in [RecordKind::Decision, RecordKind::Outcome] {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
    for o in Outcome::ALL {
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
}
