//! Status conditions, one rule for every controller (Kubernetes' `meta.SetStatusCondition`): a
//! condition's `lastTransitionTime` moves only when its status changes, so it says how long the
//! object has been Ready (or not), whatever the reason and message say meanwhile.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as of `now` (the time is kept by [`set`] when its status did not change).
pub fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>, now: Timestamp) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The reason of the condition of `type_`, if there is one.
pub fn reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.as_str())
}

/// `c` in `conditions` in place of any of its type, keeping the old transition time when the
/// status is the same.
pub fn set(conditions: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conditions.iter().find(|x| x.type_ == c.type_)
        && old.status == c.status
    {
        c.last_transition_time = old.last_transition_time.clone();
    }
    conditions.retain(|x| x.type_ != c.type_);
    conditions.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_with_the_status_only() {
        let t = |s: i64| Timestamp::from_second(s).unwrap_or_default();
        let mut all = vec![condition("Other", true, "X", "x", None, t(1))];
        set(&mut all, condition("Ready", false, "Starting", "0 of 1", Some(1), t(10)));
        set(&mut all, condition("Ready", false, "Degraded", "still 0 of 1", Some(2), t(20)));
        let ready = all.iter().find(|c| c.type_ == "Ready").cloned().unwrap_or_else(|| condition("", false, "", "", None, t(0)));
        assert_eq!((ready.reason.as_str(), ready.observed_generation, ready.last_transition_time.0), ("Degraded", Some(2), t(10)));
        assert_eq!((reason(&all, "Ready"), reason(&all, "Other"), reason(&all, "Missing")), (Some("Degraded"), Some("X"), None));
        set(&mut all, condition("Ready", true, "Available", "1 of 1", Some(2), t(30)));
        let times: Vec<(String, Timestamp)> = all.iter().map(|c| (c.type_.clone(), c.last_transition_time.0)).collect();
        assert_eq!(times, [("Other".to_owned(), t(1)), ("Ready".to_owned(), t(30))], "one Ready, moved on the status change");
    }
}
