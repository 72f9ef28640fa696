//! Shipping audit records to the gateway's audit store (DESIGN §3.5), in batches, under the
//! sidecar's own service-account token (the gateway asks the API server whose it is). A batch
//! keeps its id across retries, so the store takes it once however often it is sent. While the
//! gateway is away, records wait in a bounded queue; past its bound the oldest are dropped, and
//! the log says how many (they are still in this sidecar's stdout). Batches are bounded in bytes
//! as in records, a record past the store's bound is cut down before it is queued, and a batch
//! the gateway refuses is split until the one record it refuses is given up: no record blocks
//! the ones after it.

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tollgate_core::audit::bounds;
use tollgate_mcp_client::transport::{self, HttpClient, full};

/// Records waiting at most; a gateway outage longer than this loses the oldest.
pub const MAX_QUEUED: usize = 10_000;
/// Their bytes at most, past which the oldest are lost too. Records are cut to 64 KiB, so ten
/// thousand could be 640 MiB, ten times the sidecar's memory limit: an agent's large calls
/// during a gateway outage would take the sidecar down, and the queue with it, with no gap
/// record to say so.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
const MAX_BATCH: usize = 500;
/// A batch's bytes at most (the gateway takes 8 MiB): a few calls with megabytes of arguments
/// make several batches, never one the gateway refuses.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
const EVERY: Duration = Duration::from_millis(500);

pub struct Shipper {
    url: String,
    token_file: PathBuf,
    client: HttpClient,
    queue: Mutex<Queue>,
    instance: String,
    agent: String,
    metrics: std::sync::Arc<tollgate_runtime::admin::Metrics>,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Bytes>,
    /// The records' bytes.
    bytes: usize,
    dropped: u64,
}

impl Queue {
    /// Queues `record` last, dropping (and counting) the oldest past either bound.
    fn push_back(&mut self, record: Bytes) {
        while self.records.len() >= MAX_QUEUED || (!self.records.is_empty() && self.bytes + record.len() > MAX_QUEUED_BYTES) {
            let Some(oldest) = self.records.pop_front() else { break };
            self.bytes -= oldest.len();
            self.dropped += 1;
        }
        self.bytes += record.len();
        self.records.push_back(record);
    }

    /// Puts `record` back first: one taken from the queue, or the gap record standing for one.
    fn push_front(&mut self, record: Bytes) {
        self.bytes += record.len();
        self.records.push_front(record);
    }

    fn take(&mut self, n: usize) -> Vec<Bytes> {
        let taken: Vec<Bytes> = self.records.drain(..n).collect();
        self.bytes -= taken.iter().map(Bytes::len).sum::<usize>();
        taken
    }
}

/// Why a batch was not shipped; the gateway's status, when it answered.
struct NotShipped {
    status: Option<hyper::StatusCode>,
    reason: String,
}

impl Shipper {
    /// Ships to `gateway`, trusting `roots` (its CA, or the platform's roots).
    pub fn new(
        gateway: &str,
        roots: std::sync::Arc<rustls::RootCertStore>,
        token_file: PathBuf,
        instance: &str,
        agent: &str,
        metrics: std::sync::Arc<tollgate_runtime::admin::Metrics>,
    ) -> Shipper {
        let client = transport::client(roots);
        Shipper {
            url: format!("{}/audit/v1/batches", gateway.trim_end_matches('/')),
            token_file,
            client,
            queue: Mutex::default(),
            instance: instance.to_owned(),
            agent: agent.to_owned(),
            metrics,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues one record's JSON; one larger than the store keeps whole is cut down first, saying
    /// so in the record (its whole text is in this sidecar's stdout).
    pub fn push(&self, record: Bytes) {
        let record = if record.len() > bounds::MAX_RECORD_BYTES {
            self.metrics.audit("cut", 1);
            bounded(&record)
        } else {
            record
        };
        self.queue().push_back(record);
    }

    /// A record standing for `lost` records that will never be shipped, so the store (and the
    /// agent's `AuditComplete` condition) knows the trail has a hole there.
    fn gap(&self, lost: u64, reason: &str) -> Bytes {
        let record = bounds::gap(&self.agent, lost, reason, &jiff::Timestamp::now().to_string());
        Bytes::from(record.to_string())
    }

    /// The next batch: as many queued records as fit its bounds (one at least).
    fn next_batch(&self) -> (Vec<Bytes>, u64) {
        let mut q = self.queue();
        let (mut n, mut bytes) = (0, 0);
        while let Some(r) = q.records.get(n) {
            if n > 0 && (n == MAX_BATCH || bytes + r.len() > MAX_BATCH_BYTES) {
                break;
            }
            bytes += r.len();
            n += 1;
        }
        (q.take(n), std::mem::take(&mut q.dropped))
    }

    /// Sends batches until the process ends.
    pub async fn run(&self) {
        let mut batch_no: u64 = 0;
        let mut pending: Option<(String, Vec<Bytes>)> = None;
        let mut backoff = EVERY;
        loop {
            tokio::time::sleep(backoff).await;
            if pending.is_none() {
                let (mut records, dropped) = self.next_batch();
                if dropped > 0 {
                    records.insert(0, self.gap(dropped, "overflowed"));
                    self.metrics.audit("overflowed", dropped);
                    tracing::warn!(
                        dropped,
                        limit = MAX_QUEUED,
                        "the audit queue overflowed while the gateway was away: the oldest records were not shipped (they are in this sidecar's log)"
                    );
                }
                if records.is_empty() {
                    continue;
                }
                batch_no += 1;
                pending = Some((format!("{}-{batch_no}", self.instance), records));
            }
            let Some((id, records)) = &mut pending else { continue };
            match self.send(id, records).await {
                Ok(()) => {
                    pending = None;
                    backoff = EVERY;
                }
                // The gateway will never take this batch as it is: it is split, and a single
                // record it refuses is given up (it is in stdout), so it holds up none after it.
                Err(NotShipped { status: Some(status), reason }) if status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 408 | 429) => {
                    if records.len() > 1 {
                        let rest = records.split_off(records.len() / 2);
                        let mut q = self.queue();
                        for r in rest.into_iter().rev() {
                            q.push_front(r);
                        }
                        tracing::warn!(batch = %id, %status, "the gateway refused an audit batch; shipping it in halves");
                        batch_no += 1;
                        *id = format!("{}-{batch_no}", self.instance);
                    } else {
                        tracing::error!(batch = %id, %status, %reason, "the gateway refused an audit record; it is in this sidecar's log only");
                        self.metrics.audit("refused", 1);
                        // Said by a gap record, unless the refused one was that (no endless loop).
                        let was_gap =
                            records.first().and_then(|r| serde_json::from_slice::<serde_json::Value>(r).ok()).is_some_and(|r| r["kind"] == bounds::GAP_KIND);
                        if !was_gap {
                            self.queue().push_front(self.gap(1, "refused"));
                        }
                        pending = None;
                    }
                    backoff = EVERY;
                }
                Err(e) => {
                    tracing::info!(batch = %id, records = records.len(), error = %e.reason, "audit batch not shipped yet; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn send(&self, id: &str, records: &[Bytes]) -> Result<(), NotShipped> {
        let fail = |reason: String| NotShipped { status: None, reason };
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| fail(format!("reading the token {}: {e}", self.token_file.display())))?;
        let mut body = Vec::with_capacity(records.iter().map(Bytes::len).sum::<usize>() + 64);
        body.extend_from_slice(format!("{{\"batch_id\":{},\"records\":[", serde_json::Value::from(id)).as_bytes());
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.extend_from_slice(b"]}");
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|e| fail(e.to_string()))?;
        auth.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, auth)
            .body(full(body))
            .map_err(|e| fail(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| fail("no answer within 10s".to_owned()))?
            .map_err(|e| fail(transport::root_cause(&e)))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let text = transport::read_body(resp.into_body(), 4096, tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap_or_default();
        Err(NotShipped { status: Some(status), reason: format!("the gateway answered {status}: {}", String::from_utf8_lossy(&text)) })
    }
}

/// A record cut down to the store's bound (`tollgate_core::audit::bounds`).
fn bounded(record: &[u8]) -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(record).unwrap_or_else(|_| serde_json::json!({"kind": "unreadable"}));
    if let Some(bytes) = bounds::bound(&mut v, bounds::MAX_RECORD_BYTES) {
        tracing::warn!(bytes, limit = bounds::MAX_RECORD_BYTES, "an audit record was cut down before shipping; it is whole in this log");
    }
    Bytes::from(v.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    /// A gateway that refuses any batch holding a `poison` record and keeps every other record,
    /// telling `kept`'s watchers each time.
    async fn gateway(kept: Arc<tokio::sync::watch::Sender<Vec<serde_json::Value>>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let batch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        let records = batch["records"].as_array().cloned().unwrap_or_default();
                        let status = if records.iter().any(|r| r["tool"] == "poison") {
                            hyper::StatusCode::BAD_REQUEST
                        } else {
                            kept.send_modify(|k| k.extend(records));
                            hyper::StatusCode::OK
                        };
                        let mut resp = hyper::Response::new(full("{}"));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service));
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_record_is_given_up_and_leaves_a_gap_record_the_ones_after_it_still_ship() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kept = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
        let mut seen = kept.subscribe();
        let url = gateway(kept.clone()).await;
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "t").unwrap();
        let metrics = Arc::new(tollgate_runtime::admin::Metrics::default());
        let shipper = Arc::new(Shipper::new(&url, std::sync::Arc::new(rustls::RootCertStore::empty()), token.path().to_owned(), "pod-1", "coder", metrics));
        for tool in ["first", "poison", "last"] {
            shipper.push(Bytes::from(serde_json::json!({"kind": "decision", "tool": tool}).to_string()));
        }
        let running = tokio::spawn({
            let s = shipper.clone();
            async move { s.run().await }
        });
        let done = |now: &Vec<serde_json::Value>| now.iter().any(|r| r["tool"] == "last") && now.iter().any(|r| r["kind"] == bounds::GAP_KIND);
        let waited = tokio::time::timeout(Duration::from_secs(20), seen.wait_for(done)).await;
        let shipped = match waited {
            Ok(Ok(now)) => now.clone(),
            _ => panic!("not shipped within 20 s: {:?}", kept.borrow()),
        };
        running.abort();
        let tools: Vec<&str> = shipped.iter().filter_map(|r| r["tool"].as_str()).collect();
        assert_eq!(tools, ["first", "last"], "{shipped:?}");
        let gap = shipped.iter().find(|r| r["kind"] == bounds::GAP_KIND).unwrap();
        assert_eq!((gap["lost"].as_u64(), gap["reason"].as_str(), gap["agent"]["name"].as_str()), (Some(1), Some("refused"), Some("coder")), "{gap}");
    }

    #[test]
    fn an_overflowing_queue_drops_the_oldest_and_counts_them() {
        let metrics = Arc::new(tollgate_runtime::admin::Metrics::default());
        let shipper =
            Shipper::new("http://127.0.0.1:9", std::sync::Arc::new(rustls::RootCertStore::empty()), PathBuf::from("/nonexistent"), "pod-1", "coder", metrics);
        for i in 0..MAX_QUEUED + 3 {
            shipper.push(Bytes::from(format!("{{\"n\":{i}}}")));
        }
        let (batch, dropped) = shipper.next_batch();
        assert_eq!(dropped, 3);
        assert_eq!(batch.first().map(|b| b.as_ref()), Some(&b"{\"n\":3}"[..]));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let metrics = Arc::new(tollgate_runtime::admin::Metrics::default());
        let shipper =
            Shipper::new("http://127.0.0.1:9", std::sync::Arc::new(rustls::RootCertStore::empty()), PathBuf::from("/nonexistent"), "pod-1", "coder", metrics);
        // Records of 60 KiB (under the 64 KiB cut), far fewer than MAX_QUEUED.
        let record = |i: usize| Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60 * 1024)));
        let fit = MAX_QUEUED_BYTES / record(0).len();
        for i in 0..fit + 5 {
            shipper.push(record(i));
        }
        {
            let q = shipper.queue();
            assert_eq!((q.records.len(), q.dropped), (fit, 5), "the oldest dropped past the bytes' bound");
            assert_eq!(q.bytes, q.records.iter().map(Bytes::len).sum::<usize>());
            assert!(q.bytes <= MAX_QUEUED_BYTES);
        }
        let (batch, dropped) = shipper.next_batch();
        assert_eq!(dropped, 5);
        assert!(batch.first().is_some_and(|b| b.starts_with(b"{\"n\":5,")), "the oldest kept is the sixth");
        let q = shipper.queue();
        assert_eq!(q.bytes, q.records.iter().map(Bytes::len).sum::<usize>(), "taking a batch counts its bytes out");
    }
}
