//! Audit records as JSON lines on stdout (DESIGN §3.5), and to the gateway's audit store when
//! one is configured ([`crate::ship`]).
//!
//! Lines gather in memory and are handed on once [`LINGER`] has passed: one syscall per call
//! pair was a tenth of the sidecar's CPU under load. Stdout is written by a thread of its own
//! (`tollgate_runtime::log_writer`): a container's stdout is a pipe the container runtime reads,
//! and when it stops reading, a write from the runtime's thread would stop every call the
//! sidecar serves. Past [`MAX_UNWRITTEN`] bytes waiting:
//! - with an audit store, records are left out of stdout (they still ship, and the store is the
//!   trail) and an `audit-gap` line says how many once stdout is read again;
//! - without one, stdout is the only copy, so no record is left out of it: new calls are refused
//!   instead ([`AuditLog::refuses_call`]) until it is read again, and then an `audit-gap` line
//!   says how many were refused without a record.
//!
//! Shutdown flushes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tollgate_core::audit::{AuditRecord, bounds};
use tollgate_runtime::log_writer::LogQueue;

/// How long a line may wait for others to share its write.
const LINGER: Duration = Duration::from_millis(2);
/// Past this much waiting, the lines are handed on at once rather than grow the buffer: two
/// buffers pass between the sidecar and stdout's writer, each at most about twice this.
const MAX_BUFFERED: usize = 128 << 10;
/// What stdout may hold unread before records are left out of it, or calls refused: two
/// thousand calls' records of 1 KiB. With the batch being written and the lines gathering, a stalled stdout holds at most
/// about twice this in memory (the sidecar's limit is 64 MiB, its RSS under load about 22).
const MAX_UNWRITTEN: usize = 4 << 20;
/// How long shutdown waits for the last records to be written.
const FLUSH: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    count: u64,
}

pub struct AuditLog {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    pub shipper: Option<crate::ship::Shipper>,
    stdout: Stdout,
    /// Calls are refused: stdout is the records' only copy and too much of it waits.
    refusing: AtomicBool,
    /// Calls refused so since the last `audit-gap` line said how many.
    refused: AtomicU64,
    /// The agent, for the `audit-gap` lines.
    agent: String,
}

/// What a call is told while its records could not be written ([`AuditLog::refuses_call`]).
pub const AUDIT_UNWRITTEN: &str =
    "Access denied: this sidecar cannot write audit records now (its stdout is not being read), so it refuses calls until it can; try again later";

/// The reason of an `audit-gap` line standing for calls refused, without a record, while stdout
/// was not read and no audit store kept records.
pub const REFUSED_UNREAD: &str = "refused_unread";

/// Where stdout's lines go: its writer thread, or, where that could not start, stdout itself
/// from the caller, as before there was one.
enum Stdout {
    Queue(LogQueue),
    Direct,
}

impl AuditLog {
    /// `agent` names the records that leave a gap on stdout; `left_out` counts them.
    pub fn new(shipper: Option<crate::ship::Shipper>, agent: &str, left_out: impl Fn(u64) + Send + 'static) -> AuditLog {
        let (agent, gap_agent) = (agent.to_owned(), agent.to_owned());
        let note = move |lost: u64| {
            left_out(lost);
            tracing::warn!(lost, "stdout was not read for a while: audit records were left out of it (they are shipped to the audit store when there is one)");
            let mut line = bounds::gap(&agent, lost, "unread", &jiff::Timestamp::now().to_string()).to_string().into_bytes();
            line.push(b'\n');
            line
        };
        // Without a store, nothing is left out: calls are refused instead (`refuses_call`).
        let bound = if shipper.is_some() { MAX_UNWRITTEN } else { usize::MAX };
        let stdout = match LogQueue::start_bounded(std::io::stdout(), "audit-writer", bound, note) {
            Ok(q) => Stdout::Queue(q),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the audit log: records are written to stdout by the thread that serves calls");
                Stdout::Direct
            }
        };
        AuditLog {
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            shipper,
            stdout,
            refusing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            agent: gap_agent,
        }
    }

    /// Whether a new call must be refused: without an audit store, stdout holds the only copy
    /// of the records, and past [`MAX_UNWRITTEN`] bytes waiting for it a call's records could
    /// not be kept within a bound. The log says when that begins and ends. A call refused has no
    /// record: it is counted, and once stdout is read again (found so by the next call, or at
    /// shutdown) an `audit-gap` line with reason [`REFUSED_UNREAD`] says how many there were.
    pub fn refuses_call(&self) -> bool {
        let Stdout::Queue(q) = &self.stdout else { return false };
        if self.shipper.is_some() {
            return false;
        }
        let now = q.backlog() > MAX_UNWRITTEN;
        // Counted before the state is swapped: on several threads, a call that finds stdout read
        // again says every refusal counted so far, and none is left for a later line.
        if now {
            self.refused.fetch_add(1, Ordering::AcqRel);
        }
        if self.refusing.swap(now, Ordering::AcqRel) != now {
            if now {
                tracing::warn!(
                    waiting = q.backlog(),
                    "stdout is not being read: tools/call is refused until the audit records waiting for it are written (there is no audit store to keep them)"
                );
            } else {
                tracing::info!("stdout is read again: tools/call is served");
                self.say_refused();
            }
        }
        now
    }

    /// An `audit-gap` line for the calls refused without a record since the last one, if any.
    fn say_refused(&self) {
        let refused = self.refused.swap(0, Ordering::AcqRel);
        if refused == 0 {
            return;
        }
        // The log too: at shutdown stdout may still be unread, and the line never written.
        tracing::warn!(refused, "tools/call was refused without an audit record while stdout was not read");
        let line = bounds::gap(&self.agent, refused, REFUSED_UNREAD, &jiff::Timestamp::now().to_string());
        // Into a Vec: cannot fail.
        self.write_with(|buf| drop(serde_json::to_writer(buf, &line)));
    }

    /// Writes `record`, and says on the current span what it says.
    pub fn emit(&self, record: &AuditRecord) {
        crate::trace::recorded(&record.into());
        self.write_with(|buf| record.write_json(buf));
    }

    /// Appends the line `write` puts in `buf` (to stdout's buffer, and to the shipping queue),
    /// and nothing more.
    pub fn write_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = pending.lines.is_empty();
        let start = pending.lines.len();
        write(&mut pending.lines);
        if let Some(s) = &self.shipper {
            s.push(bytes::Bytes::copy_from_slice(&pending.lines[start..]));
        }
        pending.lines.push(b'\n');
        pending.count += 1;
        if pending.lines.len() >= MAX_BUFFERED {
            self.hand_on(&mut pending);
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// Hands what is buffered now to stdout's writer.
    pub fn flush(&self) {
        self.hand_on(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Flushes, and waits (a bounded time) for stdout's writer to write it all: before exiting.
    pub fn flush_and_wait(&self) {
        self.say_refused();
        self.flush();
        if let Stdout::Queue(q) = &self.stdout
            && !q.flush(FLUSH)
        {
            tracing::warn!("stdout was not read: the last audit records may not have been written to it");
        }
    }

    /// The writer task: runs until the process ends.
    pub async fn run(&self) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(LINGER).await;
            self.flush();
        }
    }

    fn hand_on(&self, pending: &mut Pending) {
        if pending.lines.is_empty() {
            return;
        }
        match &self.stdout {
            Stdout::Queue(q) => q.hand_over(&mut pending.lines, pending.count),
            Stdout::Direct => write_out(&pending.lines),
        }
        pending.lines.clear();
        pending.count = 0;
    }
}

fn write_out(lines: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the proxy down; the records are lost and the log says so.
    if let Err(e) = out.write_all(lines).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not write audit records");
    }
}
