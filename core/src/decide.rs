//! The JSON patch that appends one decision to `status.decisions` (DESIGN §3.3): what
//! `kubectl approve` and the gateway's Slack relay both send.

use serde_json::{Value, json};
use tollgate_api::{ApprovalDecision, ApprovalRequestStatus};

/// Ops appending `decision` to a request whose status is `status`, read at `resource_version`.
///
/// Appending to an existing list (`/-`) is safe against concurrent writers. Creating the list (or
/// the whole status) replaces whatever is there, so those ops are guarded by a test of the
/// resourceVersion: if someone else wrote in between, the server refuses and the caller re-reads.
pub fn append_decision(status: Option<&ApprovalRequestStatus>, resource_version: &str, decision: &ApprovalDecision) -> Result<Value, serde_json::Error> {
    let d = serde_json::to_value(decision)?;
    let guard = json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version});
    Ok(match status {
        None => json!([guard, {"op": "add", "path": "/status", "value": {"decisions": [d]}}]),
        Some(s) if s.decisions.is_empty() => {
            json!([guard, {"op": "add", "path": "/status/decisions", "value": [d]}])
        }
        Some(_) => json!([{"op": "add", "path": "/status/decisions/-", "value": d}]),
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
