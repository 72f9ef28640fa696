//! What an audit record may be before it is stored (DESIGN §3.5): no character a database
//! refuses (PostgreSQL stores no NUL) or a terminal obeys, a bounded size (one record of
//! megabytes of arguments must not hold up the records after it), and indexed fields that say
//! what was checked, not what a sender claims. Pure, so the sidecar and the gateway agree.

use serde_json::{Map, Value, json};

/// Largest record stored whole; a larger one is cut down, saying so.
pub const MAX_RECORD_BYTES: usize = 64 << 10;
/// Longest string kept whole in a record that had to be cut down.
const KEPT_STRING: usize = 1024;
/// Fields that say what a record is about: kept when the rest of a record is cut. Among them
/// what ties a call's records together (`correlation_id`, `arguments_digest`, the approval
/// request): an outcome record names its decision record by them, so a decision record cut down
/// must keep them.
const IDENTITY: &[&str] =
    &["kind", "time", "agent", "server", "tool", "decision", "outcome", "correlation_id", "arguments_digest", "approval_request", "status", "policy", "rule"];
/// Longest tool or decision name indexed.
const MAX_INDEXED: usize = 256;
/// Decisions a record may be indexed under.
pub const DECISIONS: &[&str] = &["allow", "deny", "require_approval", "error"];

/// A character the store or a reader's terminal would act on instead of showing.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\t')) || c == '\u{2028}' || c == '\u{2029}'
}

fn clean(s: &str) -> Option<String> {
    // Printable ASCII, newline and tab (nearly every string) hold nothing to replace: one pass
    // over bytes, not a char decode per character.
    if s.bytes().all(|b| matches!(b, b' '..=b'~' | b'\n' | b'\t')) {
        return None;
    }
    s.contains(unsafe_char).then(|| s.chars().map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c }).collect())
}

/// Whether `s` holds nothing [`sanitize`] would replace.
pub fn is_clean(s: &str) -> bool {
    clean(s).is_none()
}

/// Replaces every control character (but newline and tab) in every string and key of `v` by
/// U+FFFD; whether anything changed.
pub fn sanitize(v: &mut Value) -> bool {
    match v {
        Value::String(s) => clean(s).map(|c| *s = c).is_some(),
        Value::Array(a) => a.iter_mut().fold(false, |changed, x| sanitize(x) | changed),
        Value::Object(o) => {
            let mut changed = false;
            let dirty: Vec<String> = o.keys().filter(|k| k.contains(unsafe_char)).cloned().collect();
            for k in dirty {
                if let (Some(value), Some(key)) = (o.remove(&k), clean(&k)) {
                    o.insert(key, value);
                    changed = true;
                }
            }
            o.values_mut().fold(changed, |changed, x| sanitize(x) | changed)
        }
        _ => false,
    }
}

fn shorten_strings(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > KEPT_STRING => {
            let cut = s.floor_char_boundary(KEPT_STRING);
            *s = format!("{}… ({} bytes, cut)", &s[..cut], s.len());
        }
        Value::Array(a) => a.iter_mut().for_each(shorten_strings),
        Value::Object(o) => o.values_mut().for_each(shorten_strings),
        _ => {}
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Cuts `record` down to at most `max` bytes, if it is larger: long strings first, then every
/// field but those naming what the record is about, then those too but `kind` and `time`. A cut
/// record says so (`truncated.originalBytes`). The size it had, when it was cut.
pub fn bound(record: &mut Value, max: usize) -> Option<usize> {
    let original = size(record);
    if original <= max {
        return None;
    }
    shorten_strings(record);
    let Value::Object(o) = record else {
        *record = json!({"truncated": {"originalBytes": original}});
        return Some(original);
    };
    o.insert("truncated".into(), json!({"originalBytes": original}));
    for keep in [IDENTITY, &["kind", "time", "truncated"][..]] {
        if size(&Value::Object(o.clone())) <= max {
            break;
        }
        let kept: Map<String, Value> = o.iter().filter(|(k, _)| keep.contains(&k.as_str()) || *k == "truncated").map(|(k, v)| (k.clone(), v.clone())).collect();
        *o = kept;
    }
    if size(&Value::Object(o.clone())) > max {
        *o = Map::from_iter([("truncated".to_owned(), json!({"originalBytes": original}))]);
    }
    Some(original)
}

/// The text an indexed column holds for a field: bounded, and empty when not a string.
pub fn indexed(v: &Value) -> String {
    indexed_str(v.as_str().unwrap_or_default())
}

/// [`indexed`] of a string.
pub fn indexed_str(s: &str) -> String {
    s[..s.floor_char_boundary(MAX_INDEXED)].to_owned()
}

/// The decision a record is indexed under: one of [`DECISIONS`], or `other`.
pub fn indexed_decision(v: &Value) -> &'static str {
    indexed_decision_str(v.as_str().unwrap_or_default())
}

/// [`indexed_decision`] of a string.
pub fn indexed_decision_str(d: &str) -> &'static str {
    DECISIONS.iter().copied().find(|x| *x == d).unwrap_or("other")
}

/// What a record's `shadow` is indexed as: the object that would have decided otherwise and its
/// would-be decision, or `("", "")`. Only what the writer may speak for is indexed: a sidecar
/// (`shipped`) of `namespace` for its namespace's `ToolPolicy`s and the `ClusterToolPolicy`s that
/// govern it, the gateway for `Budget`s. A hostile sidecar cannot count calls against another
/// namespace's policies, nor any budget.
pub fn indexed_shadow(record: &Value, namespace: &str, shipped: bool) -> (String, &'static str) {
    let shadow = &record["shadow"];
    indexed_shadow_of(shadow["would"].as_str(), shadow["policy"].as_str().unwrap_or_default(), namespace, shipped)
}

/// [`indexed_shadow`] of a shadow's would-be decision and the object that says it.
pub fn indexed_shadow_of(would: Option<&str>, of: &str, namespace: &str, shipped: bool) -> (String, &'static str) {
    let would = match would {
        Some(w @ ("allow" | "deny" | "require_approval")) => DECISIONS.iter().copied().find(|d| *d == w).unwrap_or("other"),
        _ => return (String::new(), ""),
    };
    let speaks_for = match of.split_once(' ') {
        Some(("ToolPolicy", rest)) => shipped && rest.split_once('/').is_some_and(|(ns, name)| ns == namespace && !name.is_empty()),
        Some(("ClusterToolPolicy", name)) => shipped && !name.is_empty() && !name.contains('/'),
        Some(("Budget", rest)) => !shipped && rest.split_once('/').is_some_and(|(ns, name)| ns == namespace && !name.is_empty()),
        _ => false,
    };
    if speaks_for && of.len() <= 600 { (of.to_owned(), would) } else { (String::new(), "") }
}

/// Makes a shipped record's `agent` the identity its sender was verified as: its namespace and
/// service account, and a name only if it is one of that account's `agents`. A record that
/// claimed another agent keeps the claim beside it (`agent.claimed`), and is indexed under no
/// agent, so one agent's sidecar cannot file records under another's name.
pub fn attribute(record: &mut Value, namespace: &str, service_account: &str, agents: &[String]) {
    let claimed = record["agent"]["name"].as_str().unwrap_or_default().to_owned();
    let known = agents.contains(&claimed);
    let mut agent = json!({"namespace": namespace, "serviceAccount": service_account, "name": if known { claimed.clone() } else { String::new() }});
    if let Some(pod) = record["agent"].get("pod").filter(|p| p.is_string()) {
        agent["pod"] = pod.clone();
    }
    if !known {
        agent["claimed"] = json!(claimed);
    }
    if let Some(o) = record.as_object_mut() {
        o.insert("agent".into(), agent);
    }
}

/// The kind of record that stands for records a sidecar could not ship.
pub const GAP_KIND: &str = "audit-gap";

/// A record standing for `lost` records of `agent` that were never shipped (`reason`: the queue
/// `overflowed` while the store was away, or the store `refused` one): the trail says where it
/// has a hole, and the agent's status says so.
pub fn gap(agent: &str, lost: u64, reason: &str, time: &str) -> Value {
    json!({"kind": GAP_KIND, "time": time, "agent": {"name": agent}, "lost": lost, "reason": reason})
}

/// The most records one gap record stands for (a sidecar's queue holds far fewer).
const MAX_LOST: u64 = 1 << 31;

/// What a stored record says is missing from the trail: 1 when it was cut to its bound, and the
/// number of records it stands for that were lost (an [`GAP_KIND`] record's `lost`).
pub fn incompleteness(record: &Value) -> (i64, i64) {
    let cut = i64::from(record.get("truncated").is_some());
    let lost = match record["kind"].as_str() {
        // Bounded, so no sender's claim overflows a sum of them.
        Some(GAP_KIND) => record["lost"].as_u64().map_or(0, |n| i64::try_from(n.min(MAX_LOST)).unwrap_or(0)),
        _ => 0,
    };
    (cut, lost)
}

/// The `AuditComplete` condition of an agent, from its records cut and lost `within` (a phrase:
/// "in the last 24 hours"): status, reason and message.
pub fn completeness(cut: i64, lost: i64, within: &str) -> (bool, &'static str, String) {
    let kib = MAX_RECORD_BYTES >> 10;
    match (cut, lost) {
        (0, 0) => (true, "Complete", format!("no audit record of this agent was cut or lost {within}")),
        (cut, 0) => {
            (false, "RecordsCut", format!("{cut} audit records of this agent were stored cut to {kib} KiB {within} (their whole text is in the sidecar's log)"))
        }
        (0, lost) => (false, "RecordsLost", format!("{lost} audit records of this agent never reached the store {within} (see the sidecar's log)")),
        (cut, lost) => (
            false,
            "RecordsLost",
            format!("{lost} audit records of this agent never reached the store and {cut} were stored cut {within} (see the sidecar's log)"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_control_character_is_stored() {
        let mut v = json!({"tool": "drop\u{0}table", "args": ["\u{1b}[2J", {"k\u{0}": "a\nb\tc"}], "n": 5});
        assert!(sanitize(&mut v));
        assert_eq!(v, json!({"tool": "drop\u{FFFD}table", "args": ["\u{FFFD}[2J", {"k\u{FFFD}": "a\nb\tc"}], "n": 5}));
        assert!(!v.to_string().contains("\\u0000"));
        let mut fine = json!({"tool": "read", "x": "ünïcødé\n"});
        assert!(!sanitize(&mut fine));
        // Past printable ASCII, each kind the terminal or store would act on: DEL, a C1 control,
        // a line separator.
        let mut edges = json!(["a\u{7f}", "b\u{85}", "c\u{2028}", "~ \t"]);
        assert!(sanitize(&mut edges));
        assert_eq!(edges, json!(["a\u{FFFD}", "b\u{FFFD}", "c\u{FFFD}", "~ \t"]));
    }

    #[test]
    fn a_large_record_is_cut_saying_so_and_keeps_what_it_is_about() {
        let big = "x".repeat(3 << 20);
        let mut r = json!({"kind": "tool_call", "time": "t", "agent": {"name": "coder"}, "tool": "write", "decision": "allow", "arguments": {"content": big}});
        assert!(bound(&mut r, MAX_RECORD_BYTES).unwrap() > 3 << 20);
        assert!(size(&r) <= MAX_RECORD_BYTES, "{}", size(&r));
        assert_eq!((r["tool"].as_str(), r["decision"].as_str(), r["agent"]["name"].as_str()), (Some("write"), Some("allow"), Some("coder")));
        assert!(r["arguments"]["content"].as_str().unwrap().ends_with("bytes, cut)"));
        // Many small fields: the rest goes, what it is about stays.
        let mut many = json!({"kind": "tool_call", "time": "t", "tool": "w"});
        for i in 0..10_000 {
            many[format!("f{i}")] = json!("y".repeat(20));
        }
        bound(&mut many, 4096).unwrap();
        assert!(size(&many) <= 4096 && many["tool"] == "w" && many["truncated"]["originalBytes"].as_u64().unwrap() > 4096, "{many}");
        // A call's decision record of many small arguments keeps what its outcome record names
        // it by.
        let mut decision = json!({"kind": "decision", "time": "t", "tool": "w", "correlation_id": "00ff", "arguments_digest": "sha256:ab",
            "approval_request": "w-1", "arguments": (0..10_000).map(|i| (format!("f{i}"), json!("y"))).collect::<Map<String, Value>>()});
        bound(&mut decision, 4096).unwrap();
        assert_eq!(
            (&decision["correlation_id"], &decision["arguments_digest"], &decision["approval_request"]),
            (&json!("00ff"), &json!("sha256:ab"), &json!("w-1")),
            "{decision}"
        );
        assert!(decision.get("arguments").is_none(), "{decision}");
        let mut small = json!({"kind": "k"});
        assert_eq!(bound(&mut small, 10), Some(12));
        assert!(size(&small) <= 40, "{small}");
        let mut fits = json!({"tool": "t"});
        assert_eq!(bound(&mut fits, 100), None);
    }

    #[test]
    fn a_record_is_filed_under_who_sent_it() {
        let agents = vec!["coder".to_owned()];
        let mut own = json!({"agent": {"namespace": "team-a", "name": "coder", "serviceAccount": "coder", "pod": "p"}, "tool": "t"});
        attribute(&mut own, "team-a", "coder", &agents);
        assert_eq!(own["agent"], json!({"namespace": "team-a", "serviceAccount": "coder", "name": "coder", "pod": "p"}));
        let mut forged = json!({"agent": {"namespace": "team-b", "name": "payroll", "serviceAccount": "payroll"}});
        attribute(&mut forged, "team-a", "coder", &agents);
        assert_eq!(forged["agent"], json!({"namespace": "team-a", "serviceAccount": "coder", "name": "", "claimed": "payroll"}));
        let mut none = json!({"tool": "t"});
        attribute(&mut none, "team-a", "coder", &agents);
        assert_eq!(none["agent"]["claimed"], "");
    }

    #[test]
    fn indexed_fields_are_bounded_and_checked() {
        assert_eq!(indexed(&json!("é".repeat(200))).len(), 256);
        assert_eq!(indexed(&json!(5)), "");
        assert_eq!(indexed_decision(&json!("deny")), "deny");
        assert_eq!(indexed_decision(&json!("allow everything")), "other");
    }

    #[test]
    fn a_cut_record_and_a_gap_say_what_is_missing() {
        let mut big = json!({"kind": "tool_call", "tool": "w", "arguments": "x".repeat(100_000)});
        assert_eq!(incompleteness(&big), (0, 0));
        bound(&mut big, MAX_RECORD_BYTES);
        assert_eq!(incompleteness(&big), (1, 0));
        let g = gap("coder", 7, "overflowed", "2026-12-02T00:00:00Z");
        assert_eq!(incompleteness(&g), (0, 7));
        // Only a gap record's count counts: a tool call's own `lost` field is its business.
        assert_eq!(incompleteness(&json!({"kind": "tool_call", "lost": 99})), (0, 0));
        assert_eq!(incompleteness(&json!({"kind": GAP_KIND, "lost": u64::MAX})), (0, 1 << 31));
        assert!(completeness(0, 0, "t").0);
        let (ok, reason, message) = completeness(2, 7, "t");
        assert!(!ok && reason == "RecordsLost" && message.contains("7 audit records") && message.contains("2 were stored cut t"), "{message}");
        assert_eq!(completeness(3, 0, "t").1, "RecordsCut");
    }
}
