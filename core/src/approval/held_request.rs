//! The `ApprovalRequest` a sidecar creates for a held call (DESIGN §3.3), as data: its name and
//! labels from what the agent named (made valid whatever it named), what of the agent's text it
//! carries (bounded), and which of its requests a restarted sidecar must have cancelled.

use std::collections::BTreeMap;
use tollgate_api::ApprovalRequest;

/// At most this much of a justification is kept in a request (the agent writes it).
pub const MAX_JUSTIFICATION: usize = 4096;
/// At most this much of the rule's message.
pub const MAX_MESSAGE: usize = 2048;

/// A label value from any text: characters a label may not hold become `_`, at most 63, starting
/// and ending alphanumeric.
pub fn label_value(s: &str) -> String {
    let v: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// The request's name: the tool's name as a DNS label (at most 40 characters of it), then
/// `suffix` in hex, so two holds of one tool never collide.
pub fn request_name(tool: &str, suffix: u32) -> String {
    let base: String =
        tool.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(40).collect::<String>().trim_matches('-').to_owned();
    let base = if base.is_empty() { "call".to_owned() } else { base };
    format!("{base}-{suffix:08x}")
}

/// The labels a request is found by: its agent, server and tool, and the pod that holds it.
pub fn labels(agent: &str, server: &str, tool: &str, pod: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("tollgate.dev/agent".to_owned(), label_value(agent)),
        ("tollgate.dev/server".to_owned(), label_value(server)),
        ("tollgate.dev/tool".to_owned(), label_value(tool)),
    ]);
    if !pod.is_empty() {
        labels.insert(POD_LABEL.to_owned(), label_value(pod));
    }
    labels
}

pub const POD_LABEL: &str = "tollgate.dev/pod";

/// The W3C `traceparent` of the held call's span, when tracing is on: what the request's wait
/// and the operator's work on it are linked to.
pub const TRACEPARENT_ANNOTATION: &str = "tollgate.dev/traceparent";

/// At most `max` characters of `text`.
pub fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Whether a request of this pod was left by an earlier instance of its sidecar while still
/// pending: its call lived in that instance's memory and can never run.
pub fn orphaned(ar: &ApprovalRequest, instance: &str) -> bool {
    let pending = !ar.status.as_ref().and_then(|s| s.phase).unwrap_or_default().is_final();
    pending && ar.spec.sidecar_instance.as_deref() != Some(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_valid_whatever_the_agent_named() {
        let n = request_name("Delete_Repository!!", 0xabc);
        assert_eq!(n, "delete-repository-00000abc");
        assert!(request_name(&"x".repeat(500), u32::MAX).len() <= 63);
        assert!(request_name("///", 1).starts_with("call-"));
        assert_eq!(label_value("a/b c"), "a_b_c");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
        assert_eq!(label_value("--ok--"), "ok");
        assert!(!labels("coder", "files", "read", "").contains_key(POD_LABEL));
        assert_eq!(labels("coder", "files", "read", "pod-1").get(POD_LABEL).map(String::as_str), Some("pod-1"));
        assert_eq!(bounded("ünïcødé", 3), "ünï", "characters, not bytes");
    }

    #[test]
    fn only_pending_requests_of_another_instance_are_orphans() {
        let request = |instance: &str, phase: Option<&str>| -> ApprovalRequest {
            let status = phase.map(|p| serde_json::json!({"phase": p})).unwrap_or(serde_json::Value::Null);
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tollgate.dev/v1alpha1", "kind": "ApprovalRequest", "metadata": {"name": "r"},
                "spec": {"agent": "coder", "serviceAccount": "coder", "sidecarInstance": instance, "server": "s", "tool": "t",
                         "argumentsDigest": "sha256:x", "workflow": "ops", "requestedAt": "2026-12-02T10:00:00Z"},
                "status": status,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(orphaned(&request("old", Some("Pending")), "new"));
        assert!(orphaned(&request("old", None), "new"), "no status yet is pending");
        assert!(!orphaned(&request("new", Some("Pending")), "new"), "this instance's own");
        assert!(!orphaned(&request("old", Some("Approved")), "new"), "already ended");
    }
}
