//! Streams passed through event by event: each SSE event is forwarded as soon as it is whole
//! (never the stream buffered), while the usage the provider reports in it is noted. When the
//! gateway asked for usage the client did not ask for (OpenAI's `stream_options.include_usage`),
//! the usage-only chunk is taken out again. However the stream ends (finished, broken off, or the
//! client hanging up), what it used is reported once, so the call is always settled.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use std::time::Duration;
use tollgate_core::model::Api;
use tollgate_core::model::spend::Usage;
use tollgate_mcp_client::transport::{Body, BoxError};

/// How a stream ended, for its settlement.
#[derive(Debug, Clone, Copy, Default)]
pub struct End {
    pub usage: Option<Usage>,
    /// The provider finished the stream (the client may still have gone).
    pub finished: bool,
}

/// The usage an event reports, and whether it only carries the usage the gateway asked for.
pub fn event_usage(api: Api, data: &str) -> (Option<Usage>, bool) {
    let Ok(v) = serde_json::from_str::<Value>(data) else { return (None, false) };
    match api {
        Api::OpenAi => {
            // Chat Completions: a final chunk with `usage` (and no choices); Responses: the
            // `response.completed` event.
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                let only_usage = v["choices"].as_array().is_some_and(Vec::is_empty);
                return (Usage::from_openai(u), only_usage);
            }
            (v["response"].get("usage").filter(|u| !u.is_null()).and_then(Usage::from_openai), false)
        }
        Api::Anthropic => match v["type"].as_str() {
            Some("message_start") => (Usage::from_anthropic(&v["message"]["usage"]), false),
            Some("message_delta") => (Usage::from_anthropic(&v["usage"]), false),
            _ => (None, false),
        },
    }
}

struct Metering {
    body: Incoming,
    parser: tollgate_core::mcp::sse::Parser,
    api: Api,
    strip_usage_chunk: bool,
    end: End,
    report: Option<tokio::sync::oneshot::Sender<End>>,
}

impl Drop for Metering {
    fn drop(&mut self) {
        if let Some(tx) = self.report.take() {
            let _ = tx.send(self.end);
        }
    }
}

/// `body` forwarded event by event; `report` gets how it ended. A task reads the provider and
/// hands whole events to the client's body. It stops when the client hangs up (at once, even
/// while the provider is silent) and when the provider sends nothing for `idle`: a stalled
/// stream would otherwise hold its connection and its budget reservation for ever.
pub fn metered(body: Incoming, api: Api, strip_usage_chunk: bool, idle: Duration, report: tokio::sync::oneshot::Sender<End>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        let mut m = Metering { body, parser: tollgate_core::mcp::sse::Parser::default(), api, strip_usage_chunk, end: End::default(), report: Some(report) };
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, m.body.frame()) => next,
                () = tx.closed() => return,
            };
            let Ok(next) = next else {
                let _ = tx.send(Err(BoxError::from(format!("the provider sent nothing for {} s", idle.as_secs())))).await;
                return;
            };
            let frame = match next {
                None => {
                    m.end.finished = true;
                    return;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(Box::new(e) as BoxError)).await;
                    return;
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            let events = match m.parser.push_bytes(&data) {
                Ok(e) => e,
                Err(e) => {
                    let _ = tx.send(Err(BoxError::from(e))).await;
                    return;
                }
            };
            let mut out = Vec::new();
            for e in events {
                let (usage, only_usage) = event_usage(m.api, &e.data);
                if let Some(u) = usage {
                    m.end.usage = Some(m.end.usage.map_or(u, |seen| seen.merge(u)));
                }
                if only_usage && m.strip_usage_chunk {
                    continue;
                }
                out.extend_from_slice(e.raw.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                // The client hung up: the provider's stream is dropped, and what it used so far
                // is reported.
                return;
            }
        }
    });
    BodyExt::boxed(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_each_apis_events() {
        let chunk = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#;
        let (u, only) = event_usage(Api::OpenAi, chunk);
        assert_eq!((u.unwrap().input, u.unwrap().output, only), (9, 3, true));
        let (u, only) = event_usage(Api::OpenAi, r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#);
        assert_eq!((u, only), (None, false));
        let completed = r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#;
        assert_eq!(event_usage(Api::OpenAi, completed).0.unwrap().output, 2);
        let start = r#"{"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}"#;
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":20}}"#;
        let merged = event_usage(Api::Anthropic, start).0.unwrap().merge(event_usage(Api::Anthropic, delta).0.unwrap());
        assert_eq!((merged.input, merged.output), (11, 20));
        assert_eq!(event_usage(Api::Anthropic, "[DONE]"), (None, false));
    }
}
