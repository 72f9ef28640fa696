//! The JSON patch that appends one decision to `status.decisions` (DESIGN §3.3), and the checks
//! worth making before sending it.

use tollgate_api::{ApprovalRequest, Verdict};

use tollgate_core::approval::decision::ReasonProblem;
pub use tollgate_core::approval::decision::{MAX_REASON_BYTES, append_decision};

/// The reason to record, checked by core's rule (the webhook's) before any network call, so
/// everyone gets the same answer; said with the flag that fixes it. (A workflow's own
/// requirement is the webhook's to tell: it knows the workflow.)
pub fn check_reason(verdict: Verdict, name: &str, reason: Option<&str>) -> Result<Option<String>, String> {
    tollgate_core::approval::decision::checked_reason(verdict, reason, "", false).map_err(|e| match e {
        ReasonProblem::DenyWithoutReason => format!("a reason is required to deny: kubectl approve deny {name} --reason \"why\""),
        other => other.to_string(),
    })
}

/// Why a decision by `user` on `ar` (when `uid` is given, the request with that uid) would be
/// pointless, before asking the server (which has the final word through its webhook and the
/// list-map key on `user`).
pub fn precheck(ar: &ApprovalRequest, uid: Option<&str>, user: &str) -> Result<(), String> {
    let id = super::format::qualified_name(ar);
    if uid.is_some_and(|u| ar.metadata.uid.as_deref() != Some(u)) {
        return Err(format!("{id} is a new request under the same name, made after the one you decided on; nothing was recorded"));
    }
    let status = ar.status.as_ref();
    if let Some(phase) = status.and_then(|s| s.phase)
        && phase.is_final()
    {
        return Err(format!("{id} is already {phase}; decisions change nothing now"));
    }
    if let Some(d) = status.and_then(|s| s.decisions.iter().find(|d| d.user == user)) {
        return Err(format!("you ({user}) already decided on {id}: {} at {}", super::format::verdict(d.decision), super::format::rfc3339(&d.time)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::{Value, json};
    use tollgate_api::{ApprovalDecision, ApprovalRequestStatus};
    use tollgate_api::{ApprovalRequestSpec, Phase, Via};

    fn decision(user: &str) -> ApprovalDecision {
        ApprovalDecision {
            user: user.into(),
            decision: Verdict::Approve,
            reason: Some("ok".into()),
            time: Time("2025-05-01T10:00:00Z".parse().unwrap()),
            via: Via::Kubectl,
        }
    }

    const D: &str = r#"{"user":"approver-a","decision":"Approve","reason":"ok","time":"2025-05-01T10:00:00Z","via":"kubectl"}"#;

    fn d_json() -> Value {
        serde_json::from_str(D).unwrap()
    }

    const UID: &str = "2f0c8e1a-5b7d-4c3e-9a61-0d4b8f2e7c19";

    fn read_at(status: Option<ApprovalRequestStatus>, rv: &str) -> ApprovalRequest {
        let mut ar = request(status);
        ar.metadata.uid = Some(UID.into());
        ar.metadata.resource_version = Some(rv.into());
        ar
    }

    fn same_request() -> Value {
        json!({"op": "test", "path": "/metadata/uid", "value": UID})
    }

    #[test]
    fn no_status_adds_the_whole_status_behind_a_guard() {
        let ops = append_decision(&read_at(None, "42"), &decision("approver-a")).unwrap();
        assert_eq!(
            ops,
            json!([
                same_request(),
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/status", "value": {"decisions": [d_json()]}},
            ])
        );
    }

    #[test]
    fn status_without_decisions_adds_the_list_behind_a_guard() {
        let status = ApprovalRequestStatus { phase: Some(Phase::Pending), approvals: Some("0/1".into()), ..Default::default() };
        let ops = append_decision(&read_at(Some(status), "7"), &decision("approver-a")).unwrap();
        assert_eq!(
            ops,
            json!([
                same_request(),
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/status/decisions", "value": [d_json()]},
            ])
        );
    }

    #[test]
    fn existing_decisions_are_appended_to_the_same_request_only() {
        let status = ApprovalRequestStatus { decisions: vec![decision("approver-b")], ..Default::default() };
        let ops = append_decision(&read_at(Some(status), "7"), &decision("approver-a")).unwrap();
        assert_eq!(ops, json!([same_request(), {"op": "add", "path": "/status/decisions/-", "value": d_json()}]));
        // It is a JSON patch kube can send.
        serde_json::from_value::<json_patch::Patch>(ops).unwrap();
    }

    fn request(status: Option<ApprovalRequestStatus>) -> ApprovalRequest {
        let spec: ApprovalRequestSpec = serde_json::from_value(json!({
            "agent": "bot", "serviceAccount": "bot", "server": "s", "tool": "t",
            "argumentsDigest": format!("sha256:{}", "0".repeat(64)),
            "workflow": "wf", "requestedAt": "2025-05-01T10:00:00Z",
        }))
        .unwrap();
        let mut ar = ApprovalRequest::new("x7k2", spec);
        ar.metadata.namespace = Some("ns".into());
        ar.status = status;
        ar
    }

    #[test]
    fn reasons() {
        assert_eq!(check_reason(Verdict::Approve, "x", None), Ok(None));
        assert_eq!(check_reason(Verdict::Approve, "x", Some(" ok ")), Ok(Some("ok".into())));
        assert_eq!(check_reason(Verdict::Deny, "x", Some("no")), Ok(Some("no".into())));
        for blank in [None, Some(""), Some("  ")] {
            assert_eq!(check_reason(Verdict::Deny, "x7k2", blank).unwrap_err(), "a reason is required to deny: kubectl approve deny x7k2 --reason \"why\"");
        }
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        assert!(check_reason(Verdict::Approve, "x", Some(&long)).is_err());
    }

    #[test]
    fn prechecks() {
        assert_eq!(precheck(&request(None), None, "a"), Ok(()));
        let replaced = read_at(None, "9");
        assert_eq!(
            precheck(&replaced, Some("an-older-uid"), "a").unwrap_err(),
            "ns/x7k2 is a new request under the same name, made after the one you decided on; nothing was recorded"
        );
        assert_eq!(precheck(&replaced, Some(UID), "a"), Ok(()));
        let done = request(Some(ApprovalRequestStatus { phase: Some(Phase::Approved), ..Default::default() }));
        assert_eq!(precheck(&done, None, "a").unwrap_err(), "ns/x7k2 is already Approved; decisions change nothing now");
        let decided = request(Some(ApprovalRequestStatus { decisions: vec![decision("approver-a")], ..Default::default() }));
        assert_eq!(precheck(&decided, None, "approver-a").unwrap_err(), "you (approver-a) already decided on ns/x7k2: Approve at 2025-05-01T10:00:00Z");
        assert_eq!(precheck(&decided, None, "approver-b"), Ok(()));
    }
}
