//! What approvers are told about a held call, and when (DESIGN §3.3): the stage a request is at,
//! which targets have not been told about it yet, and the messages themselves (Slack blocks, a
//! signed webhook body, an email). IO lives in the operator; every choice lives here.

use crate::hmac::hmac_sha256;
use serde_json::{Value, json};
use tollgate_api::{ApprovalRequest, NotificationChannel, NotificationRecord, Phase, Verdict};

/// Attempts at one stage of one target before it is given up (and a condition says so).
pub const MAX_ATTEMPTS: i32 = 5;
/// Arguments shown in a message, at most: the rest is in `kubectl approve show`.
const ARGUMENTS_SHOWN: usize = 1500;

/// Where a request stands, as far as notifications care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub phase: Phase,
    pub escalated: bool,
    pub decisions: usize,
}

impl Stage {
    pub fn of(request: &ApprovalRequest) -> Stage {
        let status = request.status.clone().unwrap_or_default();
        Stage { phase: status.phase.unwrap_or_default(), escalated: status.escalated_at.is_some(), decisions: status.decisions.len() }
    }

    /// What a target has been told, as its record's `event`: Slack's message follows every
    /// decision (so a channel never shows a stale request as actionable); webhooks and email
    /// follow phase changes and escalation.
    pub fn key(&self, channel: NotificationChannel) -> String {
        let base = match (self.phase, self.escalated) {
            (Phase::Pending, true) => "Escalated".to_owned(),
            (phase, _) => phase.to_string(),
        };
        match channel {
            NotificationChannel::Slack => format!("{base}/{}", self.decisions),
            _ => base,
        }
    }
}

/// One target of a workflow's `notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub channel: NotificationChannel,
    /// A Slack channel, a webhook URL's host, or an email address list.
    pub target: String,
}

/// The targets that have not been told about `stage`, and have attempts left for it.
pub fn due(targets: &[Target], records: &[NotificationRecord], stage: &Stage) -> Vec<Target> {
    targets
        .iter()
        .filter(|t| {
            let key = stage.key(t.channel);
            match records.iter().find(|r| r.channel == t.channel && r.target == t.target) {
                None => true,
                Some(r) if r.event.as_deref() == Some(&key) => r.error.is_some() && r.attempts.unwrap_or(0) < MAX_ATTEMPTS,
                Some(_) => true,
            }
        })
        .cloned()
        .collect()
}

/// Targets given up on: every attempt at their current stage failed.
pub fn failing(records: &[NotificationRecord]) -> impl Iterator<Item = &NotificationRecord> {
    records.iter().filter(|r| r.error.is_some() && r.attempts.unwrap_or(0) >= MAX_ATTEMPTS)
}

/// A request's `Notified` condition from its delivery records: (ok, reason, message); none while
/// nothing was sent.
pub fn delivery(records: &[NotificationRecord]) -> Option<(bool, &'static str, String)> {
    if records.is_empty() {
        return None;
    }
    let failing: Vec<String> =
        failing(records).map(|r| format!("{:?} {}: {}", r.channel, r.target, r.error.as_deref().unwrap_or_default()).to_lowercase()).collect();
    let retrying: Vec<String> = records.iter().filter(|r| r.error.is_some()).map(|r| format!("{:?} {}", r.channel, r.target).to_lowercase()).collect();
    Some(if failing.is_empty() && retrying.is_empty() {
        (true, "Delivered", format!("{} target(s) told", records.len()))
    } else if failing.is_empty() {
        (false, "Retrying", format!("retrying {}", retrying.join("; ")))
    } else {
        (false, "DeliveryFailed", format!("gave up on {}", failing.join("; ")))
    })
}

/// Seconds before attempt `n` (1-based) of a stage: 0, then doubling from 1 s.
pub fn backoff_seconds(attempt: i32) -> u64 {
    if attempt <= 1 { 0 } else { 1u64 << (attempt - 2).clamp(0, 6) }
}

/// The command that decides a request from a terminal.
pub fn kubectl_command(request: &ApprovalRequest) -> String {
    format!("kubectl approve {} -n {}", request.metadata.name.as_deref().unwrap_or_default(), request.metadata.namespace.as_deref().unwrap_or_default())
}

fn arguments_text(request: &ApprovalRequest) -> String {
    let args = request.spec.arguments.as_ref().map(|a| crate::audit::redact::redact(a).to_string()).unwrap_or_else(|| "{}".into());
    if args.len() > ARGUMENTS_SHOWN { format!("{}… (see kubectl approve show)", &args[..args.floor_char_boundary(ARGUMENTS_SHOWN)]) } else { args }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped; anything an agent wrote is shown as text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Agent text shown in a code span: escaped, and unable to close the span.
fn slack_code(text: &str) -> String {
    slack_escape(text).replace('`', "'")
}

/// A mrkdwn text object that Slack shows verbatim: no URL made a link, no `@channel` or
/// `#channel` in agent text turned into a mention.
fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

fn outcome(request: &ApprovalRequest, stage: &Stage) -> String {
    let status = request.status.clone().unwrap_or_default();
    let by: Vec<String> = status
        .decisions
        .iter()
        .map(|d| {
            let verb = if d.decision == Verdict::Approve { "approved" } else { "denied" };
            let who = d.user.strip_prefix(crate::approval::SLACK_USER_PREFIX).map_or_else(|| d.user.clone(), |id| format!("<@{id}>"));
            format!("{verb} by {who}{}", d.reason.as_deref().map(|r| format!(" ({})", slack_escape(r))).unwrap_or_default())
        })
        .collect();
    let decided = if by.is_empty() { String::new() } else { format!(": {}", by.join(", ")) };
    match stage.phase {
        Phase::Pending => format!("Waiting for approval ({}){decided}", status.approvals.unwrap_or_default()),
        Phase::Approved => format!("✅ Approved{decided}"),
        Phase::Denied => format!("⛔ Denied{decided}"),
        Phase::Expired => "⌛ Expired: nobody decided in time".to_owned(),
        Phase::Cancelled => "Cancelled: the call can no longer run".to_owned(),
    }
}

/// The Slack message of a request at `stage`: the call, and Approve / Deny buttons only while
/// it is pending.
pub fn slack_message(request: &ApprovalRequest, stage: &Stage) -> Value {
    let s = &request.spec;
    let name = request.metadata.name.clone().unwrap_or_default();
    let ns = request.metadata.namespace.clone().unwrap_or_default();
    let title = format!(
        "{}Tool call held: `{}` on `{}`",
        if stage.escalated && stage.phase == Phase::Pending { "[escalated] " } else { "" },
        slack_code(&s.tool),
        slack_code(&s.server)
    );
    let mut fields = vec![mrkdwn(format!("*Agent:*\n{}/{}", ns, slack_escape(&s.agent))), mrkdwn(format!("*Workflow:*\n{}", slack_escape(&s.workflow)))];
    if let Some(rule) = &s.rule {
        let message = s.message.as_deref().map(|m| format!(": {}", slack_escape(m))).unwrap_or_default();
        fields.push(mrkdwn(format!("*Rule:*\n{}{message}", slack_escape(rule))));
    }
    if let Some(expires) = request.status.as_ref().and_then(|st| st.expires_at.as_ref()) {
        fields.push(mrkdwn(format!("*Expires:*\n{}", expires.0)));
    }
    let mut blocks = vec![
        json!({"type": "section", "text": mrkdwn(title.clone()), "fields": fields}),
        json!({"type": "section", "text": mrkdwn(format!("*Arguments:*\n```{}```", slack_code(&arguments_text(request))))}),
    ];
    if let Some(j) = &s.justification {
        blocks.push(json!({"type": "section", "text": mrkdwn(format!("*Justification:*\n{}", slack_escape(j)))}));
    }
    blocks.push(json!({"type": "context", "elements": [mrkdwn(format!("{} · `{}`", outcome(request, stage), slack_code(&kubectl_command(request))))]}));
    if stage.phase == Phase::Pending {
        // The value names the request; the click is checked against its workflow by the gateway
        // and the API server, never trusted for more than naming.
        let value = format!("{ns}/{name}");
        blocks.push(json!({"type": "actions", "block_id": format!("decide-{}", stage.decisions), "elements": [
            {"type": "button", "action_id": "tollgate_approve", "style": "primary", "value": value, "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "tollgate_deny", "style": "danger", "value": value, "text": {"type": "plain_text", "text": "Deny"}},
        ]}));
    }
    json!({"text": format!("{} — {}", title.replace('`', ""), outcome(request, stage)), "blocks": blocks})
}

/// The webhook body of a request at `stage`.
pub fn webhook_payload(request: &ApprovalRequest, stage: &Stage) -> Value {
    let s = &request.spec;
    let status = request.status.clone().unwrap_or_default();
    json!({
        "event": stage.key(NotificationChannel::Webhook),
        "request": {"name": request.metadata.name, "namespace": request.metadata.namespace},
        "agent": s.agent,
        "server": s.server,
        "tool": s.tool,
        "arguments": s.arguments.as_ref().map(crate::audit::redact::redact),
        "justification": s.justification,
        "rule": s.rule,
        "message": s.message,
        "workflow": s.workflow,
        "phase": stage.phase.to_string(),
        "approvals": status.approvals,
        "decisions": status.decisions,
        "expiresAt": status.expires_at.map(|t| t.0.to_string()),
        "kubectl": kubectl_command(request),
    })
}

/// `X-Tollgate-Signature` of a webhook body: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`. The timestamp is signed too, so a receiver can refuse old deliveries.
pub fn webhook_signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut message = format!("{unix_seconds}.").into_bytes();
    message.extend_from_slice(body);
    format!("t={unix_seconds},v1={}", hex::encode(hmac_sha256(secret, &message)))
}

/// The email of a request at `stage`: subject, plain text and HTML.
pub fn email(request: &ApprovalRequest, stage: &Stage) -> (String, String, String) {
    let s = &request.spec;
    let ns = request.metadata.namespace.clone().unwrap_or_default();
    let subject = match stage.phase {
        Phase::Pending if stage.escalated => format!("[Tollgate] Escalated: {} on {} by {ns}/{}", s.tool, s.server, s.agent),
        Phase::Pending => format!("[Tollgate] Approval needed: {} on {} by {ns}/{}", s.tool, s.server, s.agent),
        phase => format!("[Tollgate] {phase}: {} on {} by {ns}/{}", s.tool, s.server, s.agent),
    };
    // A header is one line: whatever the agent named cannot add headers to the mail.
    let subject: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let status = outcome(request, stage);
    let args = arguments_text(request);
    let rule = s.rule.clone().unwrap_or_default();
    let justification = s.justification.clone().unwrap_or_default();
    let command = kubectl_command(request);
    let text = format!(
        "Agent {ns}/{agent} wants to call {tool} on {server}.\n\nArguments: {args}\nJustification: {justification}\nRule: {rule}\nStatus: {status}\n\nDecide with:\n  {command}\n  {command_deny}\n",
        agent = s.agent,
        tool = s.tool,
        server = s.server,
        command_deny = command.replacen("approve ", "approve deny ", 1),
    );
    let e = html_escape;
    let html = format!(
        "<p>Agent <b>{}/{}</b> wants to call <code>{}</code> on <code>{}</code>.</p><pre>{}</pre><p>Justification: {}<br>Rule: {}<br>Status: {}</p><p>Decide with <code>{}</code></p>",
        e(&ns),
        e(&s.agent),
        e(&s.tool),
        e(&s.server),
        e(&args),
        e(&justification),
        e(&rule),
        e(&status),
        e(&command)
    );
    (subject, text, html)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn delivery_says_who_was_told_who_is_retried_and_who_was_given_up_on() {
        let rec = |target: &str, error: Option<&str>, attempts: i32| -> NotificationRecord {
            serde_json::from_value(
                serde_json::json!({"channel": "webhook", "target": target, "sentAt": "2026-12-02T10:00:00Z", "error": error, "attempts": attempts}),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(delivery(&[]), None);
        assert_eq!(delivery(&[rec("a", None, 1), rec("b", None, 1)]), Some((true, "Delivered", "2 target(s) told".into())));
        assert_eq!(delivery(&[rec("a", None, 1), rec("b", Some("503"), 1)]), Some((false, "Retrying", "retrying webhook b".into())));
        let gave_up = delivery(&[rec("b", Some("503"), MAX_ATTEMPTS)]).map(|d| (d.1, d.2));
        assert_eq!(gave_up, Some(("DeliveryFailed", "gave up on webhook b: 503".into())));
    }

    use super::*;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tollgate_api::{ApprovalDecision, ApprovalRequestSpec, ApprovalRequestStatus, Via};

    fn request(phase: Phase, decisions: usize) -> ApprovalRequest {
        let mut r = ApprovalRequest::new(
            "deploy-1",
            ApprovalRequestSpec {
                agent: "coder".into(),
                service_account: "coder".into(),
                pod: None,
                sidecar_instance: None,
                server: "k8s".into(),
                tool: "deploy".into(),
                arguments: Some(json!({"env": "prod", "token": "sk-live-123456789012345678901234"})),
                arguments_digest: "d".into(),
                justification: Some("release <b>1.2</b>".into()),
                policy: None,
                rule: Some("prod".into()),
                message: Some("prod needs a person".into()),
                workflow: "ops".into(),
                requested_at: Time(Timestamp::UNIX_EPOCH),
            },
        );
        r.metadata.namespace = Some("team-a".into());
        let d = ApprovalDecision { user: "slack:U1".into(), decision: Verdict::Approve, reason: None, time: Time(Timestamp::UNIX_EPOCH), via: Via::Slack };
        r.status = Some(ApprovalRequestStatus { phase: Some(phase), decisions: vec![d; decisions], ..Default::default() });
        r
    }

    fn record(channel: NotificationChannel, event: &str, error: Option<&str>, attempts: i32) -> NotificationRecord {
        NotificationRecord {
            channel,
            target: "t".into(),
            message_id: None,
            sent_at: Time(Timestamp::UNIX_EPOCH),
            error: error.map(Into::into),
            event: Some(event.into()),
            attempts: Some(attempts),
        }
    }

    #[test]
    fn slack_follows_decisions_and_the_others_follow_phases() {
        let slack = Target { channel: NotificationChannel::Slack, target: "t".into() };
        let hook = [Target { channel: NotificationChannel::Webhook, target: "t".into() }];
        let both = [slack.clone(), hook[0].clone()];
        let one = Stage { phase: Phase::Pending, escalated: false, decisions: 1 };
        assert_eq!(due(&both, &[], &one).len(), 2, "nobody told yet");
        let told = [record(NotificationChannel::Slack, "Pending/0", None, 1), record(NotificationChannel::Webhook, "Pending", None, 1)];
        assert_eq!(due(&both, &told, &one), [slack], "a decision updates Slack only");
        let escalated = Stage { escalated: true, ..one };
        assert_eq!(due(&hook, &told, &escalated), hook);
        // A failing target is retried until its attempts run out, then given up.
        let failed = [record(NotificationChannel::Webhook, "Pending", Some("503"), 2)];
        assert_eq!(due(&hook, &failed, &one), hook);
        let spent = [record(NotificationChannel::Webhook, "Pending", Some("503"), MAX_ATTEMPTS)];
        assert!(due(&hook, &spent, &one).is_empty());
        assert_eq!(failing(&spent).count(), 1);
        // The next stage is a fresh start.
        let approved = Stage { phase: Phase::Approved, ..one };
        assert_eq!(due(&hook, &spent, &approved), hook);
    }

    #[test]
    fn a_slack_message_has_buttons_only_while_pending_and_shows_no_secret() {
        let r = request(Phase::Pending, 0);
        let m = slack_message(&r, &Stage::of(&r));
        let text = m.to_string();
        assert!(text.contains("tollgate_approve") && text.contains("team-a/deploy-1"), "{text}");
        assert!(!text.contains("sk-live"), "arguments are redacted: {text}");
        assert!(text.contains("release &lt;b&gt;1.2&lt;/b&gt;"), "what the agent wrote is escaped: {text}");
        assert!(text.contains("kubectl approve deploy-1 -n team-a"));
        // Agent text cannot mention, link or leave its code span, wherever it is shown.
        let mut hostile = request(Phase::Pending, 0);
        hostile.spec.tool = "<!channel> `<https://evil.example|click here>`".into();
        hostile.spec.server = "<!here>".into();
        hostile.spec.justification = Some("see https://evil.example @channel <#C1>".into());
        let m = slack_message(&hostile, &Stage::of(&hostile));
        let text = m.to_string();
        for raw in ["<!channel>", "<!here>", "<https://", "<#C1>"] {
            assert!(!text.contains(raw), "{raw} reached Slack unescaped: {text}");
        }
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert_eq!(m["text"].as_str().unwrap().matches('`').count(), 0, "the fallback text: {}", m["text"]);
        let title = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(title.matches('`').count(), 4, "the tool name closed its code span: {title}");
        for block in m["blocks"].as_array().unwrap() {
            for t in
                [&block["text"]].into_iter().chain(block["fields"].as_array().into_iter().flatten()).chain(block["elements"].as_array().into_iter().flatten())
            {
                if t["type"] == "mrkdwn" {
                    assert_eq!(t["verbatim"], true, "Slack would make links and mentions of {t}");
                }
            }
        }
        let done = request(Phase::Approved, 1);
        let m = slack_message(&done, &Stage::of(&done)).to_string();
        assert!(!m.contains("tollgate_approve") && m.contains("Approved") && m.contains("<@U1>"), "{m}");
    }

    #[test]
    fn a_webhook_signature_covers_the_time_and_the_body() {
        let sig = webhook_signature(b"secret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_ne!(sig, webhook_signature(b"secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, webhook_signature(b"secret", 1_700_000_000, b"{ }"));
        assert_ne!(sig, webhook_signature(b"other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn an_email_carries_the_command_in_both_forms() {
        let r = request(Phase::Pending, 0);
        let (subject, text, html) = email(&r, &Stage::of(&r));
        assert!(subject.contains("Approval needed: deploy on k8s by team-a/coder"), "{subject}");
        assert!(text.contains("kubectl approve deploy-1 -n team-a") && text.contains("kubectl approve deny deploy-1 -n team-a"), "{text}");
        assert!(html.contains("release &lt;b&gt;1.2&lt;/b&gt;") && !html.contains("sk-live"), "{html}");
    }

    #[test]
    fn an_agent_cannot_add_mail_headers_through_the_subject() {
        let mut r = request(Phase::Pending, 0);
        r.spec.tool = "deploy\r\nBcc: attacker@example.com".into();
        let (subject, _, _) = email(&r, &Stage::of(&r));
        assert!(!subject.contains('\n') && !subject.contains('\r'), "{subject:?}");
    }

    #[test]
    fn backoff_doubles_from_a_second() {
        assert_eq!((1..=5).map(backoff_seconds).collect::<Vec<_>>(), [0, 1, 2, 4, 8]);
    }
}
