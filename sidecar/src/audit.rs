//! Audit records as JSON lines on stdout (DESIGN §3.5); shipping to the gateway comes later.

use std::io::Write;
use tollgate_core::audit::AuditRecord;

pub fn emit(record: &AuditRecord) {
    let Ok(mut line) = serde_json::to_vec(record) else { return };
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    // A closed stdout must not take the proxy down; the record is lost and the log says so.
    if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not write an audit record");
    }
}
