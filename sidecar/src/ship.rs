//! Shipping audit records to the gateway's audit store (DESIGN §3.5), in batches, under the
//! sidecar's own service-account token (the gateway asks the API server whose it is). A batch
//! keeps its id across retries, so the store takes it once however often it is sent. While the
//! gateway is away, records wait in a bounded queue; past its bound the oldest are dropped, and
//! the log says how many (they are still in this sidecar's stdout).

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tollgate_mcp_client::transport::{self, HttpClient, full};

/// Records waiting at most; a gateway outage longer than this loses the oldest.
pub const MAX_QUEUED: usize = 10_000;
const MAX_BATCH: usize = 500;
const EVERY: Duration = Duration::from_millis(500);

pub struct Shipper {
    url: String,
    token_file: PathBuf,
    client: HttpClient,
    queue: Mutex<Queue>,
    instance: String,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Bytes>,
    dropped: u64,
}

impl Shipper {
    pub fn new(gateway: &str, token_file: PathBuf, instance: &str) -> Shipper {
        let client = transport::client(std::sync::Arc::new(transport::platform_roots()));
        Shipper {
            url: format!("{}/audit/v1/batches", gateway.trim_end_matches('/')),
            token_file,
            client,
            queue: Mutex::default(),
            instance: instance.to_owned(),
        }
    }

    /// Queues one record's JSON.
    pub fn push(&self, record: Bytes) {
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.records.len() >= MAX_QUEUED {
            q.records.pop_front();
            q.dropped += 1;
        }
        q.records.push_back(record);
    }

    /// Sends batches until the process ends.
    pub async fn run(&self) {
        let mut batch_no: u64 = 0;
        let mut pending: Option<(String, Vec<Bytes>)> = None;
        let mut backoff = EVERY;
        loop {
            tokio::time::sleep(backoff).await;
            if pending.is_none() {
                let (records, dropped) = {
                    let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let n = q.records.len().min(MAX_BATCH);
                    (q.records.drain(..n).collect::<Vec<_>>(), std::mem::take(&mut q.dropped))
                };
                if dropped > 0 {
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
            let Some((id, records)) = &pending else { continue };
            match self.send(id, records).await {
                Ok(()) => {
                    pending = None;
                    backoff = EVERY;
                }
                Err(e) => {
                    tracing::info!(batch = id, records = records.len(), error = %e, "audit batch not shipped yet; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn send(&self, id: &str, records: &[Bytes]) -> Result<(), String> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| format!("reading the token {}: {e}", self.token_file.display()))?;
        let mut body = Vec::with_capacity(records.iter().map(Bytes::len).sum::<usize>() + 64);
        body.extend_from_slice(format!("{{\"batch_id\":{},\"records\":[", serde_json::Value::from(id)).as_bytes());
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.extend_from_slice(b"]}");
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|e| e.to_string())?;
        auth.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, auth)
            .body(full(body))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| "no answer within 10s".to_owned())?
            .map_err(|e| transport::root_cause(&e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let text = transport::read_body(resp.into_body(), 4096, tokio::time::Instant::now() + Duration::from_secs(5)).await.unwrap_or_default();
        Err(format!("the gateway answered {status}: {}", String::from_utf8_lossy(&text)))
    }
}
