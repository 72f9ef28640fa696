//! Approvers where they work (DESIGN §3.3): a held call reaches Slack (a message with buttons,
//! updated on every decision), a signed webhook (retried until it is taken) and email; a click
//! in Slack, signed as Slack signs it, becomes a decision in the request's status through the
//! gateway, checked by the same admission as `kubectl approve`; every forgery is refused and
//! writes nothing; a target that keeps failing makes a condition and never holds a request up.
//! An AI first reader, a model behind the gateway under its own agent's key and budget, decides
//! (or advises, or abstains) as its workflow says.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;
use tollgate_e2e::gateway::{ANTHROPIC_KEY, FakeProvider, GatewayProcess, OPENAI_KEY};
use tollgate_e2e::slack::{BOT_TOKEN, FakeSlack, HOOK_SECRET, click};
use tollgate_e2e::{ControlPlane, Operator, User, free_ports, wait_until};

/// The first two webhook deliveries fail, so the first stage is delivered on the third attempt.
const HOOK_FAILURES: u32 = 2;

struct World {
    slack: FakeSlack,
    provider: FakeProvider,
    _operator: Operator,
    gateway: GatewayProcess,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let start = || -> Result<World> {
            let cp = ControlPlane::shared();
            let slack = FakeSlack::start(cp, HOOK_FAILURES)?;
            let provider = FakeProvider::start(cp, OPENAI_KEY, ANTHROPIC_KEY)?;
            let db = cp.dir().join("notify-ledger.db");
            let [port] = free_ports::<1>()?;
            // The AI first reader's model calls go through this gateway.
            let gateway_url = format!("http://127.0.0.1:{port}");
            let operator = Operator::start_with_env(
                cp,
                &[("TOLLGATE_SLACK_API_URL", &slack.api_url()), ("TOLLGATE_SMTP_URL", &slack.smtp_url()), ("TOLLGATE_GATEWAY_URL", &gateway_url)],
            )?;
            let env = [
                ("TOLLGATE_SLACK_SIGNING_SECRET", tollgate_e2e::slack::SIGNING_SECRET),
                ("TOLLGATE_SLACK_BOT_TOKEN", BOT_TOKEN),
                ("TOLLGATE_SLACK_API_URL", &slack.api_url()),
            ];
            let gateway = GatewayProcess::start_with(cp, &format!("sqlite://{}?mode=rwc", db.display()), port, &env)?;
            Ok(World { slack, provider, _operator: operator, gateway })
        };
        start().unwrap_or_else(|e| panic!("starting the fake Slack, the operator and the gateway: {e:#}"))
    })
}

/// A namespace with the Slack bot token and the webhook secret, and the workflow `ops`.
fn setup(prefix: &str, workflow: &str) -> Result<(&'static ControlPlane, String)> {
    world();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace(prefix)?;
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: slack-bot}}\nstringData: {{token: \"{BOT_TOKEN}\"}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: hook}}\nstringData: {{secret: \"{HOOK_SECRET}\"}}\n"
    );
    cp.apply(User::Admin, &ns, &secrets)?;
    cp.apply(User::Admin, &ns, &format!("apiVersion: tollgate.dev/v1alpha1\nkind: ApprovalWorkflow\nmetadata: {{name: ops}}\nspec: {workflow}\n"))?;
    Ok((cp, ns))
}

/// A held call, created as the agent's sidecar creates it, with a secret among its arguments.
fn hold(cp: &ControlPlane, ns: &str, name: &str) -> Result<()> {
    hold_call(cp, ns, name, "deploy")
}

fn hold_call(cp: &ControlPlane, ns: &str, name: &str, tool: &str) -> Result<()> {
    let request = tollgate_e2e::requests::Request::new(name, "ops")
        .call("platform-tools", tool, json!({"environment": "production", "api_token": "sk-live-abcdefghijklmnopqrstuvwx"}))
        .spec("justification", json!("release <b>1.2</b>"))
        .spec("rule", json!("prod"))
        .spec("message", json!("production needs a person"));
    cp.create_request(ns, &request)
}

fn request(cp: &ControlPlane, ns: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "approvalrequest", name, "-n", ns, "-o", "json"])?)?)
}

fn wait_request(cp: &ControlPlane, ns: &str, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(45), Duration::from_millis(100), || {
        last = request(cp, ns, name)?;
        Ok(done(&last).then(|| last.clone()))
    })
    .with_context(|| format!("{ns}/{name}: {what}; status: {}", last["status"]))
}

fn condition(r: &Value, type_: &str) -> Value {
    r["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == type_).cloned().unwrap_or_default()
}

fn record(r: &Value, channel: &str) -> Value {
    r["status"]["notifications"].as_array().into_iter().flatten().find(|n| n["channel"] == channel).cloned().unwrap_or_default()
}

fn decisions(r: &Value) -> Vec<String> {
    r["status"]["decisions"].as_array().into_iter().flatten().map(|d| d["user"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Slack Web API calls of `method` about request `ns/name`.
fn about(call: &Value, method: &str, ns: &str, name: &str) -> bool {
    call["path"] == format!("/api/{method}") && call["body"].to_string().contains(&format!("kubectl approve {name} -n {ns}"))
}

fn has_buttons(message: &Value) -> bool {
    message["blocks"].to_string().contains("tollgate_approve")
}

/// A click on the request's Approve (or Deny) button by `member`, as Slack sends it.
fn button(member: &str, action: &str, value: &str, channel: &str, ts: &str, trigger: &str) -> Value {
    json!({
        "type": "block_actions", "user": {"id": member, "username": member.to_lowercase()}, "trigger_id": trigger,
        "container": {"type": "message", "channel_id": channel, "message_ts": ts},
        "channel": {"id": channel}, "message": {"ts": ts},
        "actions": [{"type": "button", "action_id": action, "block_id": "decide-0", "value": value, "action_ts": "1.0"}],
    })
}

/// What the gateway told `member` (ephemeral messages, newest last).
fn told(slack: &FakeSlack, member: &str) -> Result<Vec<String>> {
    Ok(slack
        .calls()?
        .into_iter()
        .filter(|c| c["path"] == "/api/chat.postEphemeral" && c["body"]["user"] == member)
        .map(|c| c["body"]["text"].as_str().unwrap_or_default().to_owned())
        .collect())
}

fn wait_told(slack: &FakeSlack, member: &str, count: usize) -> Result<String> {
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || Ok(told(slack, member)?.get(count - 1).cloned()))
        .with_context(|| format!("{member} was told {count} thing(s): {:?}", told(slack, member)))
}

#[test]
fn a_held_call_reaches_slack_a_webhook_and_email_and_slack_clicks_decide_it() -> Result<()> {
    let w = world();
    let workflow = format!(
        r##"{{approvers: {{users: [approver-a], slack: {{userIds: [U0APPROVER, U0SECOND]}}}}, requiredApprovals: 2,
  notify: {{slack: {{channel: "#ops-approvals", tokenSecretRef: {{name: slack-bot, key: token}}}},
            webhook: {{url: "{hook}", secretRef: {{name: hook, key: secret}}}},
            email: {{to: [ops@example.com]}}}}}}"##,
        hook = w.slack.hook_url()
    );
    let (cp, ns) = setup("notify", &workflow)?;
    // The agent's identity first, so that only the request's creation is timed.
    cp.kubectl_as_agent(&ns, "coder", "coder", &["get", "approvalrequests"])?;
    let epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    let before = epoch(std::time::SystemTime::now());
    hold(cp, &ns, "deploy-1")?;
    let created = epoch(std::time::SystemTime::now());
    let id = format!("{ns}/deploy-1");

    // Slack: the call, redacted, with the command and the buttons.
    let posted = w.slack.wait_calls("the request's message", |c| about(c, "chat.postMessage", &ns, "deploy-1"))?;
    let at = posted[0]["at"].as_f64().unwrap_or_default();
    // The request was stored between `before` and `created` (one kubectl call).
    println!("held call stored → Slack message posted: between {:.0} ms and {:.0} ms", (at - created) * 1000.0, (at - before) * 1000.0);
    let message = &posted[0]["body"];
    ensure!(posted.len() == 1, "posted more than once: {posted:?}");
    assert_eq!(posted[0]["headers"]["authorization"], format!("Bearer {BOT_TOKEN}"));
    assert_eq!(message["channel"], "#ops-approvals");
    let text = message.to_string();
    assert!(has_buttons(message) && text.contains("deploy") && text.contains("platform-tools") && text.contains("production needs a person"), "{text}");
    assert!(text.contains(&format!("kubectl approve deploy-1 -n {ns}")), "{text}");
    assert!(!text.contains("sk-live"), "a secret argument reached Slack: {text}");
    assert!(text.contains("release &lt;b&gt;1.2&lt;/b&gt;"), "what the agent wrote is shown as text: {text}");

    // The webhook: refused twice, then taken; every delivery signed.
    let hooks = w.slack.wait_calls("a webhook delivery that was taken", |c| c["path"] == "/hook" && c["answered"] == 200)?;
    let all_hooks: Vec<Value> = w.slack.calls()?.into_iter().filter(|c| c["path"] == "/hook").collect();
    assert_eq!(all_hooks.len(), HOOK_FAILURES as usize + 1, "retried until taken, then not again: {all_hooks:?}");
    assert!(all_hooks.iter().all(|c| c["signature_valid"] == true), "{all_hooks:?}");
    assert_eq!((hooks[0]["body"]["event"].as_str(), hooks[0]["body"]["request"]["name"].as_str()), (Some("Pending"), Some("deploy-1")));
    assert!(!hooks[0]["body"].to_string().contains("sk-live"));
    assert_eq!(hooks[0]["headers"]["x-tollgate-delivery"], format!("{id}/Pending"));

    // Email: to the workflow's addresses, with the command.
    let mail = w.slack.wait_calls("an email", |c| c["path"] == "smtp" && c["data"].to_string().contains("deploy-1"))?;
    assert_eq!(mail[0]["to"], json!(["ops@example.com"]));
    let data = mail[0]["data"].as_str().unwrap_or_default();
    assert!(data.contains("Approval needed") && data.contains(&format!("kubectl approve deploy-1 -n {ns}")) && !data.contains("sk-live"), "{data}");

    // Delivery state in status.
    let r = wait_request(cp, &ns, "deploy-1", "Notified", |r| condition(r, "Notified")["status"] == "True")?;
    assert_eq!((record(&r, "webhook")["attempts"].as_i64(), record(&r, "webhook")["error"].is_null()), (Some(3), true), "{}", r["status"]);
    let slack_id = record(&r, "slack")["messageId"].as_str().unwrap_or_default().to_owned();
    let (channel, ts) = slack_id.split_once('/').context("the Slack record names the message")?;
    let mut events = String::new();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=Notified", "-o", "json"])?;
        Ok((events.contains("told slack #ops-approvals of Pending/0") && events.contains("told webhook") && events.contains("told email")).then_some(()))
    })
    .with_context(|| format!("no Notified Event for each target: {events}"))?;
    let value = format!("{ns}/deploy-1");
    let url = w.gateway.url();

    // Forgeries: a wrong key, an old timestamp; nothing written.
    let approve = button("U0APPROVER", "tollgate_approve", &value, channel, ts, "t-1");
    let forged = click(&url, &approve, &json!({"secret": "not-the-signing-secret"}))?;
    assert_eq!(forged[0]["status"], 401, "{forged:?}");
    let old = click(&url, &approve, &json!({"age": 301}))?;
    assert_eq!(old[0]["status"], 401, "{old:?}");
    assert!(old[0]["body"].as_str().unwrap_or_default().contains("at most 300 s"), "{old:?}");
    // A member who is not an approver: told so, nothing written.
    click(&url, &button("U0OUTSIDER", "tollgate_approve", &value, channel, ts, "t-2"), &json!({}))?;
    let said = wait_told(&w.slack, "U0OUTSIDER", 1)?;
    assert!(said.contains("Nothing was recorded") && said.contains("not an approver of workflow ops"), "{said}");
    assert!(decisions(&request(cp, &ns, "deploy-1")?).is_empty(), "a forgery wrote a decision");
    // A Deny says why here too (the workflow does not ask it of approvals): the click opens the
    // reason form and decides nothing.
    click(&url, &button("U0SECOND", "tollgate_deny", &value, channel, ts, "t-deny"), &json!({}))?;
    w.slack.wait_calls("the reason form of a Deny", |c| c["path"] == "/api/views.open" && c["body"]["trigger_id"] == "t-deny")?;
    assert!(decisions(&request(cp, &ns, "deploy-1")?).is_empty(), "a Deny without a reason was recorded");

    // The approver's click, then the very same request again (a replay).
    let answers = click(&url, &approve, &json!({"times": 2}))?;
    assert_eq!((answers[0]["status"].as_i64(), answers[1]["status"].as_i64()), (Some(200), Some(401)), "{answers:?}");
    assert!(answers[1]["body"].as_str().unwrap_or_default().contains("already received"), "{answers:?}");
    let said = wait_told(&w.slack, "U0APPROVER", 1)?;
    assert!(said.contains(&format!("You approved {id}")), "{said}");
    let r = wait_request(cp, &ns, "deploy-1", "one decision", |r| r["status"]["approvals"] == "1/2")?;
    let d = &r["status"]["decisions"][0];
    assert_eq!((d["user"].as_str(), d["via"].as_str(), d["decision"].as_str()), (Some("slack:U0APPROVER"), Some("slack"), Some("Approve")));
    // The same person again, in a fresh request: refused by the API server's admission.
    click(&url, &button("U0APPROVER", "tollgate_approve", &value, channel, ts, "t-3"), &json!({}))?;
    let said = wait_told(&w.slack, "U0APPROVER", 2)?;
    assert!(said.contains("Nothing was recorded") && said.contains("already decided"), "{said}");
    assert_eq!(decisions(&request(cp, &ns, "deploy-1")?), ["slack:U0APPROVER"]);
    // The message follows the decision, buttons still there while it is pending.
    let updated = w.slack.wait_calls("the message updated after a decision", |c| about(c, "chat.update", &ns, "deploy-1"))?;
    let first_update = &updated[0]["body"];
    assert_eq!((first_update["channel"].as_str(), first_update["ts"].as_str()), (Some(channel), Some(ts)));
    assert!(has_buttons(first_update) && first_update.to_string().contains("approved by <@U0APPROVER>"), "{first_update}");

    // The second approver: Approved, and the message says so with no buttons left.
    click(&url, &button("U0SECOND", "tollgate_approve", &value, channel, ts, "t-4"), &json!({}))?;
    wait_request(cp, &ns, "deploy-1", "Approved", |r| r["status"]["phase"] == "Approved")?;
    let done = w.slack.wait_calls("the final message", |c| about(c, "chat.update", &ns, "deploy-1") && !has_buttons(&c["body"]))?;
    let last = done[done.len() - 1]["body"].to_string();
    assert!(last.contains("Approved") && last.contains("<@U0SECOND>"), "{last}");
    w.slack.wait_calls("the webhook's Approved delivery", |c| {
        c["path"] == "/hook" && c["body"]["event"] == "Approved" && c["body"]["request"]["name"] == "deploy-1"
    })?;
    w.slack.wait_calls("the Approved email", |c| c["path"] == "smtp" && c["data"].to_string().contains("Approved: deploy"))?;
    // A click on a decided request: told so, nothing written.
    click(&url, &button("U0APPROVER", "tollgate_deny", &value, channel, ts, "t-5"), &json!({}))?;
    let said = wait_told(&w.slack, "U0APPROVER", 3)?;
    assert!(said.contains("is already Approved"), "{said}");
    assert_eq!(decisions(&request(cp, &ns, "deploy-1")?), ["slack:U0APPROVER", "slack:U0SECOND"]);
    Ok(())
}

#[test]
fn a_workflow_that_requires_a_reason_asks_for_it_in_a_modal() -> Result<()> {
    let w = world();
    let workflow = r##"{approvers: {slack: {userIds: [U0REASON]}}, requireReason: true,
  notify: {slack: {channel: "#reasons", tokenSecretRef: {name: slack-bot, key: token}}}}"##;
    let (cp, ns) = setup("notify-reason", workflow)?;
    hold(cp, &ns, "deploy-2")?;
    w.slack.wait_calls("the request's message", |c| about(c, "chat.postMessage", &ns, "deploy-2"))?;
    let r = wait_request(cp, &ns, "deploy-2", "the Slack record", |r| record(r, "slack")["messageId"].is_string())?;
    let slack_id = record(&r, "slack")["messageId"].as_str().unwrap_or_default().to_owned();
    let (channel, ts) = slack_id.split_once('/').context("message id")?;
    let url = w.gateway.url();
    let trigger = format!("trigger-{ns}");

    // The click opens the modal; nothing is decided yet.
    let answer = click(&url, &button("U0REASON", "tollgate_deny", &format!("{ns}/deploy-2"), channel, ts, &trigger), &json!({}))?;
    assert_eq!(answer[0]["status"], 200);
    let opened = w.slack.wait_calls("the reason modal", |c| c["path"] == "/api/views.open" && c["body"]["trigger_id"] == trigger.as_str())?;
    let view = &opened[0]["body"]["view"];
    assert!(decisions(&request(cp, &ns, "deploy-2")?).is_empty());

    let submit = |reason: &str| {
        json!({"type": "view_submission", "user": {"id": "U0REASON"}, "view": {
            "callback_id": view["callback_id"], "private_metadata": view["private_metadata"],
            "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}}}})
    };
    // Submitted blank: the modal says a reason is required.
    let blank = click(&url, &submit("   "), &json!({}))?;
    assert!(blank[0]["body"].as_str().unwrap_or_default().contains("A reason is required"), "{blank:?}");
    assert!(decisions(&request(cp, &ns, "deploy-2")?).is_empty());
    // With a reason: denied, the reason recorded.
    click(&url, &submit("not during the freeze"), &json!({}))?;
    let r = wait_request(cp, &ns, "deploy-2", "Denied", |r| r["status"]["phase"] == "Denied")?;
    let d = &r["status"]["decisions"][0];
    assert_eq!((d["user"].as_str(), d["decision"].as_str(), d["reason"].as_str()), (Some("slack:U0REASON"), Some("Deny"), Some("not during the freeze")));
    let said = wait_told(&w.slack, "U0REASON", 1)?;
    assert!(said.contains(&format!("You denied {ns}/deploy-2")), "{said}");
    Ok(())
}

#[test]
fn a_target_that_keeps_failing_makes_a_condition_and_never_holds_the_request_up() -> Result<()> {
    let w = world();
    // Nothing listens on port 9: every delivery of the webhook fails. The Slack target beside it
    // is told all the same, and its deliveries never wait for the failing one.
    let workflow = r##"{approvers: {users: [approver-a]}, notify: {webhook: {url: "http://127.0.0.1:9/hook"},
  slack: {channel: "#ops-failing", tokenSecretRef: {name: slack-bot, key: token}}}}"##;
    let (cp, ns) = setup("notify-failing", workflow)?;
    hold(cp, &ns, "deploy-3")?;
    wait_request(cp, &ns, "deploy-3", "a failed attempt recorded", |r| record(r, "webhook")["error"].is_string())?;
    let posted = w.slack.wait_calls("the request's message in Slack", |c| about(c, "chat.postMessage", &ns, "deploy-3"))?;
    ensure!(posted.iter().all(|c| c["body"]["channel"] == "#ops-failing"), "{posted:?}");
    // The approver decides while the webhook fails: the phase machine does not wait for it.
    let decision = json!([{"op": "add", "path": "/status/decisions", "value": [
        {"user": "approver-a", "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"}]}]);
    cp.kubectl_ok(User::ApproverA, ["patch", "ar", "deploy-3", "-n", &ns, "--subresource=status", "--type=json", "-p", &decision.to_string()])?;
    wait_request(cp, &ns, "deploy-3", "Approved", |r| r["status"]["phase"] == "Approved")?;
    // Given up after its attempts: a condition and a Warning Event say so, naming the target.
    let r = wait_request(cp, &ns, "deploy-3", "Notified=False DeliveryFailed", |r| condition(r, "Notified")["reason"] == "DeliveryFailed")?;
    let c = condition(&r, "Notified");
    assert!(c["status"] == "False" && c["message"].as_str().unwrap_or_default().contains("127.0.0.1:9"), "{c}");
    let events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=NotificationFailed", "-o", "json"])?;
    assert!(events.contains("gave up notifying") && events.contains("deploy-3"), "{events}");
    // The Slack target, meanwhile, delivered and was told the outcome; the condition blames
    // only the webhook.
    ensure!(!c["message"].as_str().unwrap_or_default().contains("slack"), "{c}");
    w.slack.wait_calls("the Slack message updated to Approved", |c| about(c, "chat.update", &ns, "deploy-3") && c["body"].to_string().contains("Approved"))?;
    let r = request(cp, &ns, "deploy-3")?;
    let slack = record(&r, "slack");
    ensure!(slack["error"].is_null() && slack["messageId"].is_string(), "the Slack delivery was held up or failed: {slack}");
    Ok(())
}

/// A namespace whose workflow `ops` has an AI first reader: the agent `reviewer`, allowed only
/// the model `reviewer`, with a budget of its own.
fn setup_reader(prefix: &str, counts: bool) -> Result<(&'static ControlPlane, String)> {
    let w = world();
    let workflow = format!(
        r#"{{approvers: {{users: [approver-a, approver-b], ai: {{agent: reviewer, model: reviewer, minConfidencePercent: 80, countsTowardQuorum: {counts},
  instructions: "Approve calls that only read. Deny calls that delete or drop data."}}}}, requiredApprovals: {required}}}"#,
        // A reader that counts is never a quorum on its own (the API server refuses that).
        required = if counts { 2 } else { 1 }
    );
    let (cp, ns) = setup(prefix, &workflow)?;
    let objects = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: provider-keys}}
stringData: {{openai: "{OPENAI_KEY}"}}
{provider}---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: reviewer}}
spec: {{selector: {{matchLabels: {{app: reviewer}}}}, serviceAccountName: reviewer, models: {{allowed: [reviewer]}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Budget
metadata: {{name: reviewer}}
spec: {{agentSelector: {{matchLabels: {{}}}}, period: Total, hardLimitUSD: 5.0}}
"#,
        provider = tollgate_e2e::gateway::model_provider(
            "openai",
            &w.provider.openai_url(),
            "secretKeyRef: {name: provider-keys, key: openai}",
            &["{name: reviewer, pricing: {inputPerMillionUSD: 1.0, outputPerMillionUSD: 2.0}}"]
        )
    );
    cp.apply(User::Admin, &ns, &objects)?;
    tollgate_e2e::gateway::agent_key(cp, &ns, "reviewer")?;
    Ok((cp, ns))
}

fn ai_decisions(r: &Value) -> Vec<(String, String)> {
    r["status"]["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["via"] == "ai")
        .map(|d| (d["user"].as_str().unwrap_or_default().to_owned(), d["decision"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn an_advisory_ai_first_reader_advises_and_abstains_and_the_people_decide() -> Result<()> {
    let w = world();
    let (cp, ns) = setup_reader("ai-advises", false)?;
    hold_call(cp, &ns, "read-1", "read_logs")?;
    hold_call(cp, &ns, "drop-1", "drop_table")?;
    hold_call(cp, &ns, "unsure-1", "deploy")?;

    // Confident: recorded as ai:ops, via ai, with its reason and confidence; the call stays
    // pending, since this reader only advises.
    let r = wait_request(cp, &ns, "read-1", "the reader's approve", |r| condition(r, "AIReviewed")["reason"] == "Decided")?;
    assert_eq!(ai_decisions(&r), [("ai:ops".to_owned(), "Approve".to_owned())], "{}", r["status"]);
    assert!(r["status"]["decisions"][0]["reason"].as_str().unwrap_or_default().contains("it only reads (AI first reader, 90% confident)"), "{}", r["status"]);
    assert_eq!((r["status"]["phase"].as_str(), r["status"]["approvals"].as_str()), (Some("Pending"), Some("0/1")), "advice is not an approval");
    let r = wait_request(cp, &ns, "drop-1", "the reader's deny", |r| condition(r, "AIReviewed")["reason"] == "Decided")?;
    assert_eq!(ai_decisions(&r), [("ai:ops".to_owned(), "Deny".to_owned())]);
    assert_eq!(r["status"]["phase"], "Pending", "advice is not a veto");
    // Unsure: it abstains, says why, and writes no decision.
    let r = wait_request(cp, &ns, "unsure-1", "the reader's abstention", |r| condition(r, "AIReviewed")["reason"] == "Abstained")?;
    let c = condition(&r, "AIReviewed");
    assert!(c["message"].as_str().unwrap_or_default().contains("40% confidence, below the workflow's 80%"), "{c}");
    assert!(ai_decisions(&r).is_empty());

    // The people decide, as always.
    let decision = json!([{"op": "add", "path": "/status/decisions/-", "value":
        {"user": "approver-a", "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"}}]);
    cp.kubectl_ok(User::ApproverA, ["patch", "ar", "read-1", "-n", &ns, "--subresource=status", "--type=json", "-p", &decision.to_string()])?;
    wait_request(cp, &ns, "read-1", "Approved", |r| r["status"]["phase"] == "Approved")?;
    // Nobody but the operator writes as the reader.
    let forged = json!([{"op": "add", "path": "/status/decisions", "value":
        [{"user": "ai:ops", "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "ai"}]}]);
    let out = cp.kubectl(User::ApproverA, ["patch", "ar", "unsure-1", "-n", &ns, "--subresource=status", "--type=json", "-p", &forged.to_string()])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("only the Tollgate operator records the AI first reader's decisions"), "{said}");

    // Its model calls went through the gateway, under its own agent's key and budget.
    let calls: Vec<Value> = w.provider.calls()?.into_iter().filter(|c| c["body"]["model"] == "reviewer" && c["body"].to_string().contains(&ns)).collect();
    assert_eq!(calls.len(), 3, "one reading per request: {calls:?}");
    assert!(calls.iter().all(|c| c["headers"]["authorization"] == format!("Bearer {OPENAI_KEY}")), "the provider sees its own key only");
    let mut spent = Value::Null;
    wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        spent =
            serde_json::from_str::<Value>(&cp.kubectl_ok(User::Admin, ["get", "budget", "reviewer", "-n", &ns, "-o", "json"])?)?["status"]["spentUSD"].clone();
        Ok(spent.as_f64().is_some_and(|s| s > 0.0).then_some(()))
    })
    .with_context(|| format!("the reader's budget shows no spend: {spent}"))?;
    Ok(())
}

/// A reader that counts is one vote of a quorum of at least two, and its Deny vetoes: a request
/// whose arguments talk the reader into approving still needs a person.
#[test]
fn an_ai_first_reader_that_counts_is_one_vote_and_never_a_quorum_alone() -> Result<()> {
    world();
    let (cp, ns) = setup_reader("ai-decides", true)?;
    // A workflow whose quorum the reader could reach alone is refused where it is applied.
    let alone = "apiVersion: tollgate.dev/v1alpha1\nkind: ApprovalWorkflow\nmetadata: {name: alone}\nspec: {approvers: {users: [approver-a], ai: {agent: reviewer, model: reviewer, instructions: x, countsTowardQuorum: true}}, requiredApprovals: 1}\n";
    let path = cp.dir().join(format!("{ns}-alone.yaml"));
    std::fs::write(&path, alone)?;
    let out = cp.kubectl(User::Admin, ["apply", "-n", &ns, "-f", path.to_str().context("path")?])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && said.contains("needs requiredApprovals of at least 2"), "a reader that is a quorum alone was admitted: {said}");
    hold_call(cp, &ns, "read-2", "read_logs")?;
    hold_call(cp, &ns, "drop-2", "drop_table")?;
    let r = wait_request(cp, &ns, "read-2", "the reader's approve", |r| r["status"]["approvals"] == "1/2")?;
    assert_eq!((ai_decisions(&r).len(), r["status"]["phase"].as_str()), (1, Some("Pending")), "{}", r["status"]);
    let decision = json!([{"op": "add", "path": "/status/decisions/-", "value":
        {"user": "approver-a", "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"}}]);
    cp.kubectl_ok(User::ApproverA, ["patch", "ar", "read-2", "-n", &ns, "--subresource=status", "--type=json", "-p", &decision.to_string()])?;
    let r = wait_request(cp, &ns, "read-2", "Approved by the reader and a person", |r| r["status"]["phase"] == "Approved")?;
    assert_eq!(r["status"]["approvals"], "2/2", "{}", r["status"]);
    let r = wait_request(cp, &ns, "drop-2", "Denied by the reader", |r| r["status"]["phase"] == "Denied")?;
    assert_eq!(ai_decisions(&r), [("ai:ops".to_owned(), "Deny".to_owned())]);
    let events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=AIDecided", "-o", "json"])?;
    assert!(events.contains("read-2") && events.contains("drop-2"), "{events}");
    Ok(())
}
