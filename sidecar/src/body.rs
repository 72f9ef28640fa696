//! Response bodies: whole, streamed from upstream, or fed from a channel (held calls).

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};

/// One body type with the upstream client's, so a relayed answer needs no conversion.
pub use tollgate_mcp_client::transport::{Body, BoxError as Error, full};

pub fn streamed(incoming: hyper::body::Incoming) -> Body {
    incoming.map_err(|e| Box::new(e) as Error).boxed()
}

/// A body whose chunks are sent on the returned channel; it ends when the sender is dropped.
pub fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| Ok::<_, Error>(Frame::data(b)));
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

/// A whole JSON answer.
pub(crate) fn json(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, header("application/json"));
    r
}

/// A refusal before any message is read: the status says it, the body is a JSON-RPC error that
/// says why.
pub(crate) fn refused(status: u16, code: i64, message: &str) -> Response<Body> {
    json(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), tollgate_core::mcp::jsonrpc::error_response(None, code, message))
}

pub fn header(value: &'static str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_static(value)
}
