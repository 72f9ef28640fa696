//! The `ApprovalRequest` phase machine (DESIGN §3.3): quorum, veto, expiry, one escalation.
//! The operator calls [`step`] on every reconcile and writes back what it returns.

pub mod ai_review;
pub mod authz;
pub mod browser;
pub mod decision;
pub mod held;
pub mod held_request;
pub mod notify;
pub mod request_authz;
pub mod slack;
use jiff::{SignedDuration as Duration, Timestamp};
use std::collections::BTreeSet;
use tollgate_api::{ApprovalDecision, ApprovalWorkflowSpec, Approvers, Phase, Verdict};

/// Who may decide. Slack members are matched as `slack:<member id>`, the name the gateway
/// writes their decisions under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApproverSet {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub slack_ids: BTreeSet<String>,
    /// Slack member id → the Kubernetes user who is the same person.
    pub slack_people: std::collections::BTreeMap<String, String>,
}

pub const SLACK_USER_PREFIX: &str = "slack:";

impl ApproverSet {
    pub fn from_spec(a: &Approvers) -> Self {
        ApproverSet {
            users: a.users.iter().cloned().collect(),
            groups: a.groups.iter().cloned().collect(),
            slack_ids: a.slack.iter().flat_map(|s| s.user_ids.iter().cloned()).collect(),
            slack_people: a.slack.iter().flat_map(|s| s.kubernetes_users.clone()).collect(),
        }
    }

    /// The person who wrote a decision under `user`: a Slack member mapped to a Kubernetes user
    /// is that user, so one person has one vote whichever way they decide.
    pub fn person<'a>(&'a self, user: &'a str) -> &'a str {
        user.strip_prefix(SLACK_USER_PREFIX).and_then(|id| self.slack_people.get(id)).map_or(user, String::as_str)
    }

    fn union(&self, other: &ApproverSet) -> ApproverSet {
        ApproverSet {
            users: self.users.union(&other.users).cloned().collect(),
            groups: self.groups.union(&other.groups).cloned().collect(),
            slack_ids: self.slack_ids.union(&other.slack_ids).cloned().collect(),
            slack_people: self.slack_people.iter().chain(&other.slack_people).map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// Whether `user` (with the groups the API server authenticated) may decide.
    pub fn admits(&self, user: &str, groups: &[String]) -> bool {
        if let Some(id) = user.strip_prefix(SLACK_USER_PREFIX) {
            return self.slack_ids.contains(id);
        }
        self.users.contains(user) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// An `ApprovalWorkflow` as the phase machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub name: String,
    pub approvers: ApproverSet,
    pub required: u32,
    pub timeout: Duration,
    pub require_reason: bool,
    pub escalation: Option<EscalationRules>,
    /// The AI first reader, if any: whether its decision counts (else it is advice only).
    pub ai: Option<AiRules>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiRules {
    pub counts_toward_quorum: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationRules {
    /// From the request to escalation.
    pub after: Duration,
    pub approvers: ApproverSet,
    pub required: Option<u32>,
}

impl Workflow {
    pub fn from_spec(name: &str, spec: &ApprovalWorkflowSpec) -> Self {
        let timeout = Duration::from_secs(i64::from(spec.timeout_seconds.max(1)));
        Workflow {
            name: name.to_owned(),
            approvers: ApproverSet::from_spec(&spec.approvers),
            required: u32::try_from(spec.required_approvals.max(1)).unwrap_or(1),
            timeout,
            require_reason: spec.require_reason,
            escalation: spec.escalation.as_ref().map(|e| EscalationRules {
                after: e.after_seconds.map_or(timeout, |s| Duration::from_secs(i64::from(s.max(1)))),
                approvers: ApproverSet::from_spec(&e.approvers),
                required: e.required_approvals.and_then(|r| u32::try_from(r.max(1)).ok()),
            }),
            ai: spec.approvers.ai.as_ref().map(|a| AiRules { counts_toward_quorum: a.counts_toward_quorum }),
        }
    }

    /// Whether `d` counts toward the quorum (and vetoes): an AI reader's only where it is asked to.
    fn counts(&self, d: &ApprovalDecision) -> bool {
        !d.user.starts_with(crate::approval::ai_review::AI_USER_PREFIX)
            || (d.user == crate::approval::ai_review::user(&self.name) && self.ai.is_some_and(|a| a.counts_toward_quorum))
    }

    /// Every approver, escalation's included: whom a decision's name is a person of.
    fn people(&self) -> ApproverSet {
        self.in_force(true).0
    }

    /// The approvers and quorum in force, before or after escalation.
    pub fn in_force(&self, escalated: bool) -> (ApproverSet, u32) {
        match (&self.escalation, escalated) {
            (Some(e), true) => (self.approvers.union(&e.approvers), e.required.unwrap_or(self.required)),
            _ => (self.approvers.clone(), self.required),
        }
    }
}

/// What the operator last wrote, plus the request's creation time.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub requested_at: Timestamp,
    pub phase: Phase,
    pub decisions: &'a [ApprovalDecision],
    pub escalated_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Approved { by: Vec<String> },
    Denied { by: String, reason: Option<String> },
    Escalated,
    Expired,
}

/// The status the operator should write, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    pub phase: Phase,
    pub approvals: u32,
    pub required: u32,
    pub expires_at: Timestamp,
    pub escalated_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    /// `None` once final.
    pub requeue_at: Option<Timestamp>,
    /// What changed in this step, for an Event and a notification update.
    pub transition: Option<Transition>,
}

impl Next {
    /// `n/m` for the `Approvals` column.
    pub fn approvals_text(&self) -> String {
        format!("{}/{}", self.approvals, self.required)
    }
}

enum Tally {
    Approved(Vec<String>),
    Denied(String, Option<String>),
    Open,
}

/// Counts decisions in arrival order: one per person (their first), none after `deadline`.
/// The first Deny vetoes; reaching the quorum approves.
fn tally(workflow: &Workflow, decisions: &[ApprovalDecision], required: u32, deadline: Timestamp) -> (Tally, u32) {
    let mut seen = BTreeSet::new();
    let mut approved = Vec::new();
    let people = workflow.people();
    for d in decisions {
        if d.time.0 > deadline || !workflow.counts(d) || !seen.insert(people.person(&d.user)) {
            continue;
        }
        match d.decision {
            Verdict::Deny => return (Tally::Denied(d.user.clone(), d.reason.clone()), count(&approved)),
            Verdict::Approve => {
                approved.push(d.user.clone());
                if count(&approved) >= required {
                    let n = count(&approved);
                    return (Tally::Approved(approved), n);
                }
            }
        }
    }
    let n = count(&approved);
    (Tally::Open, n)
}

fn count(v: &[String]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

/// Saturating: a hostile `requestedAt` near the end of time must not panic the operator.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// One step of the phase machine at `now`.
pub fn step(workflow: &Workflow, observed: &Observed<'_>, now: Timestamp) -> Next {
    let mut escalated_at = observed.escalated_at;
    let deadline_for = |escalated_at: Option<Timestamp>| match escalated_at {
        Some(e) => add(e, workflow.timeout),
        None => add(observed.requested_at, workflow.timeout),
    };
    let (_, required) = workflow.in_force(escalated_at.is_some());
    let deadline = deadline_for(escalated_at);

    if observed.phase.is_final() {
        // Decisions after the end change nothing.
        let (_, approvals) = tally(workflow, observed.decisions, required, deadline);
        let resolved_at = observed.resolved_at.or(Some(now));
        return Next { phase: observed.phase, approvals, required, expires_at: deadline, escalated_at, resolved_at, requeue_at: None, transition: None };
    }

    let resolved = |phase, approvals, required, expires_at, escalated_at, transition| Next {
        phase,
        approvals,
        required,
        expires_at,
        escalated_at,
        resolved_at: Some(now),
        requeue_at: None,
        transition: Some(transition),
    };
    let pending = |approvals, required, expires_at, escalated_at, requeue_at, transition| Next {
        phase: Phase::Pending,
        approvals,
        required,
        expires_at,
        escalated_at,
        resolved_at: None,
        requeue_at: Some(requeue_at),
        transition,
    };

    let (t, approvals) = tally(workflow, observed.decisions, required, deadline);
    match t {
        Tally::Denied(by, reason) => {
            return resolved(Phase::Denied, approvals, required, deadline, escalated_at, Transition::Denied { by, reason });
        }
        Tally::Approved(by) => {
            return resolved(Phase::Approved, approvals, required, deadline, escalated_at, Transition::Approved { by });
        }
        Tally::Open => {}
    }

    // One escalation, at its time, if nobody settled the request before.
    let escalates_at = workflow.escalation.as_ref().map(|e| add(observed.requested_at, e.after));
    let mut transition = None;
    if let (Some(at), None) = (escalates_at, escalated_at)
        && now >= at
    {
        escalated_at = Some(now);
        transition = Some(Transition::Escalated);
        let (_, required) = workflow.in_force(true);
        let deadline = deadline_for(escalated_at);
        let (t, approvals) = tally(workflow, observed.decisions, required, deadline);
        if let Tally::Approved(by) = t {
            return resolved(Phase::Approved, approvals, required, deadline, escalated_at, Transition::Approved { by });
        }
        return pending(approvals, required, deadline, escalated_at, deadline, transition);
    }

    if now >= deadline {
        return resolved(Phase::Expired, approvals, required, deadline, escalated_at, Transition::Expired);
    }
    let requeue_at = match (escalates_at, escalated_at) {
        (Some(at), None) => at.min(deadline),
        _ => deadline,
    };
    pending(approvals, required, deadline, escalated_at, requeue_at, transition)
}

/// Why a request ends before any decision could settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyEnd {
    pub reason: &'static str,
    pub message: String,
    /// Announced as a Warning Event (the people who configured it should look).
    pub warning: bool,
}

/// Before [`step`]: `Some(None)` when the request has ended and nothing is to be done (no
/// workflow to step with), `Some(Some(end))` when it is to be cancelled now: its workflow does
/// not exist, or the sidecar that held the call went away (`cancel` says why; the call can
/// never run). `None`: step it.
pub fn ended_early(phase: Phase, workflow: &str, namespace: &str, workflow_exists: bool, cancel: Option<&str>) -> Option<Option<EarlyEnd>> {
    if phase.is_final() {
        return (!workflow_exists).then_some(None);
    }
    if !workflow_exists {
        let message = format!("approval workflow {workflow:?} does not exist in namespace {namespace}");
        return Some(Some(EarlyEnd { reason: "WorkflowNotFound", message, warning: true }));
    }
    cancel.map(|why| Some(EarlyEnd { reason: "Cancelled", message: why.to_owned(), warning: false }))
}

/// A request's `Resolved` condition as [`step`] leaves it: (resolved, reason, message).
pub fn resolved_condition(next: &Next) -> (bool, &'static str, String) {
    match next.phase {
        Phase::Pending if next.escalated_at.is_some() => (false, "Escalated", "escalated; waiting for approvers".to_owned()),
        Phase::Pending => (false, "Pending", format!("waiting for {} more approval(s)", next.required.saturating_sub(next.approvals))),
        Phase::Approved => (true, "Approved", format!("approved ({})", next.approvals_text())),
        Phase::Denied => (true, "Denied", "denied by an approver".to_owned()),
        Phase::Expired => (true, "Expired", "nobody decided in time".to_owned()),
        Phase::Cancelled => (true, "Cancelled", "cancelled".to_owned()),
    }
}

/// The Event a transition is announced with: (reason, note).
pub fn transition_event(t: &Transition) -> (&'static str, String) {
    match t {
        Transition::Approved { by } => ("Approved", format!("approved by {}", by.join(", "))),
        Transition::Denied { by, reason } => ("Denied", format!("denied by {by}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())),
        Transition::Escalated => ("Escalated", "nobody decided in time; escalation approvers asked".to_owned()),
        Transition::Expired => ("Expired", "nobody decided before the deadline".to_owned()),
    }
}

/// Whether a workflow can ever approve anything, as its `Ready` condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    /// Approvers named by user name or Slack member id, escalation included.
    pub named: usize,
    pub groups: usize,
}

/// The API server's schema refuses most unreachable quorums at apply; this also covers the
/// escalation's, and objects stored before the rule.
pub fn readiness(spec: &ApprovalWorkflowSpec) -> Readiness {
    let w = Workflow::from_spec("", spec);
    let all = match &w.escalation {
        Some(e) => w.approvers.union(&e.approvers),
        None => w.approvers.clone(),
    };
    // An AI reader is not counted here even where its decision counts: it may abstain, and the
    // people must be able to reach the quorum on their own for the requests it leaves to them.
    let named = all.users.len() + all.slack_ids.len();
    let groups = all.groups.len();
    let refuse = |reason: &'static str, message: String| Readiness { ready: false, reason, message, named, groups };
    let first_named = w.approvers.users.len() + w.approvers.slack_ids.len();
    if first_named == 0 && w.approvers.groups.is_empty() {
        return refuse("NoApprovers", "no approvers: nobody could ever decide its requests".into());
    }
    if w.approvers.groups.is_empty() && first_named < w.required as usize {
        return refuse("QuorumUnreachable", format!("{} approvals needed but only {first_named} approvers named", w.required));
    }
    if let Some(e) = &w.escalation {
        let required = e.required.unwrap_or(w.required) as usize;
        if all.groups.is_empty() && named < required {
            return refuse("QuorumUnreachable", format!("after escalation {required} approvals needed but only {named} approvers named"));
        }
    }
    let mut message = format!("{named} approvers named, {groups} groups; {} approval(s) needed; requests expire after {}s", w.required, w.timeout.as_secs());
    if let Some(e) = &w.escalation {
        message.push_str(&format!(", escalate after {}s", e.after.as_secs()));
    }
    if let Some(a) = &w.ai {
        message.push_str(if a.counts_toward_quorum { "; an AI first reader counts toward the quorum" } else { "; an AI first reader advises" });
    }
    Readiness { ready: true, reason: "Valid", message, named, groups }
}
