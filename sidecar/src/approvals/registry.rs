//! The calls this sidecar holds in async mode, by request name: bounded in number and in time.

use crate::snapshot::Server;
use bytes::Bytes;
use hyper::header::HeaderMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_core::approval::held::Binding;

/// Async held calls kept at most; past it new holds are refused (answered and expired ones are
/// pruned first).
pub const MAX_HELD: usize = 4096;
/// How often an agent holding a call is told to poll, in seconds.
pub(super) const POLL_SECONDS: u64 = 5;
/// How long an answered call's result stays for late polls.
const KEEP_ANSWERED: Duration = Duration::from_secs(600);

/// Calls held in async mode, by request name.
#[derive(Default)]
pub struct Registry {
    calls: Mutex<HashMap<String, Arc<Held>>>,
}

impl Registry {
    /// The server a held call goes to (`None` for standalone approvals and unknown requests).
    pub fn server_of(&self, name: &str) -> Option<String> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(name).and_then(|h| h.server.as_ref().map(|s| s.name.clone()))
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<Held>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Keeps `held` under `name`, after dropping calls past their deadline and answers older than
    /// [`KEEP_ANSWERED`]; `false` when the registry is still full.
    pub(super) fn insert(&self, name: String, held: Arc<Held>) -> bool {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        calls.retain(|_, h| now < h.deadline && h.answered_at.get().is_none_or(|at| now.duration_since(*at) < KEEP_ANSWERED));
        if calls.len() >= MAX_HELD {
            return false;
        }
        calls.insert(name, held);
        true
    }

    pub fn len(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Held {
    /// The outcome record, filled in when the request ends.
    pub(super) audit: tollgate_core::audit::AuditRecord,
    pub(super) created: Instant,
    pub(super) deadline: Instant,
    pub(super) server: Option<Server>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// The request it created, as created: it runs for that object only.
    pub(super) binding: Binding,
    /// The workflow it was held under: the quorum it must reach, whatever the workflow becomes.
    pub(super) workflow: tollgate_core::approval::Workflow,
    /// The final answer once known: concurrent polls wait for it, later polls get the same one.
    pub(super) answer: tokio::sync::OnceCell<Concluded>,
    pub(super) answered_at: std::sync::OnceLock<Instant>,
    /// The wait's span (none without tracing), ended with the call's outcome record.
    pub(super) span: std::sync::Mutex<tracing::Span>,
}

impl Held {
    /// The wait's span, to run the held call's ending in.
    pub(super) fn span(&self) -> tracing::Span {
        self.span.lock().map(|s| s.clone()).unwrap_or_else(|_| tracing::Span::none())
    }
}

/// How a held call ended, kept for every later poll.
#[derive(Clone)]
pub(crate) struct Concluded {
    pub result: serde_json::Value,
    /// Ended by its own client (`tasks/cancel`), not by its request.
    pub by_client: bool,
}
