//! Who may write what to an `ApprovalRequest`'s status (DESIGN §3.3). The operator's validating
//! webhook calls [`authorize_status_update`] with the caller the API server authenticated.

use crate::approval::{SLACK_USER_PREFIX, Workflow};
use jiff::{SignedDuration, Timestamp};
use tollgate_api::{ApprovalRequestStatus, Phase, Via};

/// How far a decision's `time` may be from the API server's clock.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(120);

/// The caller, as in the admission request's `userInfo`.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

#[derive(Debug, Clone)]
pub struct AuthzContext<'a> {
    pub workflow: &'a Workflow,
    pub request_name: &'a str,
    /// `system:serviceaccount:<ns>:<name>` of the agent that made the call.
    pub agent_service_account: &'a str,
    /// The operator's identity: the only one that may change `phase` and the bookkeeping fields.
    pub operator: &'a str,
    /// The gateway's identity: the only one that may write Slack decisions, after it verified the
    /// click's signature.
    pub slack_relay: &'a str,
    pub now: Timestamp,
}

/// Why a status write was refused. The messages speak to the person who ran the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("earlier decisions cannot be changed or removed; decisions are append-only")]
    EditedEarlierDecision,
    #[error("only the Tollgate operator may change status.{field}; approvers only append a decision")]
    OperatorField { field: &'static str },
    #[error("append one decision at a time")]
    SeveralDecisions,
    #[error("request {request} is already {phase}; it no longer takes decisions")]
    NotPending { request: String, phase: Phase },
    #[error("request {request} expired at {expired_at}; it no longer takes decisions")]
    Expired { request: String, expired_at: Timestamp },
    #[error("you are {caller}, but the decision is written in the name of {claimed}: decide only in your own name")]
    Impersonation { caller: String, claimed: String },
    #[error("only the Tollgate gateway may record decisions made in Slack")]
    SlackRelayOnly,
    #[error("only the Tollgate operator records the AI first reader's decisions (via: ai, users ai:<workflow>)")]
    AiOperatorOnly,
    #[error("{caller} is the agent's own service account and may not decide its own requests")]
    SelfApproval { caller: String },
    #[error("you ({user}) are not an approver of workflow {workflow}")]
    NotApprover { user: String, workflow: String },
    #[error("{user} has already decided on {request}; one decision per person")]
    DuplicateVote { user: String, request: String },
    #[error("{0} (--reason)")]
    Reason(#[from] crate::approval::decision::ReasonProblem),
    #[error("approval workflow {workflow:?} does not exist in namespace {namespace}")]
    NoWorkflow { workflow: String, namespace: String },
    #[error("the decision's time {time} is more than {skew} seconds from the server's clock {now}")]
    ClockSkew { time: Timestamp, now: Timestamp, skew: i64 },
}

/// A status write to a request whose workflow does not exist: only the operator may make it
/// (it closes the request), and nobody may decide on it.
pub fn without_workflow(caller: &str, operator: &str, workflow: &str, namespace: &str) -> Result<(), WriteRefusal> {
    if caller == operator { Ok(()) } else { Err(WriteRefusal::NoWorkflow { workflow: workflow.to_owned(), namespace: namespace.to_owned() }) }
}

/// Admits a status update from `old` to `new` by `caller`, or says why not.
pub fn authorize_status_update(
    old: &ApprovalRequestStatus,
    new: &ApprovalRequestStatus,
    caller: &Caller<'_>,
    ctx: &AuthzContext<'_>,
) -> Result<(), WriteRefusal> {
    // Append-only holds for everyone, the operator included.
    if new.decisions.len() < old.decisions.len() || new.decisions[..old.decisions.len()] != old.decisions[..] {
        return Err(WriteRefusal::EditedEarlierDecision);
    }
    let added = &new.decisions[old.decisions.len()..];
    let ai_user = crate::approval::ai_review::user(&ctx.workflow.name);
    if caller.username == ctx.operator {
        // The operator decides nothing itself; it records the workflow's AI first reader, once,
        // while the request is pending.
        return match added {
            [] => Ok(()),
            [d] if d.user == ai_user && d.via == Via::Ai && ctx.workflow.ai.is_some() => {
                if old.decisions.iter().any(|x| x.user == ai_user) {
                    Err(WriteRefusal::DuplicateVote { user: ai_user, request: ctx.request_name.to_owned() })
                } else if old.phase.unwrap_or_default().is_final() {
                    Err(WriteRefusal::NotPending { request: ctx.request_name.to_owned(), phase: old.phase.unwrap_or_default() })
                } else {
                    Ok(())
                }
            }
            [d, ..] => Err(WriteRefusal::Impersonation { caller: caller.username.to_owned(), claimed: d.user.clone() }),
        };
    }

    if let Some(field) = changed_operator_field(old, new) {
        return Err(WriteRefusal::OperatorField { field });
    }
    let [decision] = added else {
        return if added.is_empty() { Ok(()) } else { Err(WriteRefusal::SeveralDecisions) };
    };

    let phase = old.phase.unwrap_or_default();
    if phase.is_final() {
        return Err(WriteRefusal::NotPending { request: ctx.request_name.to_owned(), phase });
    }
    if let Some(expires) = &old.expires_at
        && ctx.now >= expires.0
    {
        return Err(WriteRefusal::Expired { request: ctx.request_name.to_owned(), expired_at: expires.0 });
    }

    if decision.via == Via::Ai || decision.user.starts_with(crate::approval::ai_review::AI_USER_PREFIX) {
        return Err(WriteRefusal::AiOperatorOnly);
    }
    // The deciding identity: the caller, or a Slack member relayed by the gateway.
    let relayed = decision.via == Via::Slack;
    if relayed && caller.username != ctx.slack_relay {
        return Err(WriteRefusal::SlackRelayOnly);
    }
    let identity_ok = if relayed { decision.user.starts_with(SLACK_USER_PREFIX) } else { decision.user == caller.username };
    if !identity_ok {
        return Err(WriteRefusal::Impersonation { caller: caller.username.to_owned(), claimed: decision.user.clone() });
    }
    if caller.username == ctx.agent_service_account || decision.user == ctx.agent_service_account {
        return Err(WriteRefusal::SelfApproval { caller: caller.username.to_owned() });
    }
    let groups: &[String] = if relayed { &[] } else { caller.groups };
    let (approvers, _) = ctx.workflow.in_force(old.escalated_at.is_some());
    if !approvers.admits(&decision.user, groups) {
        return Err(WriteRefusal::NotApprover { user: decision.user.clone(), workflow: ctx.workflow.name.clone() });
    }
    let people = ctx.workflow.in_force(true).0;
    if old.decisions.iter().any(|d| people.person(&d.user) == people.person(&decision.user)) {
        return Err(WriteRefusal::DuplicateVote { user: decision.user.clone(), request: ctx.request_name.to_owned() });
    }
    // The same rule `kubectl approve` and Slack applied before writing: a Deny says why.
    crate::approval::decision::checked_reason(decision.decision, decision.reason.as_deref(), &ctx.workflow.name, ctx.workflow.require_reason)?;
    let skew = decision.time.0.duration_since(ctx.now).abs();
    if skew > MAX_CLOCK_SKEW {
        return Err(WriteRefusal::ClockSkew { time: decision.time.0, now: ctx.now, skew: MAX_CLOCK_SKEW.as_secs() });
    }
    Ok(())
}

fn changed_operator_field(old: &ApprovalRequestStatus, new: &ApprovalRequestStatus) -> Option<&'static str> {
    if old.phase != new.phase {
        Some("phase")
    } else if old.approvals != new.approvals {
        Some("approvals")
    } else if old.expires_at != new.expires_at {
        Some("expiresAt")
    } else if old.escalated_at != new.escalated_at {
        Some("escalatedAt")
    } else if old.resolved_at != new.resolved_at {
        Some("resolvedAt")
    } else if old.notifications != new.notifications {
        Some("notifications")
    } else if old.conditions != new.conditions {
        Some("conditions")
    } else if old.observed_generation != new.observed_generation {
        Some("observedGeneration")
    } else {
        None
    }
}
