//! What Tollgate makes of and for Kubernetes objects, as data: injected pods and the guard on
//! them, the Gateway's objects, the agent's RBAC, references to Secrets, transparent mode's
//! rules, conditions, names, and the leader's Lease.

pub mod agent_rbac;
pub mod conditions;
pub mod gateway_objects;
pub mod inject;
pub mod lease;
pub mod names;
pub mod one_gateway;
pub mod pod_guard;
pub mod references;
pub mod transparent;
