//! What an agent's sidecar is allowed, as RBAC objects the operator keeps (DESIGN §3.6): per
//! agent, a RoleBinding of its service account to `tollgate-agent` in its namespace (owned by the
//! `ManagedAgent`, so it goes with it), and one ClusterRoleBinding to `tollgate-agent-cluster`
//! whose subjects are exactly the service accounts of the agents that exist.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

pub const AGENT_ROLE: &str = "tollgate-agent";
pub const AGENT_CLUSTER_ROLE: &str = "tollgate-agent-cluster";
/// The one ClusterRoleBinding of every agent's service account.
pub const AGENTS_CLUSTER_BINDING: &str = "tollgate-agents";
const MANAGED_BY: &str = "tollgate-operator";

/// The RoleBinding of agent `name` (UID `uid`) in `namespace`.
pub fn role_binding(namespace: &str, name: &str, uid: &str, service_account: &str) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("tollgate-agent-{name}").chars().take(253).collect()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(name)),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{}/{}", tollgate_api::GROUP, tollgate_api::VERSION),
                kind: "ManagedAgent".to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]),
            ..Default::default()
        },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".to_owned(), kind: "ClusterRole".to_owned(), name: AGENT_ROLE.to_owned() },
        subjects: Some(vec![service_account_subject(namespace, service_account)]),
    }
}

/// The ClusterRoleBinding for the agents `(namespace, service account)`: each subject once, in a
/// stable order, so an unchanged set of agents writes nothing.
pub fn cluster_binding<'a>(agents: impl IntoIterator<Item = (&'a str, &'a str)>) -> ClusterRoleBinding {
    let mut subjects: Vec<(String, String)> = agents.into_iter().map(|(ns, sa)| (ns.to_owned(), sa.to_owned())).collect();
    subjects.sort();
    subjects.dedup();
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(AGENTS_CLUSTER_BINDING.to_owned()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned())].into()),
            ..Default::default()
        },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".to_owned(), kind: "ClusterRole".to_owned(), name: AGENT_CLUSTER_ROLE.to_owned() },
        subjects: Some(subjects.iter().map(|(ns, sa)| service_account_subject(ns, sa)).collect()),
    }
}

fn service_account_subject(namespace: &str, service_account: &str) -> Subject {
    Subject { kind: "ServiceAccount".to_owned(), name: service_account.to_owned(), namespace: Some(namespace.to_owned()), api_group: None }
}

fn labels(agent: &str) -> BTreeMap<String, String> {
    let value: String = agent.chars().take(63).collect();
    [("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()), ("tollgate.dev/agent".to_owned(), value)].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_role_binding_names_its_account_and_goes_with_it() {
        let rb = role_binding("team-a", "coder", "uid-1", "coder-sa");
        assert_eq!(rb.metadata.name.as_deref(), Some("tollgate-agent-coder"));
        assert_eq!(rb.role_ref.name, AGENT_ROLE);
        let subject = rb.subjects.as_ref().and_then(|s| s.first()).cloned().unwrap_or_default();
        assert_eq!((subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()), ("ServiceAccount", "coder-sa", Some("team-a")));
        let owner = rb.metadata.owner_references.as_ref().and_then(|o| o.first()).cloned().unwrap_or_default();
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("ManagedAgent", "uid-1", Some(true)));
    }

    #[test]
    fn the_cluster_binding_lists_each_agent_account_once_in_a_stable_order() {
        let a = cluster_binding([("team-b", "x"), ("team-a", "coder"), ("team-b", "x")]);
        let b = cluster_binding([("team-a", "coder"), ("team-b", "x")]);
        assert_eq!(a, b);
        let names: Vec<String> = a.subjects.iter().flatten().map(|s| format!("{}/{}", s.namespace.as_deref().unwrap_or_default(), s.name)).collect();
        assert_eq!(names, ["team-a/coder", "team-b/x"]);
        assert_eq!(cluster_binding([]).subjects, Some(vec![]), "no agents: a binding of nobody");
    }
}
