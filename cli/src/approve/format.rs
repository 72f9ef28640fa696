//! What `kubectl approve` prints: tables, the human view of one request, watch lines, relative
//! times. Pure functions of the objects and `now`, so they are tested without a cluster.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tollgate_api::{ApprovalRequest, Phase, PolicyKind, Verdict};

const NONE: &str = "<none>";
const JUSTIFICATION_WIDE: usize = 40;
const JUSTIFICATION_WATCH: usize = 80;

/// `namespace/name`.
pub fn qualified_name(ar: &ApprovalRequest) -> String {
    format!("{}/{}", ar.metadata.namespace.as_deref().unwrap_or_default(), ar.metadata.name.as_deref().unwrap_or_default())
}

/// A request with no phase yet is pending: the operator has not seen it.
pub fn phase(ar: &ApprovalRequest) -> Phase {
    ar.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

/// kubectl's `HumanDuration`, as in its AGE column: coarser the older it gets.
pub fn age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let (minutes, hours) = (s / 60, s / 3600);
    let with = |big: i64, bu: &str, small: i64, su: &str| {
        if small == 0 { format!("{big}{bu}") } else { format!("{big}{bu}{small}{su}") }
    };
    match () {
        _ if minutes < 10 => with(minutes, "m", s % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", (hours / 24) % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

/// A countdown precise enough to act on: `42s`, `4m12s`, `1h3m`, `2d3h`.
pub fn countdown(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The EXPIRES column: `in 4m12s`, `expired`, or `-` once the request is resolved otherwise.
pub fn expires_column(ar: &ApprovalRequest, now: Timestamp) -> String {
    match phase(ar) {
        Phase::Expired => return "expired".into(),
        Phase::Pending => {}
        _ => return "-".into(),
    }
    match ar.status.as_ref().and_then(|s| s.expires_at.as_ref()) {
        None => NONE.into(),
        Some(t) if t.0 <= now => "expired".into(),
        Some(t) => format!("in {}", countdown(seconds_between(now, t.0))),
    }
}

fn age_of(t: Option<&Time>, now: Timestamp) -> String {
    t.map_or_else(|| NONE.into(), |t| age(seconds_between(t.0, now)))
}

/// Characters that change how a terminal shows what follows, beyond the control characters:
/// bidirectional overrides and isolates, and invisible joiners, which can reorder or hide text.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

fn escape_where(s: &str, unsafe_char: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(&unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) { escape_into(&mut out, c) } else { out.push(c) }
    }
    std::borrow::Cow::Owned(out)
}

/// Text anyone who can create a request wrote (the agent: tool, justification, message, …), as it
/// may reach an approver's terminal: control characters and format characters spelled out as
/// escapes, so no escape sequence can hide, move or recolour what the approver reads. With
/// `keep_newlines`, line breaks stay (a multi-line justification), every other one is escaped.
pub fn safe(s: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    escape_where(s, |c| (c.is_control() && !(keep_newlines && c == '\n')) || is_format_char(c))
}

/// The last line of defence, on everything printed: control characters other than newline and
/// tab, and format characters, escaped.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    escape_where(s, |c| (c.is_control() && c != '\n' && c != '\t') || is_format_char(c))
}

/// At most `max` characters, with `...` when cut; one line, nothing a terminal would interpret.
pub fn truncate(s: &str, max: usize) -> String {
    let spaced: String = s.chars().map(|c| if matches!(c, '\n' | '\r' | '\t') { ' ' } else { c }).collect();
    let flat = safe(&spaced, false).into_owned();
    if flat.chars().count() <= max {
        return flat;
    }
    let kept: String = flat.chars().take(max.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// Columns separated by three spaces, left-aligned, as kubectl's tabwriter does.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count() + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `list` table; `all_namespaces` adds NAMESPACE, `wide` adds SERVER, WORKFLOW, JUSTIFICATION.
pub fn list_table(items: &[ApprovalRequest], now: Timestamp, wide: bool, all_namespaces: bool) -> String {
    let mut header: Vec<&str> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "TOOL", "AGENT", "PHASE", "APPROVALS", "EXPIRES", "AGE"]);
    if wide {
        header.extend(["SERVER", "WORKFLOW", "JUSTIFICATION"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for ar in items {
        let status = ar.status.as_ref();
        let mut row = Vec::new();
        if all_namespaces {
            row.push(ar.metadata.namespace.clone().unwrap_or_default());
        }
        row.extend([
            ar.metadata.name.clone().unwrap_or_default(),
            safe(&ar.spec.tool, false).into_owned(),
            safe(&ar.spec.agent, false).into_owned(),
            phase(ar).to_string(),
            status.and_then(|s| s.approvals.clone()).unwrap_or_else(|| NONE.into()),
            expires_column(ar, now),
            age_of(ar.metadata.creation_timestamp.as_ref(), now),
        ]);
        if wide {
            row.extend([
                safe(&ar.spec.server, false).into_owned(),
                safe(&ar.spec.workflow, false).into_owned(),
                ar.spec.justification.as_deref().map_or_else(|| NONE.into(), |j| truncate(j, JUSTIFICATION_WIDE)),
            ]);
        }
        rows.push(row);
    }
    table(&rows)
}

/// A `List` document, as `kubectl get -o json|yaml` prints one.
pub fn list_document(items: &[ApprovalRequest]) -> Result<Value, serde_json::Error> {
    let items = items.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}))
}

/// `-o name`: `approvalrequest.tollgate.dev/NAME`.
pub fn name_line(ar: &ApprovalRequest) -> String {
    format!("approvalrequest.tollgate.dev/{}", ar.metadata.name.as_deref().unwrap_or_default())
}

fn when(t: &Time, now: Timestamp) -> String {
    let secs = seconds_between(t.0, now);
    let rel = if secs >= 0 { format!("{} ago", age(secs)) } else { format!("in {}", countdown(-secs)) };
    format!("{rel} ({})", rfc3339(t))
}

/// RFC 3339 to the second, as the API server writes times.
pub fn rfc3339(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The human view of `show`.
pub fn show(ar: &ApprovalRequest, now: Timestamp) -> String {
    let spec = &ar.spec;
    let status = ar.status.clone().unwrap_or_default();
    let opt = |v: Option<&str>| safe(v.unwrap_or(NONE), true).into_owned();
    let one = |v: &str| safe(v, false).into_owned();
    let mut fields: Vec<(&str, String)> = vec![("Name", qualified_name(ar)), ("Phase", phase(ar).to_string()), ("Approvals", opt(status.approvals.as_deref()))];
    match (phase(ar), status.expires_at.as_ref(), status.resolved_at.as_ref()) {
        (Phase::Pending, Some(t), _) if t.0 <= now => {
            fields.push(("Expires", format!("expired {}", when(t, now))));
        }
        (Phase::Pending, Some(t), _) => fields.push(("Expires", when(t, now))),
        (Phase::Pending, None, _) => fields.push(("Expires", NONE.into())),
        (_, _, Some(t)) => fields.push(("Resolved", when(t, now))),
        (_, _, None) => {}
    }
    if let Some(t) = &status.escalated_at {
        fields.push(("Escalated", when(t, now)));
    }
    fields.extend([
        ("Requested", when(&spec.requested_at, now)),
        ("Tool", one(&spec.tool)),
        ("Server", one(&spec.server)),
        ("Agent", one(&spec.agent)),
        ("Service account", one(&spec.service_account)),
        ("Pod", one(spec.pod.as_deref().unwrap_or(NONE))),
        ("Workflow", one(&spec.workflow)),
        ("Policy", one(&policy_line(ar))),
        ("Message", opt(spec.message.as_deref())),
        ("Justification", opt(spec.justification.as_deref())),
    ]);
    let mut out = String::new();
    for (label, value) in fields {
        // Continuation lines (a multi-line justification) stay in the value column.
        let value = value.replace('\n', &format!("\n{:17}", ""));
        out.push_str(&format!("{:<17}{value}\n", format!("{label}:")));
    }
    out.push_str("Arguments:\n");
    let args = match &spec.arguments {
        None => NONE.to_owned(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
    };
    let args = safe(&args, true);
    for line in args.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if status.decisions.is_empty() {
        out.push_str(&format!("{:<17}{NONE}\n", "Decisions:"));
        return out;
    }
    out.push_str("Decisions:\n");
    let mut rows = vec![["USER", "DECISION", "VIA", "TIME", "REASON"].map(String::from).to_vec()];
    for d in &status.decisions {
        rows.push(vec![
            safe(&d.user, false).into_owned(),
            verdict(d.decision).into(),
            serde_json::to_value(d.via).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            when(&d.time, now),
            d.reason.as_deref().map_or_else(|| NONE.into(), |r| truncate(r, 200)),
        ]);
    }
    for line in table(&rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn policy_line(ar: &ApprovalRequest) -> String {
    let Some(p) = &ar.spec.policy else {
        return NONE.into();
    };
    let kind = match p.kind {
        PolicyKind::ToolPolicy => "ToolPolicy",
        PolicyKind::ClusterToolPolicy => "ClusterToolPolicy",
    };
    let name = match &p.namespace {
        Some(ns) => format!("{ns}/{}", p.name),
        None => p.name.clone(),
    };
    match &ar.spec.rule {
        Some(rule) => format!("{kind} {name}, rule {rule}"),
        None => format!("{kind} {name}"),
    }
}

pub fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "Approve",
        Verdict::Deny => "Deny",
    }
}

/// Approve decisions recorded, and the quorum from the operator's `n/m` (if it wrote one).
fn approvals(ar: &ApprovalRequest) -> (usize, Option<usize>) {
    let Some(status) = &ar.status else {
        return (0, None);
    };
    let n = status.decisions.iter().filter(|d| d.decision == Verdict::Approve).count();
    let quorum = status.approvals.as_deref().and_then(|a| a.split_once('/')).and_then(|(_, m)| m.trim().parse().ok());
    (n, quorum)
}

/// Whether the operator may now resolve the request: a deny always resolves it, an approval only
/// once the quorum is reached (or when we cannot tell the quorum).
pub fn may_resolve(v: Verdict, ar: &ApprovalRequest) -> bool {
    match (v, approvals(ar)) {
        (Verdict::Deny, _) => true,
        (Verdict::Approve, (n, Some(quorum))) => n >= quorum,
        (Verdict::Approve, (_, None)) => true,
    }
}

/// What `kubectl approve NAME` prints once the decision is stored, e.g.
/// `approved ns/x7k2 (1/2 approvals)`. Counts the approvals in `decisions` (the webhook admitted
/// each one) over the quorum the operator wrote, since the operator may not have recounted yet.
pub fn decided_line(v: Verdict, ar: &ApprovalRequest) -> String {
    let id = qualified_name(ar);
    match v {
        Verdict::Deny => format!("denied {id}"),
        Verdict::Approve => match approvals(ar) {
            (n, Some(quorum)) => format!("approved {id} ({n}/{quorum} approvals)"),
            (n, None) => format!("approved {id} ({n} approvals)"),
        },
    }
}

/// One `watch` line: what is asked, by whom, why, and the command that answers it.
pub fn watch_line(ar: &ApprovalRequest) -> String {
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let ns = ar.metadata.namespace.as_deref().unwrap_or_default();
    let justification = ar.spec.justification.as_deref().map_or_else(|| NONE.into(), |j| format!("{:?}", truncate(j, JUSTIFICATION_WATCH)));
    format!(
        "pending {ns}/{name}: tool={} server={} agent={} justification={justification}  ->  kubectl approve {name} -n {ns}",
        safe(&ar.spec.tool, false),
        safe(&ar.spec.server, false),
        safe(&ar.spec.agent, false)
    )
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
