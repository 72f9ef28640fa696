//! What the browser page shows of a request: pure functions from the object (and the caller,
//! the workflow when it could be read, `now`) to display strings. Everything the agent wrote
//! arrives here and leaves as plain text: HTML escaping is the templates' job (they escape by
//! default); this module neutralises what escaping cannot: control and bidirectional/invisible
//! characters (spelled out as `\u{…}`), look-alike letters in names (spelled out and flagged),
//! credentials (redacted as everywhere), and sheer size (long values folded).

use jiff::Timestamp;
use serde_json::Value;
use tollgate_api::{ApprovalRequest, Phase, Verdict, Via};
use tollgate_core::approval::Workflow;
use tollgate_core::audit::redact::{redact, redact_str};

use super::super::format::{self, safe};

/// Characters of a string value shown before it is folded.
const FOLD_AT: usize = 240;
/// Characters of the whole arguments document shown before the rest is folded.
const MAX_ARGUMENTS_SHOWN: usize = 20_000;
const NONE: &str = "—";
/// Characters of a justification in the inbox's table.
const JUSTIFICATION_SHORT: usize = 80;

/// A name the agent chose (tool, server, agent, …). Non-ASCII letters are spelled out: an
/// approver reading `dеploy` with a Cyrillic `е` must not take it for `deploy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub lookalike: bool,
}

pub fn name(s: &str) -> Name {
    if s.is_ascii() {
        return Name { text: safe(s, false).into_owned(), lookalike: false };
    }
    let text = s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c.to_string() } else { format!("\\u{{{:x}}}", u32::from(c)) }).collect();
    Name { text, lookalike: true }
}

/// Free text the agent wrote (justification, message): credentials redacted, control and
/// format characters spelled out, line breaks kept.
pub fn text(s: &str) -> String {
    safe(&redact_str(s), true).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arguments {
    /// Pretty JSON, each long string cut at [`FOLD_AT`] characters.
    pub folded: String,
    /// The whole document, when folding hid something.
    pub full: Option<String>,
}

fn fold_value(v: &Value, folded_any: &mut bool) -> Value {
    match v {
        Value::String(s) if s.chars().count() > FOLD_AT => {
            *folded_any = true;
            let rest = s.chars().count() - FOLD_AT;
            Value::String(format!("{}… ({rest} more characters)", s.chars().take(FOLD_AT).collect::<String>()))
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| fold_value(i, folded_any)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fold_value(v, folded_any))).collect()),
        other => other.clone(),
    }
}

fn capped(s: String) -> String {
    if s.chars().count() <= MAX_ARGUMENTS_SHOWN {
        return s;
    }
    let rest = s.chars().count() - MAX_ARGUMENTS_SHOWN;
    format!("{}\n… ({rest} more characters not shown; `kubectl approve show` prints them all)", s.chars().take(MAX_ARGUMENTS_SHOWN).collect::<String>())
}

pub fn arguments(args: Option<&Value>) -> Arguments {
    let Some(args) = args else {
        return Arguments { folded: NONE.into(), full: None };
    };
    let redacted = redact(args);
    let pretty = |v: &Value| safe(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()), true).into_owned();
    let mut folded_any = false;
    let folded = fold_value(&redacted, &mut folded_any);
    Arguments { folded: capped(pretty(&folded)), full: folded_any.then(|| capped(pretty(&redacted))) }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionView {
    pub user: Name,
    pub verdict: &'static str,
    pub via: String,
    pub time: String,
    pub reason: String,
}

fn via(v: Via) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn decisions(ar: &ApprovalRequest) -> Vec<DecisionView> {
    let Some(status) = &ar.status else {
        return Vec::new();
    };
    status
        .decisions
        .iter()
        .map(|d| DecisionView {
            user: name(&d.user),
            verdict: format::verdict(d.decision),
            via: via(d.via),
            time: format::rfc3339(&d.time),
            reason: d.reason.as_deref().map_or_else(|| NONE.into(), text),
        })
        .collect()
}

/// What the caller may do with the request, as far as the page can tell; the API server's
/// admission chain has the last word on every decision either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    MayDecide { reason_required_to_approve: bool },
    Closed(String),
}

/// The caller: their user name and groups as the API server authenticated them.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

pub fn standing(ar: &ApprovalRequest, caller: &Caller, workflow: Option<&Workflow>, now: Timestamp) -> Standing {
    if let Err(why) = super::super::patch::precheck(ar, None, &caller.user) {
        return Standing::Closed(why);
    }
    if let Some(t) = ar.status.as_ref().and_then(|s| s.expires_at.as_ref())
        && t.0 <= now
    {
        return Standing::Closed(format!("{} expired at {}; it no longer takes decisions", format::qualified_name(ar), format::rfc3339(t)));
    }
    let Some(wf) = workflow else {
        return Standing::MayDecide { reason_required_to_approve: false };
    };
    let escalated = ar.status.as_ref().is_some_and(|s| s.escalated_at.is_some());
    if !wf.in_force(escalated).0.admits(&caller.user, &caller.groups) {
        return Standing::Closed(format!("you ({}) are not an approver of workflow {}", caller.user, wf.name));
    }
    Standing::MayDecide { reason_required_to_approve: wf.require_reason }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    pub namespace: String,
    pub name: String,
    /// The decision form names the request by it too: the name alone could be reused.
    pub uid: String,
    pub tool: Name,
    pub server: Name,
    pub agent: Name,
    pub service_account: Name,
    pub pod: Name,
    pub workflow: Name,
    pub policy: String,
    pub message: String,
    pub justification: String,
    pub arguments: Arguments,
    pub phase: String,
    pub pending: bool,
    pub approvals: String,
    pub decisions: Vec<DecisionView>,
    /// RFC 3339, for the page's live countdown; empty when unknown or no longer pending.
    pub expires_at: String,
    pub time_left: String,
    pub requested: String,
    pub standing: Standing,
}

pub fn request(ar: &ApprovalRequest, caller: &Caller, workflow: Option<&Workflow>, now: Timestamp) -> RequestView {
    let spec = &ar.spec;
    let phase = format::phase(ar);
    let status = ar.status.as_ref();
    let pending = phase == Phase::Pending;
    let expires = status.and_then(|s| s.expires_at.as_ref()).filter(|_| pending);
    RequestView {
        namespace: ar.metadata.namespace.clone().unwrap_or_default(),
        name: ar.metadata.name.clone().unwrap_or_default(),
        uid: ar.metadata.uid.clone().unwrap_or_default(),
        tool: name(&spec.tool),
        server: name(&spec.server),
        agent: name(&spec.agent),
        service_account: name(&spec.service_account),
        pod: name(spec.pod.as_deref().unwrap_or(NONE)),
        workflow: name(&spec.workflow),
        policy: text(&policy(ar)),
        message: spec.message.as_deref().map_or_else(|| NONE.into(), text),
        justification: spec.justification.as_deref().map_or_else(|| NONE.into(), text),
        arguments: arguments(spec.arguments.as_ref()),
        phase: phase.to_string(),
        pending,
        approvals: status.and_then(|s| s.approvals.clone()).unwrap_or_else(|| NONE.into()),
        decisions: decisions(ar),
        expires_at: expires.map(format::rfc3339).unwrap_or_default(),
        time_left: format::expires_column(ar, now),
        requested: format::rfc3339(&spec.requested_at),
        standing: standing(ar, caller, workflow, now),
    }
}

fn policy(ar: &ApprovalRequest) -> String {
    let Some(p) = &ar.spec.policy else {
        return NONE.into();
    };
    let kind = match p.kind {
        tollgate_api::PolicyKind::ToolPolicy => "ToolPolicy",
        tollgate_api::PolicyKind::ClusterToolPolicy => "ClusterToolPolicy",
    };
    let name = p.namespace.as_ref().map_or_else(|| p.name.clone(), |ns| format!("{ns}/{}", p.name));
    match &ar.spec.rule {
        Some(rule) => format!("{kind} {name}, rule {rule}"),
        None => format!("{kind} {name}"),
    }
}

/// A row of the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub tool: Name,
    pub server: Name,
    pub agent: Name,
    pub approvals: String,
    pub expires_at: String,
    pub time_left: String,
    pub justification_short: String,
    pub why_not: String,
}

/// The inbox: pending requests the caller may decide, and those they may not (and why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub error: Option<String>,
    pub mine: Vec<Row>,
    pub others: Vec<Row>,
}

/// The inbox of `caller` among `items`, oldest first (the one closest to expiring on top);
/// `workflow` finds a request's workflow when the caller may read it.
pub fn inbox(items: &[ApprovalRequest], caller: &Caller, workflow: impl Fn(&ApprovalRequest) -> Option<Workflow>, now: Timestamp) -> Rows {
    let mut pending: Vec<&ApprovalRequest> = items.iter().filter(|ar| format::phase(ar) == Phase::Pending).collect();
    pending.sort_by_key(|ar| (ar.spec.requested_at.0, format::qualified_name(ar)));
    let mut rows = Rows::default();
    for ar in pending {
        let v = request(ar, caller, workflow(ar).as_ref(), now);
        let why_not = match &v.standing {
            Standing::MayDecide { .. } => String::new(),
            Standing::Closed(why) => why.clone(),
        };
        let row = Row {
            justification_short: ar.spec.justification.as_deref().map_or_else(|| NONE.into(), |j| format::truncate(&redact_str(j), JUSTIFICATION_SHORT)),
            namespace: v.namespace,
            name: v.name,
            tool: v.tool,
            server: v.server,
            agent: v.agent,
            approvals: v.approvals,
            expires_at: v.expires_at,
            time_left: v.time_left,
            why_not: why_not.clone(),
        };
        if why_not.is_empty() { rows.mine.push(row) } else { rows.others.push(row) }
    }
    rows
}

/// A DNS-1123 subdomain, as namespaces and ApprovalRequest names are.
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The verdict a form field names.
pub fn verdict(field: &str) -> Option<Verdict> {
    match field {
        "approve" => Some(Verdict::Approve),
        "deny" => Some(Verdict::Deny),
        _ => None,
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
