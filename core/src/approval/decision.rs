//! A person's decision on a held call (DESIGN §3.3): the one set of rules on its reason, and the
//! JSON patch that appends it to `status.decisions`. `kubectl approve` and the gateway's Slack
//! relay build decisions here; the admission webhook (`authz`) holds every write to the same
//! rules, so no path records what another would refuse.

use jiff::Timestamp;
use serde_json::{Value, json};
use tollgate_api::{ApprovalDecision, ApprovalRequest, Verdict, Via};

/// The `maxLength` of `status.decisions[].reason` in the CRD.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a decision's reason cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonProblem {
    #[error("a Deny must say why: give a reason")]
    DenyWithoutReason,
    #[error("workflow {workflow} requires a reason with every decision")]
    Required { workflow: String },
    #[error("the reason is too long ({len} bytes; at most {MAX_REASON_BYTES})")]
    TooLong { len: usize },
}

/// Whether a person deciding `verdict` under a workflow that does (or does not) require reasons
/// must give one: a Deny always says why, so the agent and the audit can tell a refusal apart
/// from a mistake.
pub fn reason_needed(verdict: Verdict, workflow_requires: bool) -> bool {
    verdict == Verdict::Deny || workflow_requires
}

/// The reason to record (trimmed; `None` when blank), or why the decision cannot be made.
pub fn checked_reason(verdict: Verdict, reason: Option<&str>, workflow: &str, workflow_requires: bool) -> Result<Option<String>, ReasonProblem> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    match reason {
        None if verdict == Verdict::Deny => Err(ReasonProblem::DenyWithoutReason),
        None if workflow_requires => Err(ReasonProblem::Required { workflow: workflow.to_owned() }),
        Some(r) if r.len() > MAX_REASON_BYTES => Err(ReasonProblem::TooLong { len: r.len() }),
        r => Ok(r.map(str::to_owned)),
    }
}

/// A decision as recorded, the reason taken as given: the AI first reader's, and tests'.
pub fn record(user: &str, verdict: Verdict, reason: Option<String>, via: Via, now: Timestamp) -> ApprovalDecision {
    ApprovalDecision { user: user.to_owned(), decision: verdict, reason, time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now), via }
}

/// A person's decision, as `kubectl approve` and Slack append it: its reason checked as the
/// webhook will check it, and its time to the second (what the API server stores).
pub fn person_decision(
    user: &str,
    verdict: Verdict,
    reason: Option<&str>,
    via: Via,
    now: Timestamp,
    workflow: &str,
    workflow_requires: bool,
) -> Result<ApprovalDecision, ReasonProblem> {
    let reason = checked_reason(verdict, reason, workflow, workflow_requires)?;
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    Ok(record(user, verdict, reason, via, now))
}

/// Ops appending `decision` to request `ar`, as read.
///
/// Every patch first tests the request's uid: between the read and the write (or between the
/// page a person decided on and their click) the request may have been deleted and a new one
/// made under the same name, and the decision was not about that one. Appending to an existing
/// list (`/-`) is safe against concurrent writers. Creating the list (or the whole status)
/// replaces whatever is there, so those ops are guarded by a test of the resourceVersion too: if
/// someone else wrote in between, the server refuses and the caller re-reads.
pub fn append_decision(ar: &ApprovalRequest, decision: &ApprovalDecision) -> Result<Value, serde_json::Error> {
    let d = serde_json::to_value(decision)?;
    let uid = json!({"op": "test", "path": "/metadata/uid", "value": ar.metadata.uid.as_deref().unwrap_or_default()});
    let version = json!({"op": "test", "path": "/metadata/resourceVersion", "value": ar.metadata.resource_version.as_deref().unwrap_or_default()});
    Ok(match &ar.status {
        None => json!([uid, version, {"op": "add", "path": "/status", "value": {"decisions": [d]}}]),
        Some(s) if s.decisions.is_empty() => {
            json!([uid, version, {"op": "add", "path": "/status/decisions", "value": [d]}])
        }
        Some(_) => json!([uid, {"op": "add", "path": "/status/decisions/-", "value": d}]),
    })
}

/// What the API server's 422 says, and all it says, when a JSON patch cannot be applied: a `test`
/// op that failed, or an `add` under a path that no longer exists.
pub const PATCH_NOT_APPLICABLE: &str = "the server rejected our request due to an error in our request";

/// Whether a write failed only because the object changed since it was read: a conflict, or the
/// patch no longer applying (the resourceVersion `test` failed). Retried after a fresh read.
pub fn is_stale_write(code: u16, message: &str) -> bool {
    code == 409 || (code == 422 && message.contains(PATCH_NOT_APPLICABLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_says_why_a_workflow_may_ask_it_of_every_decision_and_reasons_are_bounded() {
        use ReasonProblem::*;
        let check = |v, r: Option<&str>, requires| checked_reason(v, r, "ops", requires);
        assert_eq!(check(Verdict::Deny, None, false), Err(DenyWithoutReason));
        assert_eq!(check(Verdict::Deny, Some(" \n\t"), false), Err(DenyWithoutReason), "blank is no reason");
        assert_eq!(check(Verdict::Deny, Some(" freeze "), false), Ok(Some("freeze".into())));
        assert_eq!(check(Verdict::Approve, None, false), Ok(None));
        assert_eq!(check(Verdict::Approve, Some("  "), false), Ok(None));
        assert_eq!(check(Verdict::Approve, None, true), Err(Required { workflow: "ops".into() }));
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(check(Verdict::Approve, Some(&long), false), Err(TooLong { len: MAX_REASON_BYTES + 1 }));
        assert_eq!(check(Verdict::Approve, Some(&long[1..]), false).map(|r| r.map(|r| r.len())), Ok(Some(MAX_REASON_BYTES)));
        assert!(reason_needed(Verdict::Deny, false) && reason_needed(Verdict::Approve, true) && !reason_needed(Verdict::Approve, false));
    }

    #[test]
    fn a_persons_decision_carries_the_checked_reason_and_a_whole_second() {
        let now = Timestamp::from_millisecond(1_700_000_000_123).unwrap_or_default();
        let d = person_decision("alice", Verdict::Deny, Some(" no "), Via::Slack, now, "ops", false).expect("decided");
        assert_eq!((d.user.as_str(), d.reason.as_deref(), d.via, d.time.0.as_millisecond()), ("alice", Some("no"), Via::Slack, 1_700_000_000_000));
        assert_eq!(person_decision("alice", Verdict::Deny, None, Via::Kubectl, now, "ops", false), Err(ReasonProblem::DenyWithoutReason));
    }
}
