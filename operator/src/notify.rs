//! Notifications of held calls (DESIGN §3.3): each target of a request's workflow (Slack, a
//! webhook, email) told of every stage the request reaches, by a task of its own per request and target, so
//! a slow or failing target never holds up the phase machine. Each attempt is recorded in
//! `status.notifications` (only this module writes that list); a target that fails
//! [`MAX_ATTEMPTS`] times at a stage is given up, which the request's `Notified` condition and a
//! Warning Event say. What is sent, and when, is decided in `tollgate_core::approval::notify`.

use crate::ssa;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow, NotificationChannel, NotificationRecord, Notify, SecretKeyRef};
use tollgate_core::approval::notify::{self, MAX_ATTEMPTS, Stage, Target};
use tollgate_mcp_client::transport::{self, HttpClient};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where email goes out.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub from: String,
}

pub struct Notifier {
    client: kube::Client,
    http: HttpClient,
    slack_api: String,
    smtp: Option<Smtp>,
    /// Request and target pairs with a delivery task, and whether they changed since it last
    /// looked.
    running: Mutex<HashMap<String, bool>>,
    writes: tokio::sync::Mutex<()>,
}

impl Notifier {
    pub fn new(client: kube::Client, slack_api: String, smtp: Option<Smtp>) -> Arc<Notifier> {
        let roots = Arc::new(transport::platform_roots());
        Arc::new(Notifier { client, http: transport::client(roots), slack_api, smtp, running: Mutex::default(), writes: tokio::sync::Mutex::default() })
    }

    /// Makes sure the targets of `workflow` hear of the stage `request` is at: one task per
    /// request and target, so a slow or failing target delays no other.
    pub fn poke(self: &Arc<Self>, request: &ApprovalRequest, workflow: &ApprovalWorkflow) {
        let records = request.status.as_ref().map(|s| s.notifications.clone()).unwrap_or_default();
        let (ns, name) = (request.namespace().unwrap_or_default(), request.name_any());
        for target in notify::due(&targets(workflow.spec.notify.as_ref()), &records, &Stage::of(request)) {
            let key = format!("{ns}/{name} {:?} {}", target.channel, target.target);
            {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(dirty) = running.get_mut(&key) {
                    *dirty = true;
                    continue;
                }
                running.insert(key.clone(), false);
            }
            let this = self.clone();
            let (ns, name) = (ns.clone(), name.clone());
            tokio::spawn(async move { this.deliver(&key, &ns, &name, &target).await });
        }
    }

    /// The request and its workflow as they are now; `None` once either is gone.
    async fn read(&self, key: &str, ns: &str, name: &str) -> Option<(ApprovalRequest, ApprovalWorkflow)> {
        let requests = Api::<ApprovalRequest>::namespaced(self.client.clone(), ns);
        let workflows = Api::<ApprovalWorkflow>::namespaced(self.client.clone(), ns);
        loop {
            let read = async {
                let Some(request) = requests.get_opt(name).await? else { return Ok(None) };
                let workflow = workflows.get_opt(&request.spec.workflow).await?;
                Ok::<_, kube::Error>(workflow.map(|w| (request, w)))
            };
            match read.await {
                Ok(found) => return found,
                Err(e) => {
                    tracing::warn!(request = key, error = %e, "could not read the request to notify about it");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// Tells `target` of each stage the request reaches until nothing is due for it.
    async fn deliver(self: Arc<Self>, key: &str, ns: &str, name: &str, target: &Target) {
        let mut waited_for: Option<String> = None;
        while let Some((request, workflow)) = self.read(key, ns, name).await {
            let stage = Stage::of(&request);
            let records = request.status.as_ref().map(|s| s.notifications.clone()).unwrap_or_default();
            let wanted = targets(workflow.spec.notify.as_ref()).contains(target);
            if !wanted || notify::due(std::slice::from_ref(target), &records, &stage).is_empty() {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if running.get(key).copied().unwrap_or(false) {
                    running.insert(key.to_owned(), false);
                    continue;
                }
                running.remove(key);
                return;
            }
            let event = stage.key(target.channel);
            let previous = records.iter().find(|r| r.channel == target.channel && r.target == target.target).cloned();
            let attempt = previous.as_ref().filter(|r| r.event.as_deref() == Some(&event)).and_then(|r| r.attempts).unwrap_or(0) + 1;
            let backoff = notify::backoff_seconds(attempt);
            if backoff > 0 && waited_for.as_deref() != Some(&event) {
                // Waited out, then read again: the request may have moved on meanwhile.
                tokio::time::sleep(Duration::from_secs(backoff)).await;
                waited_for = Some(event);
                continue;
            }
            waited_for = None;
            let message_id = previous.as_ref().and_then(|r| r.message_id.clone());
            let (message_id, error) = match self.send(target, &request, &workflow, &stage, message_id.as_deref()).await {
                Ok(id) => (id.or(message_id), None),
                Err(e) => (message_id, Some(e)),
            };
            match &error {
                None => tracing::info!(request = key, event, attempt, "notified"),
                Some(e) => tracing::warn!(request = key, event, attempt, error = %e, "notification failed"),
            }
            let record = NotificationRecord {
                channel: target.channel,
                target: target.target.clone(),
                message_id,
                sent_at: Time(jiff::Timestamp::now()),
                error: error.clone().map(|e| e.chars().take(1000).collect()),
                event: Some(event),
                attempts: Some(attempt),
            };
            let told = format!("{:?} {}", target.channel, target.target).to_lowercase();
            let event_note = match &error {
                None => Some((EventType::Normal, "Notified", format!("told {told} of {}", record.event.as_deref().unwrap_or_default()))),
                Some(e) if attempt >= MAX_ATTEMPTS => {
                    Some((EventType::Warning, "NotificationFailed", format!("gave up notifying {told} after {attempt} attempts: {e}")))
                }
                Some(_) => None,
            };
            self.record(key, ns, name, record).await;
            if let Some((kind, reason, note)) = event_note {
                crate::events::publish_event(&self.client, &request.object_ref(&()), kind, reason, &note, "Notify").await;
            }
        }
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Replaces `record`'s target's entry in the request's `status.notifications`. Targets are
    /// told concurrently, so each write is made on a fresh read, one at a time.
    async fn record(&self, key: &str, ns: &str, name: &str, record: NotificationRecord) {
        let requests = Api::<ApprovalRequest>::namespaced(self.client.clone(), ns);
        let _one_at_a_time = self.writes.lock().await;
        let mut records = match requests.get_opt(name).await {
            Ok(Some(r)) => r.status.map(|s| s.notifications).unwrap_or_default(),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(request = key, error = %e, "could not read the request to record a notification");
                return;
            }
        };
        records.retain(|r| !(r.channel == record.channel && r.target == record.target));
        records.push(record);
        let patch = serde_json::json!({"status": {"notifications": records}});
        if let Err(e) = requests.patch_status(name, &ssa::write_params(), &Patch::Merge(&patch)).await {
            tracing::warn!(request = key, error = %e, "could not record a notification");
        }
    }

    /// One attempt; the Slack message's id when one was posted.
    async fn send(
        &self,
        target: &Target,
        request: &ApprovalRequest,
        workflow: &ApprovalWorkflow,
        stage: &Stage,
        message_id: Option<&str>,
    ) -> Result<Option<String>, String> {
        let ns = request.namespace().unwrap_or_default();
        let notify = workflow.spec.notify.clone().unwrap_or_default();
        match target.channel {
            NotificationChannel::Slack => {
                let slack = notify.slack.ok_or("the workflow no longer notifies Slack")?;
                let token_ref = slack.token_secret_ref.ok_or("notify.slack.tokenSecretRef is not set: no bot token to post with")?;
                let token = self.secret(&ns, &token_ref).await?;
                let mut body = notify::slack_message(request, stage);
                let method = match message_id.and_then(|id| id.split_once('/')) {
                    Some((channel, ts)) => {
                        body["channel"] = channel.into();
                        body["ts"] = ts.into();
                        "chat.update"
                    }
                    None => {
                        body["channel"] = slack.channel.clone().into();
                        "chat.postMessage"
                    }
                };
                let answer = self.slack(method, &token, &body).await?;
                Ok(Some(format!("{}/{}", answer["channel"].as_str().unwrap_or(&slack.channel), answer["ts"].as_str().unwrap_or_default())))
            }
            NotificationChannel::Webhook => {
                let hook = notify.webhook.ok_or("the workflow no longer has a webhook")?;
                let body = Bytes::from(notify::webhook_payload(request, stage).to_string());
                let event = stage.key(NotificationChannel::Webhook);
                let delivery = format!("{ns}/{}/{event}", request.name_any());
                let signature = match &hook.secret_ref {
                    Some(r) => Some(notify::webhook_signature(self.secret(&ns, r).await?.as_bytes(), jiff::Timestamp::now().as_second(), &body)),
                    None => None,
                };
                let mut headers = vec![("content-type", "application/json"), ("x-tollgate-event", event.as_str()), ("x-tollgate-delivery", delivery.as_str())];
                if let Some(s) = &signature {
                    headers.push(("x-tollgate-signature", s.as_str()));
                }
                let (status, _) = transport::post(&self.http, &hook.url, &headers, body, TIMEOUT).await?;
                if (200..300).contains(&status) { Ok(None) } else { Err(format!("the webhook answered {status}")) }
            }
            NotificationChannel::Email => {
                let email = notify.email.ok_or("the workflow no longer sends email")?;
                let smtp = self.smtp.as_ref().ok_or("the operator has no SMTP server (--smtp-url)")?;
                let (subject, text, html) = notify::email(request, stage);
                send_email(smtp, &email.to, &subject, text, html).await.map(|()| None)
            }
        }
    }

    async fn slack(&self, method: &str, token: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let url = format!("{}/{method}", self.slack_api.trim_end_matches('/'));
        let auth = format!("Bearer {}", token.trim());
        let headers = [("content-type", "application/json; charset=utf-8"), ("authorization", auth.as_str())];
        let (status, answer) = transport::post(&self.http, &url, &headers, Bytes::from(body.to_string()), TIMEOUT).await?;
        tollgate_core::approval::slack::api_result(status, &answer).map_err(|e| format!("{method}: {e}"))
    }

    async fn secret(&self, ns: &str, r: &SecretKeyRef) -> Result<String, String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns).get(&r.name).await.map_err(|e| format!("reading Secret {ns}/{}: {e}", r.name))?;
        let value = secret.data.as_ref().and_then(|d| d.get(&r.key)).ok_or_else(|| format!("Secret {ns}/{} has no key {}", r.name, r.key))?;
        String::from_utf8(value.0.clone()).map_err(|_| format!("Secret {ns}/{} key {} is not text", r.name, r.key))
    }
}

/// A workflow's targets, each as its records name it.
pub fn targets(notify: Option<&Notify>) -> Vec<Target> {
    let Some(n) = notify else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(s) = &n.slack {
        out.push(Target { channel: NotificationChannel::Slack, target: s.channel.clone() });
    }
    if let Some(w) = &n.webhook {
        let host = w.url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or(&w.url);
        out.push(Target { channel: NotificationChannel::Webhook, target: host.chars().take(256).collect() });
    }
    if let Some(e) = &n.email {
        out.push(Target { channel: NotificationChannel::Email, target: e.to.join(",").chars().take(256).collect() });
    }
    out
}

async fn send_email(smtp: &Smtp, to: &[String], subject: &str, text: String, html: String) -> Result<(), String> {
    use lettre::message::{Mailbox, MultiPart};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from: Mailbox = smtp.from.parse().map_err(|e| format!("--smtp-from {:?}: {e}", smtp.from))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for address in to {
        builder = builder.to(address.parse::<Mailbox>().map_err(|e| format!("address {address:?}: {e}"))?);
    }
    let message = builder.multipart(MultiPart::alternative_plain_html(text, html)).map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host).port(smtp.port).timeout(Some(TIMEOUT)).build();
    transport.send(message).await.map(|_| ()).map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))
}
