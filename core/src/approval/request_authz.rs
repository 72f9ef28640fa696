//! Who may create and change an `ApprovalRequest` itself (not its status, see [`crate::approval::authz`]):
//! requests are bound to identity at admission (DESIGN §3.3). Only the service account of the
//! `ManagedAgent` a request names may create it, with no owner references; the service accounts
//! of the namespace may change no request but their own agent's, and then only to ask for its
//! cancellation.

use std::collections::BTreeMap;

/// The annotation by which a sidecar asks the operator to cancel its own request.
pub const CANCEL_ANNOTATION: &str = "tollgate.dev/cancel";

/// The metadata of a request that admission looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner_references: usize,
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("approval requests are created by the agent's own sidecar: ManagedAgent {agent:?} does not exist in namespace {namespace}")]
    NoSuchAgent { agent: String, namespace: String },
    #[error("only the service account of ManagedAgent {agent} ({expected}) may create its approval requests, not {caller}")]
    NotTheAgent { agent: String, expected: String, caller: String },
    #[error("spec.serviceAccount must be {expected}, the service account of ManagedAgent {agent}")]
    WrongServiceAccount { agent: String, expected: String },
    #[error("approval requests may not have owner references (an owner's deletion must not take a pending request with it)")]
    OwnerReferences,
    #[error("{caller} may not change approval requests of agent {agent}")]
    OtherAgent { caller: String, agent: String },
    #[error("an agent may only ask for its request's cancellation (annotation {CANCEL_ANNOTATION}); {field} cannot change")]
    AgentChange { field: &'static str },
}

/// `system:serviceaccount:<ns>:<name>` of the agent's service account.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A CREATE: `agent_service_account` is the `ManagedAgent`'s `serviceAccountName`, `None` when
/// no such agent exists.
pub fn authorize_create(
    caller: &str,
    namespace: &str,
    agent: &str,
    spec_service_account: &str,
    agent_service_account: Option<&str>,
    meta: &RequestMeta,
) -> Result<(), RequestRefusal> {
    let Some(sa) = agent_service_account else {
        return Err(RequestRefusal::NoSuchAgent { agent: agent.to_owned(), namespace: namespace.to_owned() });
    };
    let expected = service_account_user(namespace, sa);
    if caller != expected {
        return Err(RequestRefusal::NotTheAgent { agent: agent.to_owned(), expected, caller: caller.to_owned() });
    }
    if spec_service_account != sa {
        return Err(RequestRefusal::WrongServiceAccount { agent: agent.to_owned(), expected: sa.to_owned() });
    }
    if meta.owner_references > 0 {
        return Err(RequestRefusal::OwnerReferences);
    }
    Ok(())
}

/// An UPDATE of the object (spec is immutable by the schema). Service accounts of the request's
/// namespace are agents (or could be): only the request's own agent may write, and only the
/// cancel annotation. Anyone else (people, controllers elsewhere, the operator) is left to RBAC.
pub fn authorize_update(
    caller: &str,
    namespace: &str,
    agent_service_account: &str,
    operator: &str,
    old: &RequestMeta,
    new: &RequestMeta,
) -> Result<(), RequestRefusal> {
    if caller == operator {
        return Ok(());
    }
    let prefix = format!("system:serviceaccount:{namespace}:");
    let Some(_) = caller.strip_prefix(&prefix) else { return Ok(()) };
    if caller != service_account_user(namespace, agent_service_account) {
        return Err(RequestRefusal::OtherAgent { caller: caller.to_owned(), agent: agent_service_account.to_owned() });
    }
    let without_cancel = |m: &RequestMeta| {
        let mut a = m.annotations.clone();
        a.remove(CANCEL_ANNOTATION);
        a
    };
    if new.labels != old.labels {
        return Err(RequestRefusal::AgentChange { field: "metadata.labels" });
    }
    if without_cancel(new) != without_cancel(old) {
        return Err(RequestRefusal::AgentChange { field: "metadata.annotations" });
    }
    if new.owner_references != old.owner_references {
        return Err(RequestRefusal::AgentChange { field: "metadata.ownerReferences" });
    }
    if new.finalizers != old.finalizers {
        return Err(RequestRefusal::AgentChange { field: "metadata.finalizers" });
    }
    // Once asked, a cancellation stands: the agent cannot take it back or reword it.
    if let Some(was) = old.annotations.get(CANCEL_ANNOTATION)
        && new.annotations.get(CANCEL_ANNOTATION) != Some(was)
    {
        return Err(RequestRefusal::AgentChange { field: "the cancel annotation once set" });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const AGENT: &str = "system:serviceaccount:team:coder";
    const OPERATOR: &str = "system:serviceaccount:tollgate-system:tollgate-operator";

    #[test]
    fn only_the_agents_own_service_account_creates() {
        let meta = RequestMeta::default();
        assert_eq!(authorize_create(AGENT, "team", "coder", "coder", Some("coder"), &meta), Ok(()));
        let cases = [
            ("admin", "coder", Some("coder"), &meta),
            ("system:serviceaccount:team:other", "coder", Some("coder"), &meta),
            ("system:serviceaccount:elsewhere:coder", "coder", Some("coder"), &meta),
            (AGENT, "coder", None, &meta),
            (AGENT, "someone-else", Some("coder"), &meta),
        ];
        for (caller, spec_sa, agent_sa, m) in cases {
            assert!(authorize_create(caller, "team", "coder", spec_sa, agent_sa, m).is_err(), "{caller} {spec_sa} {agent_sa:?}");
        }
        let owned = RequestMeta { owner_references: 1, ..Default::default() };
        assert_eq!(authorize_create(AGENT, "team", "coder", "coder", Some("coder"), &owned), Err(RequestRefusal::OwnerReferences));
    }

    #[test]
    fn an_agent_may_only_ask_to_cancel_its_own_requests() {
        let old = RequestMeta { labels: [("tollgate.dev/agent".to_owned(), "coder".to_owned())].into(), ..Default::default() };
        let mut cancel = old.clone();
        cancel.annotations.insert(CANCEL_ANNOTATION.into(), "the sidecar restarted".into());
        assert_eq!(authorize_update(AGENT, "team", "coder", OPERATOR, &old, &cancel), Ok(()));
        assert!(matches!(
            authorize_update("system:serviceaccount:team:other", "team", "coder", OPERATOR, &old, &cancel),
            Err(RequestRefusal::OtherAgent { .. })
        ));
        let mut relabel = old.clone();
        relabel.labels.insert("tollgate.dev/agent".into(), "admin".into());
        let mut annotate = cancel.clone();
        annotate.annotations.insert("x".into(), "y".into());
        let owned = RequestMeta { owner_references: 1, ..old.clone() };
        let mut uncancel = cancel.clone();
        uncancel.annotations.clear();
        for (new, from) in [(&relabel, &old), (&annotate, &old), (&owned, &old), (&uncancel, &cancel)] {
            assert!(matches!(authorize_update(AGENT, "team", "coder", OPERATOR, from, new), Err(RequestRefusal::AgentChange { .. })), "{new:?}");
        }
        // People and the operator are RBAC's business.
        assert_eq!(authorize_update("admin", "team", "coder", OPERATOR, &old, &relabel), Ok(()));
        assert_eq!(authorize_update(OPERATOR, "team", "coder", OPERATOR, &old, &relabel), Ok(()));
    }
}
