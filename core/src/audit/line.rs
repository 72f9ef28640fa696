//! An audit record's JSON line written by hand: the bytes `serde_json::to_writer` writes for an
//! [`AuditRecord`], without building one (docs/design.md §3.5).
//!
//! A call's decision and outcome records repeat everything from `agent` to `rule`, but for the
//! arguments and the justification: only the decision record carries those, and the outcome
//! record names it by `correlation_id` and `arguments_digest` (docs/design.md §3.5). The sidecar
//! writes that part once per call ([`Shared::text`]) and copies it into each of the call's lines
//! ([`Line::write`]), the arguments' part into the decision's alone: the arguments' text goes
//! into the record as it came, not read again into a `RawValue`, and no record's strings are
//! copied into an `AuditRecord` to be serialized. A test holds the two writings to the same bytes
//! (`core/tests/record_line.rs`).

use super::{AuditDecision, AuditRecord, Outcome, RawJson, RecordKind, ShadowRecord};
use crate::json_text::write_str as string;

/// What every record of one call repeats, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub pod: Option<&'a str>,
    pub service_account: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    pub arguments_digest: &'a str,
    /// The redacted arguments' JSON text, valid and on one line: it is written as it stands.
    /// The sidecar always gives them ([`SharedText::for_kind`] leaves them out of an outcome);
    /// `None` is a record written as it stands without them (an `AuditRecord`'s).
    pub arguments: Option<&'a str>,
    pub justification: Option<&'a str>,
    pub decision: AuditDecision,
    pub policy: Option<&'a str>,
    pub rule: Option<&'a str>,
}

/// [`Shared`] written: JSON members without the braces, and where in them the arguments and the
/// justification are.
#[derive(Debug, Clone, Default)]
pub struct SharedText {
    text: String,
    arguments: std::ops::Range<usize>,
}

impl SharedText {
    /// What a record of `kind` carries of it: an outcome record leaves the arguments and the
    /// justification to its call's decision record, which it names.
    pub fn for_kind(&self, kind: RecordKind) -> [&str; 2] {
        match kind {
            RecordKind::Decision => self.whole(),
            RecordKind::Outcome => {
                let (start, end) = (self.arguments.start, self.arguments.end);
                [self.text.get(..start).unwrap_or_default(), self.text.get(end..).unwrap_or_default()]
            }
        }
    }

    /// All of it, whatever the kind: a record written as it stands.
    pub fn whole(&self) -> [&str; 2] {
        [&self.text, ""]
    }
}

impl Shared<'_> {
    /// The record's fields from `agent` to `rule`.
    pub fn text(&self) -> SharedText {
        let mut out = Vec::with_capacity(160 + self.arguments.map_or(0, str::len));
        out.extend_from_slice(b"\"agent\":{\"namespace\":");
        string(&mut out, self.namespace);
        member(&mut out, "name", self.name);
        if let Some(pod) = self.pod {
            member(&mut out, "pod", pod);
        }
        member(&mut out, "service_account", self.service_account);
        out.push(b'}');
        member(&mut out, "server", self.server);
        member(&mut out, "tool", self.tool);
        member(&mut out, "arguments_digest", self.arguments_digest);
        let start = out.len();
        if let Some(arguments) = self.arguments {
            out.extend_from_slice(b",\"arguments\":");
            out.extend_from_slice(arguments.as_bytes());
        }
        if let Some(j) = self.justification {
            member(&mut out, "justification", j);
        }
        let end = out.len();
        member(&mut out, "decision", self.decision.as_str());
        if let Some(p) = self.policy {
            member(&mut out, "policy", p);
        }
        if let Some(r) = self.rule {
            member(&mut out, "rule", r);
        }
        // Only whole strings and the arguments' text (valid UTF-8) were written, so the text and
        // its range stand on character boundaries.
        String::from_utf8(out).map_or_else(|_| SharedText::default(), |text| SharedText { text, arguments: start..end })
    }
}

/// One record, its shared part already written.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// RFC 3339.
    pub time: &'a str,
    pub kind: RecordKind,
    pub correlation_id: &'a str,
    /// What the record carries of [`Shared::text`] ([`SharedText::for_kind`]), in two pieces.
    pub shared: [&'a str; 2],
    pub approval_request: Option<&'a str>,
    pub approvers: &'a [String],
    pub outcome: Option<Outcome>,
    pub is_error: bool,
    pub duration_ms: Option<f64>,
    pub error: Option<&'a str>,
    pub shadow: Option<&'a ShadowRecord>,
}

impl<'a> Line<'a> {
    /// A record of `kind` with nothing beyond what every record has: the rest set as needed.
    pub fn new(time: &'a str, kind: RecordKind, correlation_id: &'a str, shared: &'a SharedText) -> Line<'a> {
        Line {
            time,
            kind,
            correlation_id,
            shared: shared.for_kind(kind),
            approval_request: None,
            approvers: &[],
            outcome: None,
            is_error: false,
            duration_ms: None,
            error: None,
            shadow: None,
        }
    }

    /// Appends the record's JSON (no line break) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":");
        string(out, self.time);
        member(out, "kind", self.kind.as_str());
        member(out, "correlation_id", self.correlation_id);
        out.push(b',');
        out.extend_from_slice(self.shared[0].as_bytes());
        out.extend_from_slice(self.shared[1].as_bytes());
        if let Some(r) = self.approval_request {
            member(out, "approval_request", r);
        }
        if !self.approvers.is_empty() {
            out.extend_from_slice(b",\"approvers\":[");
            for (i, a) in self.approvers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, a);
            }
            out.push(b']');
        }
        if let Some(o) = self.outcome {
            member(out, "outcome", o.as_str());
        }
        out.extend_from_slice(if self.is_error { b",\"is_error\":true" } else { b",\"is_error\":false" });
        if let Some(d) = self.duration_ms {
            out.extend_from_slice(b",\"duration_ms\":");
            // serde_json's own number writing (ryu; `null` when not finite), into a Vec: cannot fail.
            let _ = serde_json::to_writer(&mut *out, &d);
        }
        if let Some(e) = self.error {
            member(out, "error", e);
        }
        if let Some(s) = self.shadow {
            out.extend_from_slice(b",\"shadow\":");
            let _ = serde_json::to_writer(&mut *out, s);
        }
        out.push(b'}');
    }
}

impl<'a> From<&'a AuditRecord> for Shared<'a> {
    /// What `record` carries from `agent` to `rule`, as it stands.
    fn from(record: &'a AuditRecord) -> Shared<'a> {
        Shared {
            namespace: &record.agent.namespace,
            name: &record.agent.name,
            pod: record.agent.pod.as_deref(),
            service_account: &record.agent.service_account,
            server: &record.server,
            tool: &record.tool,
            arguments_digest: &record.arguments_digest,
            arguments: record.arguments.as_ref().map(RawJson::get),
            justification: record.justification.as_deref(),
            decision: record.decision,
            policy: record.policy.as_deref(),
            rule: record.rule.as_deref(),
        }
    }
}

impl AuditRecord {
    /// The record's JSON, as `serde_json::to_writer` writes it, appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let shared = Shared::from(self).text();
        Line {
            time: &self.time,
            kind: self.kind,
            correlation_id: &self.correlation_id,
            shared: shared.whole(),
            approval_request: self.approval_request.as_deref(),
            approvers: &self.approvers,
            outcome: self.outcome,
            is_error: self.is_error,
            duration_ms: self.duration_ms,
            error: self.error.as_deref(),
            shadow: self.shadow.as_ref(),
        }
        .write(out);
    }
}

/// `,"key":"value"`; keys are ours and need no escaping.
fn member(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    string(out, value);
}
