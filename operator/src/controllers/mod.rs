//! The controllers the leader runs, one per kind; each writes only its kind's status (and the
//! objects it owns), with the decisions made in `tollgate-core`.

pub mod agent_keys;
pub mod agents;
pub mod approvals;
pub mod gateways;
pub mod lean;
pub mod policies;
pub mod servers;
pub mod share;
pub mod workflows;

// One rule for conditions, in core: the transition time moves with the status only.
pub(crate) use tollgate_core::k8s::conditions::{condition, set as upsert_condition};
