//! The rules a held call obeys in the sidecar (DESIGN §3.3): it runs only for the request object
//! it created (same UID, same spec), only when the decisions tallied against the workflow it was
//! held under say approved, and it waits no longer than its deadline. How it ended is the
//! outcome its audit record carries.

use crate::approval::{Observed, Workflow, step};
use crate::audit::Outcome;
use jiff::Timestamp;
use std::time::Duration;
use tollgate_api::{ApprovalDecision, Phase};

/// What a held call is bound to: the request as the sidecar created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub uid: String,
    pub agent: String,
    pub sidecar_instance: String,
    pub workflow: String,
    pub server: String,
    pub tool: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbound {
    #[error("approval request {name} is not the one this call created (it was deleted and created again); the call will not run")]
    Replaced { name: String },
    #[error("approval request {name} no longer matches the held call ({field} changed); the call will not run")]
    Changed { name: String, field: &'static str },
    #[error("approval request {name} says Approved, but its decisions do not reach the quorum of workflow {workflow}; the call will not run")]
    NotApproved { name: String, workflow: String },
}

/// The request as read back, for [`may_run`].
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub name: &'a str,
    pub binding: Binding,
    pub requested_at: Timestamp,
    pub decisions: &'a [ApprovalDecision],
    pub escalated_at: Option<Timestamp>,
}

/// Whether the held call may run: the same request, unchanged, approved by the count of its
/// decisions under the workflow the call was held under (not trusting `phase` alone).
pub fn may_run(bound: &Binding, seen: &Seen<'_>, workflow: &Workflow, now: Timestamp) -> Result<(), Unbound> {
    let name = seen.name.to_owned();
    if seen.binding.uid != bound.uid {
        return Err(Unbound::Replaced { name });
    }
    let s = &seen.binding;
    for (field, a, b) in [
        ("agent", &s.agent, &bound.agent),
        ("sidecarInstance", &s.sidecar_instance, &bound.sidecar_instance),
        ("workflow", &s.workflow, &bound.workflow),
        ("server", &s.server, &bound.server),
        ("tool", &s.tool, &bound.tool),
        ("argumentsDigest", &s.digest, &bound.digest),
    ] {
        if a != b {
            return Err(Unbound::Changed { name, field });
        }
    }
    let observed =
        Observed { requested_at: seen.requested_at, phase: Phase::Pending, decisions: seen.decisions, escalated_at: seen.escalated_at, resolved_at: None };
    if step(workflow, &observed, now).phase != Phase::Approved {
        return Err(Unbound::NotApproved { name, workflow: workflow.name.clone() });
    }
    Ok(())
}

/// How long a held call waits for its request to end: the workflow's timeout twice (the operator
/// may be down for a while), its escalation, and a margin; then it times out, refused.
pub fn hold_deadline(timeout: Duration, escalation_after: Option<Duration>) -> Duration {
    timeout.saturating_mul(2).saturating_add(escalation_after.unwrap_or_default()).saturating_add(Duration::from_secs(30))
}

/// The outcome record of a held call whose request ended in `phase`. A standalone approval
/// (`request_approval`) runs nothing, so its approval is its outcome.
pub fn outcome(phase: Phase, ran_with_error: bool, standalone: bool) -> Outcome {
    match phase {
        Phase::Approved if standalone || !ran_with_error => Outcome::Approved,
        Phase::Approved => Outcome::UpstreamError,
        Phase::Denied => Outcome::ApprovalDenied,
        Phase::Expired => Outcome::ApprovalExpired,
        Phase::Cancelled | Phase::Pending => Outcome::ApprovalCancelled,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::approval::decision::record as new_decision;
    use tollgate_api::{ApprovalWorkflowSpec, Verdict, Via};

    fn binding() -> Binding {
        Binding {
            uid: "u-1".into(),
            agent: "coder".into(),
            sidecar_instance: "i-1".into(),
            workflow: "ops".into(),
            server: "db".into(),
            tool: "drop".into(),
            digest: "sha256:aa".into(),
        }
    }

    fn workflow(required: i32) -> Workflow {
        let spec: ApprovalWorkflowSpec =
            serde_json::from_value(serde_json::json!({"approvers": {"users": ["alice", "bob"]}, "requiredApprovals": required})).unwrap();
        Workflow::from_spec("ops", &spec)
    }

    #[test]
    fn only_the_same_unchanged_request_with_a_real_quorum_runs() {
        let now = Timestamp::now();
        let approve = |u: &str| new_decision(u, Verdict::Approve, None, Via::Kubectl, now);
        let one = [approve("alice")];
        let two = [approve("alice"), approve("bob")];
        fn seen(binding: Binding, decisions: &[ApprovalDecision], now: Timestamp) -> Seen<'_> {
            Seen { name: "r", binding, requested_at: now, decisions, escalated_at: None }
        }
        assert_eq!(may_run(&binding(), &seen(binding(), &one, now), &workflow(1), now), Ok(()));
        assert_eq!(may_run(&binding(), &seen(binding(), &two, now), &workflow(2), now), Ok(()));
        // Held under a workflow of two: one approval is not enough, whatever phase says.
        assert!(matches!(may_run(&binding(), &seen(binding(), &one, now), &workflow(2), now), Err(Unbound::NotApproved { .. })));
        let decoy = Binding { uid: "u-2".into(), workflow: "lax".into(), ..binding() };
        assert!(matches!(may_run(&binding(), &seen(decoy, &one, now), &workflow(1), now), Err(Unbound::Replaced { .. })));
        for (field, b) in [
            ("workflow", Binding { workflow: "lax".into(), ..binding() }),
            ("argumentsDigest", Binding { digest: "sha256:bb".into(), ..binding() }),
            ("tool", Binding { tool: "select".into(), ..binding() }),
            ("server", Binding { server: "x".into(), ..binding() }),
            ("agent", Binding { agent: "y".into(), ..binding() }),
            ("sidecarInstance", Binding { sidecar_instance: "i-2".into(), ..binding() }),
        ] {
            assert_eq!(may_run(&binding(), &seen(b, &one, now), &workflow(1), now), Err(Unbound::Changed { name: "r".into(), field }));
        }
        // A denial or no decision at all never runs it.
        let denied = [new_decision("bob", Verdict::Deny, None, Via::Kubectl, now), approve("alice")];
        assert!(may_run(&binding(), &seen(binding(), &denied, now), &workflow(1), now).is_err());
        assert!(may_run(&binding(), &seen(binding(), &[], now), &workflow(1), now).is_err());
    }

    #[test]
    fn deadlines_and_outcomes() {
        let s = Duration::from_secs;
        assert_eq!(hold_deadline(s(300), None), s(630));
        assert_eq!(hold_deadline(s(300), Some(s(60))), s(690));
        assert_eq!(hold_deadline(Duration::MAX, Some(s(1))), Duration::MAX);
        let table = [
            (Phase::Approved, false, false, Outcome::Approved),
            (Phase::Approved, true, false, Outcome::UpstreamError),
            (Phase::Approved, true, true, Outcome::Approved),
            (Phase::Denied, false, false, Outcome::ApprovalDenied),
            (Phase::Expired, false, false, Outcome::ApprovalExpired),
            (Phase::Cancelled, false, false, Outcome::ApprovalCancelled),
            (Phase::Pending, false, false, Outcome::ApprovalCancelled),
        ];
        for (phase, err, standalone, want) in table {
            assert_eq!(outcome(phase, err, standalone), want, "{phase:?} {err} {standalone}");
        }
    }
}
