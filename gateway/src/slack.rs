//! `POST /slack/interactions` (DESIGN §3.3): a click on a request's Approve or Deny button, or
//! the reason modal submitted, becomes a decision appended to the request's status as
//! `slack:<member id>`, `via: slack`, written as the gateway, which the API server's admission
//! alone accepts for Slack decisions and checks as it checks `kubectl approve` (an approver of the
//! workflow, once, while pending). Nothing is written unless Slack's signature holds, is fresh
//! and was not seen before (by any replica). The person who clicked is told what happened, in plain words.

use crate::state::GatewayState;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow, Verdict, Via};
use tollgate_core::approval::slack::{self, Interaction, Place};
use tollgate_mcp_client::transport::{self, Body, full};
use tracing::Instrument;

const MAX_BODY: usize = 64 << 10;
const ATTEMPTS: usize = 3;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub async fn handle(req: Request<Incoming>, gw: Arc<GatewayState>) -> Response<Body> {
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(secret) = gw.config.slack_signing_secret.as_ref() else {
        return text(StatusCode::NOT_FOUND, "Slack is not configured on this gateway (Gateway spec.slack)");
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (timestamp, signature) = (header("x-slack-request-timestamp"), header("x-slack-signature"));
    // Before anything is known of who sent it: whoever can reach the gateway can send this.
    let body = match transport::read_request(req.into_body(), MAX_BODY, Duration::from_secs(gw.config.request_body_seconds)).await {
        Ok(b) => b,
        Err(e) => return text(e.status(), &e.to_string()),
    };
    let now = jiff::Timestamp::now().as_second();
    if let Err(e) = slack::verify(secret.0.as_bytes(), timestamp.as_deref(), signature.as_deref(), &body, now) {
        tracing::warn!(error = %e, "Slack interaction refused");
        gw.metrics.tool_call("deny", "slack_unverified");
        return text(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    // Remembered in the ledger's database, which every replica shares: a replay is refused by
    // whichever replica it reaches.
    let keep_us = 2 * slack::MAX_AGE_SECONDS * 1_000_000;
    // Keyed as verified (trimmed): one signature written two ways is still one request.
    match gw.ledger.first_sighting(signature.as_deref().unwrap_or_default().trim(), now * 1_000_000, keep_us).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("Slack interaction replayed; refused");
            gw.metrics.tool_call("deny", "slack_replayed");
            return text(StatusCode::UNAUTHORIZED, "this request was already received");
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not check a Slack interaction for a replay; refused");
            return text(StatusCode::SERVICE_UNAVAILABLE, "the gateway cannot check this request for a replay now; try again");
        }
    }
    let interaction = match slack::parse(&body) {
        Ok(i) => i,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let span = tracing::info_span!("slack_interaction", member = tracing::field::Empty, request = tracing::field::Empty);
    match interaction {
        Interaction::Ignored => text(StatusCode::OK, ""),
        Interaction::Click { member, verdict, namespace, request, place, trigger_id } => {
            span.record("member", member.as_str());
            span.record("request", format!("{namespace}/{request}"));
            clicked(&gw, &member, verdict, &namespace, &request, &place, &trigger_id).instrument(span).await
        }
        Interaction::Reason { member, verdict, namespace, request, place, reason } => {
            span.record("member", member.as_str());
            span.record("request", format!("{namespace}/{request}"));
            submitted(&gw, &member, verdict, &namespace, &request, &place, &reason).instrument(span).await
        }
    }
}

/// A button clicked: decided at once, or the reason form opened when the decision needs one.
async fn clicked(gw: &GatewayState, member: &str, verdict: Verdict, namespace: &str, request: &str, place: &Place, trigger_id: &str) -> Response<Body> {
    let (requires, workflow) = match reason_rule(gw, namespace, request).await {
        Ok(rule) => rule,
        Err(said) => {
            tell(gw, place, member, &said).await;
            return text(StatusCode::OK, "");
        }
    };
    // A Deny says why, as everywhere: the click opens the form for it.
    if tollgate_core::approval::decision::reason_needed(verdict, requires) {
        let modal = slack::reason_modal(trigger_id, verdict, namespace, request, place);
        if let Err(e) = slack_call(gw, "views.open", &modal).await {
            tracing::warn!(error = %e, "could not open the reason modal");
            tell(gw, place, member, &format!("Nothing was recorded: a reason is required, and the form for it could not be opened ({e}).")).await;
        }
        return text(StatusCode::OK, "");
    }
    let said = decide(gw, member, verdict, namespace, request, None, (&workflow, requires)).await;
    tell(gw, place, member, &said).await;
    text(StatusCode::OK, "")
}

/// The reason form submitted: a blank or oversized reason goes back to the form.
async fn submitted(gw: &GatewayState, member: &str, verdict: Verdict, namespace: &str, request: &str, place: &Place, reason: &str) -> Response<Body> {
    let problem = if reason.trim().is_empty() {
        Some("A reason is required.".to_owned())
    } else {
        tollgate_core::approval::decision::checked_reason(verdict, Some(reason), "", false).err().map(|p| capitalized(&p.to_string()))
    };
    if let Some(problem) = problem {
        let errors = json!({"response_action": "errors", "errors": {"reason": problem}});
        let mut r = Response::new(full(errors.to_string()));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    let said = decide(gw, member, verdict, namespace, request, Some(reason), ("", false)).await;
    tell(gw, place, member, &said).await;
    text(StatusCode::OK, "")
}

/// Whether the request's workflow requires a reason with every decision, and its name; what to
/// tell the member when the request has already ended or cannot be read (no form is opened).
async fn reason_rule(gw: &GatewayState, ns: &str, name: &str) -> Result<(bool, String), String> {
    let ar = match Api::<ApprovalRequest>::namespaced(gw.client.clone(), ns).get_opt(name).await {
        Ok(Some(ar)) => ar,
        Ok(None) => return Err(format!("Nothing was recorded: request {ns}/{name} no longer exists.")),
        Err(e) => return Err(format!("Nothing was recorded: the request could not be read ({e}).")),
    };
    if let Some(phase) = ar.status.as_ref().and_then(|s| s.phase).filter(|p| p.is_final()) {
        return Err(format!("Nothing was recorded: request {ns}/{name} is already {phase}."));
    }
    let workflow = ar.spec.workflow.clone();
    let requires = matches!(Api::<ApprovalWorkflow>::namespaced(gw.client.clone(), ns).get_opt(&workflow).await, Ok(Some(w)) if w.spec.require_reason);
    Ok((requires, workflow))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Appends the decision; what to tell the member, whatever happened.
async fn decide(gw: &GatewayState, member: &str, verdict: Verdict, ns: &str, name: &str, reason: Option<&str>, workflow: (&str, bool)) -> String {
    let user = format!("{}{member}", tollgate_core::approval::SLACK_USER_PREFIX);
    let id = format!("{ns}/{name}");
    let api = Api::<ApprovalRequest>::namespaced(gw.client.clone(), ns);
    let decision = match tollgate_core::approval::decision::person_decision(&user, verdict, reason, Via::Slack, jiff::Timestamp::now(), workflow.0, workflow.1)
    {
        Ok(d) => d,
        Err(problem) => return format!("Nothing was recorded: {problem}."),
    };
    let verb = if verdict == Verdict::Approve { "approved" } else { "denied" };
    for _ in 0..ATTEMPTS {
        let ar = match api.get_opt(name).await {
            Ok(Some(ar)) => ar,
            Ok(None) => return format!("Nothing was recorded: request {id} no longer exists."),
            Err(e) => return format!("Nothing was recorded: the request could not be read ({e})."),
        };
        let status = ar.status.clone().unwrap_or_default();
        if let Some(phase) = status.phase.filter(|p| p.is_final()) {
            return format!("Nothing was recorded: request {id} is already {phase}.");
        }
        if status.decisions.iter().any(|d| d.user == user) {
            return format!("Nothing was recorded: you already decided on {id}.");
        }
        let ops = match tollgate_core::approval::decision::append_decision(&ar, &decision).and_then(serde_json::from_value::<json_patch::Patch>) {
            Ok(ops) => ops,
            Err(e) => return format!("Nothing was recorded: {e}."),
        };
        let params = PatchParams { field_manager: Some("tollgate-gateway".into()), ..PatchParams::default() };
        match api.patch_status(name, &params, &Patch::Json::<()>(ops)).await {
            Ok(_) => {
                tracing::info!(user, decision = verb, "Slack decision recorded");
                gw.metrics.tool_call(verb, "slack_decision");
                let tool = format!("{} on {}", ar.spec.tool, ar.spec.server);
                return format!("You {verb} {id} ({tool}). Your decision is in the request's status.");
            }
            Err(kube::Error::Api(s)) if tollgate_core::approval::decision::is_stale_write(s.code, &s.message) => continue,
            Err(kube::Error::Api(s)) => {
                // The admission webhook's refusal, without the API server's framing.
                let why = s.message.split_once("denied the request: ").map_or(s.message.as_str(), |(_, why)| why);
                tracing::info!(user, refusal = why, "Slack decision refused");
                gw.metrics.tool_call("deny", "slack_refused");
                return format!("Nothing was recorded: {why}");
            }
            Err(e) => return format!("Nothing was recorded: {e}."),
        }
    }
    format!("Nothing was recorded: {id} kept changing; try again.")
}

/// An ephemeral message to `member` in the message's channel (only they see it).
async fn tell(gw: &GatewayState, place: &Place, member: &str, said: &str) {
    if place.channel.is_empty() {
        return;
    }
    let body = json!({"channel": place.channel, "user": member, "text": said});
    if let Err(e) = slack_call(gw, "chat.postEphemeral", &body).await {
        tracing::warn!(error = %e, "could not answer the person who clicked");
    }
}

async fn slack_call(gw: &GatewayState, method: &str, body: &Value) -> Result<Value, String> {
    let token = gw.config.slack_bot_token.as_ref().ok_or("no bot token (Gateway spec.slack.botTokenSecretRef)")?;
    let url = format!("{}/{method}", gw.config.slack_api_url.trim_end_matches('/'));
    let auth = format!("Bearer {}", token.0.trim());
    let headers = [("content-type", "application/json; charset=utf-8"), ("authorization", auth.as_str())];
    let (status, answer) = transport::post(&gw.http, &url, &headers, Bytes::from(body.to_string()), Duration::from_secs(10)).await?;
    slack::api_result(status, &answer).map_err(|e| format!("{method}: {e}"))
}
