//! The controllers the leader runs, one per kind; each writes only its kind's status (and the
//! objects it owns), with the decisions made in `tollgate-core`.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub mod agent_keys;
pub mod agents;
pub mod approvals;
pub mod gateways;
pub mod policies;
pub mod servers;
pub mod workflows;

pub(crate) fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>, since: Timestamp) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(since),
    }
}

/// `c` in `conditions`, keeping its last transition time when its status did not change.
pub(crate) fn upsert_condition(conditions: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conditions.iter().find(|x| x.type_ == c.type_)
        && old.status == c.status
    {
        c.last_transition_time = old.last_transition_time.clone();
    }
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}
