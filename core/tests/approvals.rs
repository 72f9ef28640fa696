//! DESIGN §3.3: the phase machine and the decision-authorization function.
#![allow(clippy::unwrap_used)]

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tollgate_api::{ApprovalDecision, ApprovalRequestStatus, ApprovalWorkflowSpec, Phase, Verdict, Via};
use tollgate_core::approval::authz::{AuthzContext, Caller, WriteRefusal, authorize_status_update};
use tollgate_core::approval::decision::record as new_decision;
use tollgate_core::approval::{Next, Observed, Transition, Workflow, step};

fn t0() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}
fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn workflow(yaml: &str) -> Workflow {
    let spec: ApprovalWorkflowSpec = serde_yaml::from_str(yaml).unwrap();
    Workflow::from_spec("prod-deploy", &spec)
}

const QUORUM2: &str = "approvers: {users: [alice, bob, carol]}\nrequiredApprovals: 2\ntimeoutSeconds: 300";
const ESCALATING: &str = r#"
approvers: {users: [alice]}
timeoutSeconds: 300
escalation: {afterSeconds: 120, approvers: {users: [boss]}, requiredApprovals: 1}
"#;

/// A decision as people write it: a Deny says why.
fn d(user: &str, v: Verdict, secs: i64) -> ApprovalDecision {
    new_decision(user, v, (v == Verdict::Deny).then(|| "not now".into()), Via::Kubectl, at(secs))
}

fn run(w: &Workflow, decisions: &[ApprovalDecision], escalated_at: Option<Timestamp>, now: Timestamp) -> Next {
    step(w, &Observed { requested_at: t0(), phase: Phase::Pending, decisions, escalated_at, resolved_at: None }, now)
}

#[test]
fn quorum_counts_distinct_approvers() {
    let w = workflow(QUORUM2);
    let n = run(&w, &[d("alice", Verdict::Approve, 1)], None, at(2));
    assert_eq!((n.phase, n.approvals_text()), (Phase::Pending, "1/2".into()));
    assert_eq!(n.requeue_at, Some(at(300)));
    assert_eq!(n.expires_at, at(300));
    let n = run(&w, &[d("alice", Verdict::Approve, 1), d("bob", Verdict::Approve, 2)], None, at(3));
    assert_eq!((n.phase, n.approvals_text()), (Phase::Approved, "2/2".into()));
    assert_eq!(n.transition, Some(Transition::Approved { by: vec!["alice".into(), "bob".into()] }));
    assert_eq!(n.requeue_at, None);
}

#[test]
fn duplicate_votes_count_once() {
    let w = workflow(QUORUM2);
    let n = run(&w, &[d("alice", Verdict::Approve, 1), d("alice", Verdict::Approve, 2)], None, at(3));
    assert_eq!((n.phase, n.approvals), (Phase::Pending, 1));
    // A person's later Deny does not override their first decision either.
    let n = run(&w, &[d("alice", Verdict::Approve, 1), d("alice", Verdict::Deny, 2)], None, at(3));
    assert_eq!(n.phase, Phase::Pending);
}

#[test]
fn any_deny_vetoes() {
    let w = workflow(QUORUM2);
    let mut deny = d("carol", Verdict::Deny, 2);
    deny.reason = Some("not during the freeze".into());
    let n = run(&w, &[d("alice", Verdict::Approve, 1), deny], None, at(3));
    assert_eq!(n.phase, Phase::Denied);
    assert_eq!(n.transition, Some(Transition::Denied { by: "carol".into(), reason: Some("not during the freeze".into()) }));
}

#[test]
fn first_terminal_event_wins() {
    let w = workflow(QUORUM2);
    let n = run(&w, &[d("alice", Verdict::Approve, 1), d("bob", Verdict::Approve, 2), d("carol", Verdict::Deny, 3)], None, at(4));
    assert_eq!(n.phase, Phase::Approved);
}

#[test]
fn expiry_at_the_deadline() {
    let w = workflow(QUORUM2);
    let n = run(&w, &[d("alice", Verdict::Approve, 1)], None, at(299));
    assert_eq!(n.phase, Phase::Pending);
    let n = run(&w, &[d("alice", Verdict::Approve, 1)], None, at(300));
    assert_eq!((n.phase, n.transition.clone()), (Phase::Expired, Some(Transition::Expired)));
    assert_eq!(n.resolved_at, Some(at(300)));
}

#[test]
fn decisions_after_the_deadline_are_ignored() {
    let w = workflow(QUORUM2);
    let n = run(&w, &[d("alice", Verdict::Approve, 1), d("bob", Verdict::Approve, 301)], None, at(302));
    assert_eq!(n.phase, Phase::Expired);
}

#[test]
fn late_decisions_after_the_end_change_nothing() {
    let w = workflow(QUORUM2);
    for phase in [Phase::Denied, Phase::Expired, Phase::Cancelled, Phase::Approved] {
        let decisions = [d("alice", Verdict::Approve, 1), d("bob", Verdict::Approve, 2)];
        let obs = Observed { requested_at: t0(), phase, decisions: &decisions, escalated_at: None, resolved_at: Some(at(1)) };
        let n = step(&w, &obs, at(5));
        assert_eq!((n.phase, n.transition, n.requeue_at, n.resolved_at), (phase, None, None, Some(at(1))));
    }
}

#[test]
fn escalates_once_then_expires() {
    let w = workflow(ESCALATING);
    let n = run(&w, &[], None, at(60));
    assert_eq!((n.phase, n.requeue_at), (Phase::Pending, Some(at(120))));
    let n = run(&w, &[], None, at(121));
    assert_eq!((n.phase, n.transition.clone()), (Phase::Pending, Some(Transition::Escalated)));
    assert_eq!(n.escalated_at, Some(at(121)));
    assert_eq!(n.expires_at, at(121 + 300));
    assert_eq!(n.requeue_at, Some(at(421)));
    // Already escalated: no second escalation, expiry at the extended deadline.
    let n = run(&w, &[], Some(at(121)), at(400));
    assert_eq!((n.phase, n.transition.clone()), (Phase::Pending, None));
    let n = run(&w, &[], Some(at(121)), at(421));
    assert_eq!((n.phase, n.transition), (Phase::Expired, Some(Transition::Expired)));
}

#[test]
fn escalation_quorum_applies_after_escalation() {
    let w = workflow("approvers: {users: [a, b]}\nrequiredApprovals: 2\ntimeoutSeconds: 300\nescalation: {approvers: {users: [boss]}, requiredApprovals: 1}");
    let n = run(&w, &[d("a", Verdict::Approve, 1)], None, at(10));
    assert_eq!(n.approvals_text(), "1/2");
    // Escalation defaults to the timeout; the lower quorum then approves at once.
    let n = run(&w, &[d("a", Verdict::Approve, 1)], None, at(300));
    assert_eq!(n.phase, Phase::Approved);
    assert_eq!(n.approvals_text(), "1/1");
}

#[test]
fn hostile_timestamps_do_not_panic() {
    let w = workflow(QUORUM2);
    let obs = Observed { requested_at: Timestamp::MAX, phase: Phase::Pending, decisions: &[], escalated_at: None, resolved_at: None };
    assert_eq!(step(&w, &obs, t0()).phase, Phase::Pending);
}

// --- authorization ---------------------------------------------------------------------------

const OPERATOR: &str = "system:serviceaccount:tollgate-system:tollgate-operator";
const GATEWAY: &str = "system:serviceaccount:tollgate-system:tollgate-gateway";
const AGENT_SA: &str = "system:serviceaccount:team-a:coder";

fn ctx(w: &Workflow) -> AuthzContext<'_> {
    AuthzContext { workflow: w, request_name: "deploy-abc", agent_service_account: AGENT_SA, operator: OPERATOR, slack_relay: GATEWAY, now: at(10) }
}

fn pending(decisions: Vec<ApprovalDecision>) -> ApprovalRequestStatus {
    ApprovalRequestStatus { phase: Some(Phase::Pending), approvals: Some("0/2".into()), expires_at: Some(Time(at(300))), decisions, ..Default::default() }
}

fn with(old: &ApprovalRequestStatus, decision: ApprovalDecision) -> ApprovalRequestStatus {
    let mut new = old.clone();
    new.decisions.push(decision);
    new
}

fn check(w: &Workflow, old: &ApprovalRequestStatus, new: &ApprovalRequestStatus, user: &str, groups: &[&str]) -> Result<(), WriteRefusal> {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    authorize_status_update(old, new, &Caller { username: user, groups: &groups }, &ctx(w))
}

#[test]
fn an_approver_may_append_their_own_decision() {
    let w = workflow("approvers: {users: [alice], groups: [sre]}\nrequiredApprovals: 2");
    let old = pending(vec![]);
    assert_eq!(check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), "alice", &[]), Ok(()));
    assert_eq!(check(&w, &old, &with(&old, d("dave", Verdict::Deny, 10)), "dave", &["sre"]), Ok(()));
}

#[test]
fn a_deny_without_a_reason_is_refused_whoever_writes_it() {
    use tollgate_core::approval::decision::ReasonProblem;
    let w = workflow("approvers: {users: [alice], slack: {userIds: [U123]}}");
    let old = pending(vec![]);
    let bare = |user: &str, via| new_decision(user, Verdict::Deny, Some("  ".into()), via, at(10));
    let refused = check(&w, &old, &with(&old, bare("alice", Via::Kubectl)), "alice", &[]);
    assert_eq!(refused, Err(WriteRefusal::Reason(ReasonProblem::DenyWithoutReason)));
    assert_eq!(refused.unwrap_err().to_string(), "a Deny must say why: give a reason (--reason)");
    // Relayed from Slack by the gateway: the same rule.
    let slack = check(&w, &old, &with(&old, bare("slack:U123", Via::Slack)), "system:serviceaccount:tollgate-system:tollgate-gateway", &[]);
    assert_eq!(slack, Err(WriteRefusal::Reason(ReasonProblem::DenyWithoutReason)));
}

#[test]
fn forgeries_are_refused() {
    let w = workflow("approvers: {users: [alice, bob], slack: {userIds: [U123]}}\nrequiredApprovals: 2");
    let old = pending(vec![d("alice", Verdict::Approve, 5)]);
    type Case<'a> = (&'a str, ApprovalRequestStatus, &'a str, fn(&WriteRefusal) -> bool);
    let cases: Vec<Case> = vec![
        ("outsider approving", with(&old, d("mallory", Verdict::Approve, 10)), "mallory", |r| matches!(r, WriteRefusal::NotApprover { .. })),
        ("in someone else's name", with(&old, d("bob", Verdict::Approve, 10)), "alice", |r| matches!(r, WriteRefusal::Impersonation { .. })),
        ("voting twice", with(&old, d("alice", Verdict::Approve, 10)), "alice", |r| matches!(r, WriteRefusal::DuplicateVote { .. })),
        ("agent's service account", with(&old, d(AGENT_SA, Verdict::Approve, 10)), AGENT_SA, |r| matches!(r, WriteRefusal::SelfApproval { .. })),
        ("editing an earlier decision", pending(vec![d("alice", Verdict::Deny, 5)]), "alice", |r| matches!(r, WriteRefusal::EditedEarlierDecision)),
        ("removing a decision", pending(vec![]), "bob", |r| matches!(r, WriteRefusal::EditedEarlierDecision)),
        ("slack without the gateway", with(&old, ApprovalDecision { via: Via::Slack, ..d("slack:U123", Verdict::Approve, 10) }), "bob", |r| {
            matches!(r, WriteRefusal::SlackRelayOnly)
        }),
        ("clock skew", with(&old, d("bob", Verdict::Approve, 10_000)), "bob", |r| matches!(r, WriteRefusal::ClockSkew { .. })),
        ("two at once", with(&with(&old, d("bob", Verdict::Approve, 10)), d("carol", Verdict::Approve, 10)), "bob", |r| {
            matches!(r, WriteRefusal::SeveralDecisions)
        }),
    ];
    for (name, new, caller, want) in cases {
        let got = check(&w, &old, &new, caller, &[]);
        match got {
            Err(ref r) if want(r) => {}
            other => panic!("{name}: got {other:?}"),
        }
    }
}

#[test]
fn the_agent_service_account_cannot_approve_even_when_listed() {
    let w = workflow(&format!("approvers: {{users: [{AGENT_SA:?}]}}"));
    let old = pending(vec![]);
    let r = check(&w, &old, &with(&old, d(AGENT_SA, Verdict::Approve, 10)), AGENT_SA, &[]);
    assert!(matches!(r, Err(WriteRefusal::SelfApproval { .. })), "{r:?}");
}

#[test]
fn only_the_operator_changes_phase() {
    let w = workflow(QUORUM2);
    let old = pending(vec![]);
    let mut new = old.clone();
    new.phase = Some(Phase::Approved);
    assert_eq!(check(&w, &old, &new, "alice", &[]), Err(WriteRefusal::OperatorField { field: "phase" }));
    assert_eq!(check(&w, &old, &new, OPERATOR, &[]), Ok(()));
    // Even the operator cannot rewrite decisions.
    let old = pending(vec![d("alice", Verdict::Approve, 1)]);
    assert_eq!(check(&w, &old, &pending(vec![]), OPERATOR, &[]), Err(WriteRefusal::EditedEarlierDecision));
}

#[test]
fn no_decisions_after_the_end_or_after_expiry() {
    let w = workflow(QUORUM2);
    let mut old = pending(vec![]);
    old.phase = Some(Phase::Expired);
    let r = check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), "alice", &[]);
    assert!(matches!(r, Err(WriteRefusal::NotPending { phase: Phase::Expired, .. })), "{r:?}");
    // Still Pending because the operator has not caught up, but past expiresAt.
    let mut old = pending(vec![]);
    old.expires_at = Some(Time(at(5)));
    let r = check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), "alice", &[]);
    assert!(matches!(r, Err(WriteRefusal::Expired { .. })), "{r:?}");
}

#[test]
fn slack_decisions_relayed_by_the_gateway() {
    let w = workflow("approvers: {users: [alice], slack: {userIds: [U123]}}");
    let old = pending(vec![]);
    let slack = |user: &str| ApprovalDecision { via: Via::Slack, ..d(user, Verdict::Approve, 10) };
    assert_eq!(check(&w, &old, &with(&old, slack("slack:U123")), GATEWAY, &[]), Ok(()));
    assert!(matches!(check(&w, &old, &with(&old, slack("slack:U999")), GATEWAY, &[]), Err(WriteRefusal::NotApprover { .. })));
    // The gateway may not decide as a Kubernetes user.
    assert!(matches!(check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), GATEWAY, &[]), Err(WriteRefusal::Impersonation { .. })));
}

/// One person listed both as a Kubernetes user and as a Slack member votes once, whichever way
/// they decide: their click and their `kubectl approve` cannot make a quorum of two alone.
#[test]
fn a_person_both_in_kubernetes_and_slack_votes_once() {
    let w = workflow("approvers: {users: [alice, bob], slack: {userIds: [U123], kubernetesUsers: {U123: alice}}}\nrequiredApprovals: 2");
    let slack = |user: &str, secs| ApprovalDecision { via: Via::Slack, ..d(user, Verdict::Approve, secs) };
    let old = pending(vec![d("alice", Verdict::Approve, 1)]);
    let r = check(&w, &old, &with(&old, slack("slack:U123", 10)), GATEWAY, &[]);
    assert!(matches!(r, Err(WriteRefusal::DuplicateVote { .. })), "{r:?}");
    let clicked = pending(vec![slack("slack:U123", 1)]);
    let r = check(&w, &clicked, &with(&clicked, d("alice", Verdict::Approve, 10)), "alice", &[]);
    assert!(matches!(r, Err(WriteRefusal::DuplicateVote { .. })), "{r:?}");
    // And the tally counts them once, whatever was stored.
    let n = run(&w, &[d("alice", Verdict::Approve, 1), slack("slack:U123", 2)], None, at(3));
    assert_eq!((n.phase, n.approvals), (Phase::Pending, 1));
    let n = run(&w, &[d("alice", Verdict::Approve, 1), slack("slack:U123", 2), d("bob", Verdict::Approve, 3)], None, at(4));
    assert_eq!(n.phase, Phase::Approved);
}

#[test]
fn escalation_approvers_only_after_escalation() {
    let w = workflow(ESCALATING);
    let old = pending(vec![]);
    assert!(matches!(check(&w, &old, &with(&old, d("boss", Verdict::Approve, 10)), "boss", &[]), Err(WriteRefusal::NotApprover { .. })));
    let mut escalated = old.clone();
    escalated.escalated_at = Some(Time(at(5)));
    assert_eq!(check(&w, &escalated, &with(&escalated, d("boss", Verdict::Approve, 10)), "boss", &[]), Ok(()));
}

#[test]
fn require_reason() {
    let w = workflow("approvers: {users: [alice]}\nrequireReason: true");
    let old = pending(vec![]);
    assert!(matches!(
        check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), "alice", &[]),
        Err(WriteRefusal::Reason(tollgate_core::approval::decision::ReasonProblem::Required { .. }))
    ));
    let mut dec = d("alice", Verdict::Approve, 10);
    dec.reason = Some("looks right".into());
    assert_eq!(check(&w, &old, &with(&old, dec), "alice", &[]), Ok(()));
}

#[test]
fn refusals_read_as_plain_words() {
    let r = WriteRefusal::NotApprover { user: "bob".into(), workflow: "prod-deploy".into() };
    assert_eq!(r.to_string(), "you (bob) are not an approver of workflow prod-deploy");
}

#[test]
fn a_workflow_is_ready_only_when_its_quorum_can_be_reached() {
    use tollgate_core::approval::readiness;
    let spec = |v: serde_json::Value| -> tollgate_api::ApprovalWorkflowSpec { serde_json::from_value(v).unwrap() };
    let ok = readiness(&spec(serde_json::json!({"approvers": {"users": ["a", "b"], "slack": {"userIds": ["U1"]}}, "requiredApprovals": 2})));
    assert!(ok.ready, "{ok:?}");
    assert_eq!((ok.reason, ok.named, ok.groups), ("Valid", 3, 0));
    assert!(ok.message.contains("2 approval(s) needed"), "{}", ok.message);
    let groups = readiness(&spec(serde_json::json!({"approvers": {"groups": ["sre"]}, "requiredApprovals": 3})));
    assert!(groups.ready, "members of a group may be many: {groups:?}");
    let none = readiness(&spec(serde_json::json!({"approvers": {}})));
    assert_eq!((none.ready, none.reason), (false, "NoApprovers"));
    let short = readiness(&spec(serde_json::json!({"approvers": {"users": ["a"]}, "requiredApprovals": 2})));
    assert_eq!((short.ready, short.reason), (false, "QuorumUnreachable"));
    let escalation =
        readiness(&spec(serde_json::json!({"approvers": {"users": ["a"]}, "escalation": {"approvers": {"users": ["a"]}, "requiredApprovals": 2}})));
    assert_eq!((escalation.ready, escalation.reason), (false, "QuorumUnreachable"), "{escalation:?}");
    let escalates = readiness(&spec(
        serde_json::json!({"approvers": {"users": ["a"]}, "timeoutSeconds": 600, "escalation": {"afterSeconds": 60, "approvers": {"users": ["b"]}}}),
    ));
    assert!(escalates.ready && escalates.message.contains("escalate after 60s"), "{escalates:?}");
}

const AI_ADVISORY: &str = "approvers: {users: [alice], ai: {agent: reviewer, model: m, instructions: i}}\nrequiredApprovals: 1";
const AI_COUNTS: &str = "approvers: {users: [alice], ai: {agent: reviewer, model: m, instructions: i, countsTowardQuorum: true}}\nrequiredApprovals: 2";

fn ai(v: Verdict, secs: i64) -> ApprovalDecision {
    new_decision("ai:prod-deploy", v, Some("r".into()), Via::Ai, at(secs))
}

#[test]
fn an_advisory_ai_reader_neither_approves_nor_vetoes() {
    let w = workflow(AI_ADVISORY);
    let n = run(&w, &[ai(Verdict::Approve, 1)], None, at(2));
    assert_eq!((n.phase, n.approvals), (Phase::Pending, 0), "advice only");
    let n = run(&w, &[ai(Verdict::Deny, 1)], None, at(2));
    assert_eq!(n.phase, Phase::Pending, "its deny is advice too");
    let n = run(&w, &[ai(Verdict::Deny, 1), d("alice", Verdict::Approve, 2)], None, at(3));
    assert_eq!(n.phase, Phase::Approved, "the people decide");
}

#[test]
fn an_ai_reader_that_counts_is_one_of_the_quorum() {
    let w = workflow(AI_COUNTS);
    let n = run(&w, &[ai(Verdict::Approve, 1)], None, at(2));
    assert_eq!((n.phase, n.approvals_text()), (Phase::Pending, "1/2".into()));
    let n = run(&w, &[ai(Verdict::Approve, 1), d("alice", Verdict::Approve, 2)], None, at(3));
    assert_eq!(n.phase, Phase::Approved);
    let n = run(&w, &[ai(Verdict::Deny, 1)], None, at(2));
    assert_eq!(n.phase, Phase::Denied);
    // Another workflow's reader counts for nothing here.
    let other = new_decision("ai:other", Verdict::Approve, None, Via::Ai, at(1));
    assert_eq!(run(&w, &[other], None, at(2)).approvals, 0);
}

#[test]
fn only_the_operator_records_the_ai_reader_once_while_pending() {
    let w = workflow(AI_ADVISORY);
    let old = pending(vec![]);
    assert_eq!(check(&w, &old, &with(&old, ai(Verdict::Approve, 10)), OPERATOR, &[]), Ok(()));
    // Nobody else, whatever they claim.
    assert_eq!(check(&w, &old, &with(&old, ai(Verdict::Approve, 10)), "alice", &[]), Err(WriteRefusal::AiOperatorOnly));
    let named = new_decision("ai:prod-deploy", Verdict::Approve, None, Via::Kubectl, at(10));
    assert_eq!(check(&w, &old, &with(&old, named), "ai:prod-deploy", &[]), Err(WriteRefusal::AiOperatorOnly));
    // Once, while pending, and only for a workflow that has a reader.
    let told = pending(vec![ai(Verdict::Approve, 5)]);
    assert!(matches!(check(&w, &told, &with(&told, ai(Verdict::Deny, 10)), OPERATOR, &[]), Err(WriteRefusal::DuplicateVote { .. })));
    let mut done = pending(vec![]);
    done.phase = Some(Phase::Denied);
    assert!(matches!(check(&w, &done, &with(&done, ai(Verdict::Approve, 10)), OPERATOR, &[]), Err(WriteRefusal::NotPending { .. })));
    let plain = workflow(QUORUM2);
    assert!(matches!(check(&plain, &old, &with(&old, ai(Verdict::Approve, 10)), OPERATOR, &[]), Err(WriteRefusal::Impersonation { .. })));
    // The operator still decides nothing in anyone else's name.
    assert!(matches!(check(&w, &old, &with(&old, d("alice", Verdict::Approve, 10)), OPERATOR, &[]), Err(WriteRefusal::Impersonation { .. })));
}

#[test]
fn a_request_ends_early_only_while_it_could_still_be_decided() {
    use tollgate_core::approval::{EarlyEnd, ended_early};
    // Its workflow gone: cancelled with a warning, unless it already ended.
    let gone = ended_early(Phase::Pending, "ops", "team-a", false, None);
    assert_eq!(
        gone,
        Some(Some(EarlyEnd { reason: "WorkflowNotFound", message: "approval workflow \"ops\" does not exist in namespace team-a".into(), warning: true }))
    );
    assert_eq!(ended_early(Phase::Approved, "ops", "team-a", false, None), Some(None), "an ended request is left alone");
    // The sidecar that held the call went away: cancelled, saying why.
    let why = "the sidecar that held this call stopped";
    assert_eq!(ended_early(Phase::Pending, "ops", "team-a", true, Some(why)).flatten().map(|e| (e.reason, e.message)), Some(("Cancelled", why.to_owned())));
    assert_eq!(ended_early(Phase::Denied, "ops", "team-a", true, Some(why)), None, "after the end the annotation changes nothing");
    assert_eq!(ended_early(Phase::Pending, "ops", "team-a", true, None), None);
}

#[test]
fn the_resolved_condition_and_the_events_tell_the_story() {
    use tollgate_core::approval::{resolved_condition, transition_event};
    let w = workflow(QUORUM2);
    let next = run(&w, &[d("alice", Verdict::Approve, 10)], None, at(20));
    assert_eq!(resolved_condition(&next), (false, "Pending", "waiting for 1 more approval(s)".to_owned()));
    let next = run(&w, &[d("alice", Verdict::Approve, 10), d("bob", Verdict::Deny, 11)], None, at(20));
    assert_eq!(resolved_condition(&next).1, "Denied");
    let t = next.transition.expect("a transition");
    assert_eq!(transition_event(&t), ("Denied", "denied by bob: not now".to_owned()));
}

#[test]
fn without_its_workflow_a_request_takes_only_the_operators_closing_write() {
    use tollgate_core::approval::authz::without_workflow;
    assert_eq!(without_workflow(OPERATOR, OPERATOR, "ops", "team-a"), Ok(()));
    let refused = without_workflow("alice", OPERATOR, "ops", "team-a").unwrap_err();
    assert_eq!(refused.to_string(), "approval workflow \"ops\" does not exist in namespace team-a");
}
