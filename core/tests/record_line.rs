//! The audit line the sidecar writes by hand is the line serde_json writes for the same record,
//! byte for byte: the gateway's store, `kubectl logs` readers and the hash chain see one format
//! whichever wrote it. Records built to reach the edges: control characters, quotes and
//! backslashes, non-ASCII text, every optional field present or not, odd durations.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tollgate_core::audit::line::{Line, Shared};
use tollgate_core::audit::{AgentRef, AuditDecision, AuditRecord, Outcome, RawJson, RecordKind, ShadowRecord};

/// Text that reaches every escape serde_json writes, and what it writes as it is.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-z0-9:/._-]{0,8}",
            1 => prop::sample::select(vec!["\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}", "\u{7f}", "ü", "😀", "\u{2028}", "</"])
                .prop_map(str::to_owned),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn decision() -> impl Strategy<Value = AuditDecision> {
    prop::sample::select(AuditDecision::ALL.to_vec())
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop::sample::select(Outcome::ALL.to_vec())
}

fn arguments() -> impl Strategy<Value = RawJson> {
    prop_oneof![
        Just(serde_json::json!({})),
        Just(serde_json::json!(null)),
        text().prop_map(|t| serde_json::json!({ "path": t, "n": [1, -2.5, 1e300], "deep": { "x": true } })),
    ]
    .prop_map(|v| RawJson::of(&v))
}

fn duration() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), 0.0..10_000.0f64, Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e-7), Just(1e21)]
}

fn shadow() -> impl Strategy<Value = ShadowRecord> {
    (decision(), prop::option::of(text()), prop::option::of(text()), prop::option::of(text())).prop_map(|(would, policy, rule, message)| ShadowRecord {
        would,
        policy,
        rule,
        message,
    })
}

prop_compose! {
    fn record()(
        time in text(), outcome_kind in any::<bool>(), correlation_id in text(),
        agent in (text(), text(), prop::option::of(text()), text()),
        server in text(), tool in text(), arguments_digest in text(), arguments in prop::option::of(arguments()),
        justification in prop::option::of(text()), decision in decision(),
        policy in prop::option::of(text()), rule in prop::option::of(text()),
        approval_request in prop::option::of(text()), approvers in prop::collection::vec(text(), 0..3),
        outcome in prop::option::of(outcome()), is_error in any::<bool>(),
        duration_ms in prop::option::of(duration()), error in prop::option::of(text()),
        shadow in prop::option::of(shadow()),
    ) -> AuditRecord {
        let (namespace, name, pod, service_account) = agent;
        AuditRecord {
            time,
            kind: if outcome_kind { RecordKind::Outcome } else { RecordKind::Decision },
            correlation_id,
            agent: AgentRef { namespace, name, pod, service_account },
            server, tool, arguments_digest, arguments, justification, decision, policy, rule,
            approval_request, approvers, outcome, is_error, duration_ms, error, shadow,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn written_by_hand_as_serde_json_writes_it(record in record()) {
        let mut ours = Vec::new();
        record.write_json(&mut ours);
        let theirs = serde_json::to_vec(&record).unwrap();
        prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
    }

    /// The sidecar's way: one shared part written for the call, each record taking its share of
    /// it, is serde's line of the record as that kind carries it (an outcome without the
    /// arguments and the justification).
    #[test]
    fn a_share_of_the_calls_part_is_the_records_line(record in record()) {
        let shared = Shared::from(&record).text();
        let line = Line {
            approval_request: record.approval_request.as_deref(),
            approvers: &record.approvers,
            outcome: record.outcome,
            is_error: record.is_error,
            duration_ms: record.duration_ms,
            error: record.error.as_deref(),
            shadow: record.shadow.as_ref(),
            ..Line::new(&record.time, record.kind, &record.correlation_id, &shared)
        };
        let mut ours = Vec::new();
        line.write(&mut ours);
        let mut carried = record.clone();
        if record.kind == RecordKind::Outcome {
            (carried.arguments, carried.justification) = (None, None);
        }
        prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&carried).unwrap());
    }
}

/// The sidecar's way, one shared part for both records, gives each record's own line: the
/// decision's with the arguments and the justification, the outcome's naming the decision by its
/// correlation id and digest alone.
#[test]
fn one_shared_part_serves_a_calls_records() {
    let agent = AgentRef { namespace: "team-a".into(), name: "triage".into(), pod: Some("triage-0".into()), service_account: "triage".into() };
    let arguments = RawJson::of(&serde_json::json!({"path": "/etc/\"x\"\n"}));
    for justification in [Some("needed\tnow"), None] {
        let shared = Shared {
            namespace: &agent.namespace,
            name: &agent.name,
            pod: agent.pod.as_deref(),
            service_account: &agent.service_account,
            server: "fs",
            tool: "read_file",
            arguments_digest: "sha256:00",
            arguments: Some(arguments.get()),
            justification,
            decision: AuditDecision::Allow,
            policy: Some("team-a/files"),
            rule: None,
        }
        .text();
        for (kind, outcome, duration_ms) in [(RecordKind::Decision, None, None), (RecordKind::Outcome, Some(Outcome::Forwarded), Some(1.25))] {
            let mut ours = Vec::new();
            let line = Line {
                time: "2026-12-05T12:00:00.5Z",
                kind,
                correlation_id: "00ff",
                shared: shared.for_kind(kind),
                approval_request: None,
                approvers: &[],
                outcome,
                is_error: false,
                duration_ms,
                error: None,
                shadow: None,
            };
            line.write(&mut ours);
            let record = AuditRecord {
                time: line.time.into(),
                kind,
                correlation_id: line.correlation_id.into(),
                agent: agent.clone(),
                server: "fs".into(),
                tool: "read_file".into(),
                arguments_digest: "sha256:00".into(),
                arguments: (kind == RecordKind::Decision).then(|| arguments.clone()),
                justification: justification.filter(|_| kind == RecordKind::Decision).map(str::to_owned),
                decision: AuditDecision::Allow,
                policy: Some("team-a/files".into()),
                rule: None,
                approval_request: None,
                approvers: Vec::new(),
                outcome,
                is_error: false,
                duration_ms,
                error: None,
                shadow: None,
            };
            assert_eq!(String::from_utf8(ours.clone()).unwrap(), serde_json::to_string(&record).unwrap());
            assert_eq!(serde_json::from_slice::<AuditRecord>(&ours).unwrap(), record);
        }
    }
}
