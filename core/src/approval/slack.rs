//! Slack interactions (DESIGN §3.3): the v0 signature over the raw body, the clicks and modal
//! submissions Tollgate's messages produce, the reason modal, and what the person who clicked is
//! told. The gateway does the IO; the API server's admission has the last word on every decision.

use crate::hmac::{constant_time_eq, hmac_sha256};
use serde_json::{Value, json};
use tollgate_api::Verdict;

/// Older requests are refused: Slack's own rule, which bounds how long a replay cache must keep.
pub const MAX_AGE_SECONDS: i64 = 300;
pub const APPROVE_ACTION: &str = "tollgate_approve";
pub const DENY_ACTION: &str = "tollgate_deny";
pub const REASON_CALLBACK: &str = "tollgate_reason";
const REASON_BLOCK: &str = "reason";
const REASON_INPUT: &str = "reason_input";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Slack-Request-Timestamp or X-Slack-Signature header")]
    Missing,
    #[error("the request timestamp is not a number")]
    BadTimestamp,
    #[error("the request is {0} s from now; at most {MAX_AGE_SECONDS} s are accepted")]
    Stale(i64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks Slack's `v0` signature of `body` (exactly as received) made with `secret`.
pub fn verify(secret: &[u8], timestamp: Option<&str>, signature: Option<&str>, body: &[u8], now_unix: i64) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else { return Err(SignatureError::Missing) };
    let t: i64 = ts.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    let age = now_unix.saturating_sub(t);
    if age.abs() > MAX_AGE_SECONDS {
        return Err(SignatureError::Stale(age));
    }
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(body);
    let expected = format!("v0={}", hex::encode(hmac_sha256(secret, &base)));
    if constant_time_eq(expected.as_bytes(), sig.trim().as_bytes()) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// `v0` signature of `body` at `timestamp`, as Slack makes it (for tests and fakes).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut base = format!("v0:{timestamp}:").into_bytes();
    base.extend_from_slice(body);
    format!("v0={}", hex::encode(hmac_sha256(secret, &base)))
}

/// The answer of a Web API method: its JSON when `ok`, else what Slack said went wrong. Slack
/// reports errors in the body with status 200, except rate limits (429).
pub fn api_result(status: u16, body: &[u8]) -> Result<Value, String> {
    if status == 429 {
        return Err("rate limited by Slack (429)".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| format!("Slack answered {status} with no JSON"))?;
    if v["ok"] == true { Ok(v) } else { Err(format!("Slack said {}", v["error"].as_str().unwrap_or("nothing (ok is not true)"))) }
}

/// Where a Tollgate message is, to answer the person who clicked in its channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub channel: String,
    pub message_ts: String,
}

/// What an interaction asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// An Approve or Deny button of a request's message.
    Click { member: String, verdict: Verdict, namespace: String, request: String, place: Place, trigger_id: String },
    /// The reason modal, submitted.
    Reason { member: String, verdict: Verdict, namespace: String, request: String, place: Place, reason: String },
    /// Anything else (another app's button, a modal closed): acknowledged, nothing done.
    Ignored,
}

/// The `payload` field of a form-encoded interaction body.
pub fn parse(body: &[u8]) -> Result<Interaction, String> {
    let payload = form_field(body, "payload").ok_or("no payload field in the form body")?;
    let v: Value = serde_json::from_str(&payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let member = v["user"]["id"].as_str().unwrap_or_default().to_owned();
    if member.is_empty() {
        return Err("the payload names no user".into());
    }
    match v["type"].as_str() {
        Some("block_actions") => {
            let Some(action) = v["actions"].as_array().and_then(|a| a.first()) else { return Ok(Interaction::Ignored) };
            let verdict = match action["action_id"].as_str() {
                Some(APPROVE_ACTION) => Verdict::Approve,
                Some(DENY_ACTION) => Verdict::Deny,
                _ => return Ok(Interaction::Ignored),
            };
            let (namespace, request) = split_request(action["value"].as_str().unwrap_or_default())?;
            let place = Place {
                channel: v["container"]["channel_id"].as_str().or_else(|| v["channel"]["id"].as_str()).unwrap_or_default().to_owned(),
                message_ts: v["container"]["message_ts"].as_str().or_else(|| v["message"]["ts"].as_str()).unwrap_or_default().to_owned(),
            };
            Ok(Interaction::Click { member, verdict, namespace, request, place, trigger_id: v["trigger_id"].as_str().unwrap_or_default().to_owned() })
        }
        Some("view_submission") if v["view"]["callback_id"] == REASON_CALLBACK => {
            let meta: Value = serde_json::from_str(v["view"]["private_metadata"].as_str().unwrap_or("{}")).map_err(|e| format!("private_metadata: {e}"))?;
            let verdict = if meta["verdict"] == "deny" { Verdict::Deny } else { Verdict::Approve };
            let (namespace, request) = split_request(meta["request"].as_str().unwrap_or_default())?;
            let place =
                Place { channel: meta["channel"].as_str().unwrap_or_default().to_owned(), message_ts: meta["ts"].as_str().unwrap_or_default().to_owned() };
            let reason = v["view"]["state"]["values"][REASON_BLOCK][REASON_INPUT]["value"].as_str().unwrap_or_default().trim().to_owned();
            Ok(Interaction::Reason { member, verdict, namespace, request, place, reason })
        }
        _ => Ok(Interaction::Ignored),
    }
}

fn split_request(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((ns.to_owned(), name.to_owned())),
        _ => Err(format!("the button names no request: {value:?}")),
    }
}

/// The modal asking for a reason; what it needs to decide comes back in `private_metadata`.
pub fn reason_modal(trigger_id: &str, verdict: Verdict, namespace: &str, request: &str, place: &Place) -> Value {
    let verb = if verdict == Verdict::Approve { "Approve" } else { "Deny" };
    let meta = json!({"verdict": if verdict == Verdict::Approve { "approve" } else { "deny" }, "request": format!("{namespace}/{request}"), "channel": place.channel, "ts": place.message_ts});
    json!({
        "trigger_id": trigger_id,
        "view": {
            "type": "modal",
            "callback_id": REASON_CALLBACK,
            "private_metadata": meta.to_string(),
            "title": {"type": "plain_text", "text": format!("{verb} the call")},
            "submit": {"type": "plain_text", "text": verb},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{
                "type": "input", "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": format!("Why? ({namespace}/{request})")},
                "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true, "max_length": 1024},
            }],
        },
    })
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name).then(|| percent_decode(v)).flatten()
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn a_signature_is_checked_over_the_raw_body_and_the_time() {
        let body = b"payload=%7B%7D";
        let sig = sign(b"s3cret", 1000, body);
        assert_eq!(verify(b"s3cret", Some("1000"), Some(&sig), body, 1100), Ok(()));
        assert_eq!(verify(b"other", Some("1000"), Some(&sig), body, 1100), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"s3cret", Some("1000"), Some(&sig), b"payload=%7B+%7D", 1100), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"s3cret", Some("1000"), Some(&sig), body, 1000 + 301), Err(SignatureError::Stale(301)));
        assert_eq!(verify(b"s3cret", Some("x"), Some(&sig), body, 1000), Err(SignatureError::BadTimestamp));
        assert_eq!(verify(b"s3cret", None, Some(&sig), body, 1000), Err(SignatureError::Missing));
    }

    #[test]
    fn a_click_names_the_member_the_verdict_and_the_request() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1"}, "trigger_id": "t1",
            "container": {"type": "message", "channel_id": "C1", "message_ts": "1.2"},
            "actions": [{"action_id": "tollgate_deny", "value": "team-a/deploy-1"}]});
        let body = format!("payload={}", encode(&payload.to_string()));
        let place = Place { channel: "C1".into(), message_ts: "1.2".into() };
        assert_eq!(
            parse(body.as_bytes()),
            Ok(Interaction::Click {
                member: "U1".into(),
                verdict: Verdict::Deny,
                namespace: "team-a".into(),
                request: "deploy-1".into(),
                place,
                trigger_id: "t1".into()
            })
        );
        let other = json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "someone_elses", "value": "x"}]});
        assert_eq!(parse(format!("payload={}", encode(&other.to_string())).as_bytes()), Ok(Interaction::Ignored));
        let bad = json!({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "tollgate_approve", "value": "a/b/c"}]});
        assert!(parse(format!("payload={}", encode(&bad.to_string())).as_bytes()).is_err());
    }

    #[test]
    fn the_reason_modal_round_trips() {
        let place = Place { channel: "C1".into(), message_ts: "1.2".into() };
        let modal = reason_modal("t1", Verdict::Approve, "team-a", "deploy-1", &place);
        let submission = json!({"type": "view_submission", "user": {"id": "U2"}, "view": {
            "callback_id": REASON_CALLBACK, "private_metadata": modal["view"]["private_metadata"],
            "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": " checked the diff "}}}}}});
        let body = format!("payload={}", encode(&submission.to_string()));
        assert_eq!(
            parse(body.as_bytes()),
            Ok(Interaction::Reason {
                member: "U2".into(),
                verdict: Verdict::Approve,
                namespace: "team-a".into(),
                request: "deploy-1".into(),
                place,
                reason: "checked the diff".into()
            })
        );
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(form_field(b"a=1&payload=%7B%22x%22%3A+1%7D", "payload").as_deref(), Some("{\"x\": 1}"));
        assert_eq!(form_field(b"a=1", "payload"), None);
        assert_eq!(form_field(b"payload=%zz", "payload"), None);
    }
}
