//! Audit records as JSON lines on stdout (DESIGN §3.5), and to the gateway's audit store when
//! one is configured ([`crate::ship`]).
//!
//! Lines gather in memory and a writer task writes what arrived within [`LINGER`] in one write:
//! one syscall per call pair was a tenth of the sidecar's CPU under load. Shutdown flushes.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;
use tollgate_core::audit::AuditRecord;

/// How long a line may wait for others to share its write.
const LINGER: Duration = Duration::from_millis(2);
/// Past this much waiting, the caller writes at once rather than grow the buffer.
const MAX_BUFFERED: usize = 1 << 20;

#[derive(Default)]
pub struct AuditLog {
    buf: Mutex<Vec<u8>>,
    wake: tokio::sync::Notify,
    pub shipper: Option<crate::ship::Shipper>,
}

impl AuditLog {
    pub fn new(shipper: Option<crate::ship::Shipper>) -> AuditLog {
        AuditLog { shipper, ..AuditLog::default() }
    }

    /// Writes `record`, and says on the current span what it says.
    pub fn emit(&self, record: &AuditRecord) {
        crate::trace::recorded(&record.into());
        self.write_with(|buf| record.write_json(buf));
    }

    /// Appends the line `write` puts in `buf` (to stdout's buffer, and to the shipping queue),
    /// and nothing more.
    pub fn write_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = buf.is_empty();
        let start = buf.len();
        write(&mut buf);
        if let Some(s) = &self.shipper {
            s.push(bytes::Bytes::copy_from_slice(&buf[start..]));
        }
        buf.push(b'\n');
        if buf.len() >= MAX_BUFFERED {
            write_out(&mut buf);
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes what is buffered now.
    pub fn flush(&self) {
        write_out(&mut self.buf.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The writer task: runs until the process ends.
    pub async fn run(&self) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(LINGER).await;
            self.flush();
        }
    }
}

fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the proxy down; the records are lost and the log says so.
    if let Err(e) = out.write_all(buf).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not write audit records");
    }
    buf.clear();
}
