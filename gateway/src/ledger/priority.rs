//! SQLite's threads yield to the calls. sqlx runs each SQLite connection's statements on a
//! thread of its own; on a gateway with one CPU that thread shares it with the calls, and a
//! batch written while a call arrives held the call up (at one connection, the 99th percentile
//! of a call's latency nearly doubled). At a lower priority the writer gives way whenever a call
//! is ready to run, and has the CPU whenever none is: no less is written, only later.

/// The nice value of SQLite's threads: a tenth of a normal thread's weight. Saturated on one
/// CPU, the writer then falls behind until the recorder's queue is full and the calls wait for
/// it (bounded: docs/performance-history.md, "SQLite's threads yield to the calls").
const NICE: i32 = 10;

/// The name sqlx gives its SQLite threads, as the kernel keeps it (15 bytes).
const THREAD_NAME: &str = "sqlx-sqlite-wor";

/// The ledger's own writer thread (`writer.rs`).
pub(crate) const WRITER_NAME: &str = "tollgate-ledger";

/// Lowers the priority of every SQLite thread of this process (each connection's, once it is
/// open). Where the platform has no per-thread priority, nothing changes.
pub fn lower_sqlite_threads() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    for task in tasks.flatten() {
        let named = std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(THREAD_NAME));
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else { continue };
        if named {
            set_nice(tid, NICE);
        }
    }
}

/// Lowers the calling thread's priority as [`lower_sqlite_threads`] does sqlx's (the ledger's
/// own writer thread, `writer.rs`). On Linux a process id of 0 is the calling thread.
pub fn lower_this_thread() {
    set_nice(0, NICE);
}

#[allow(unsafe_code)]
fn set_nice(tid: libc::id_t, nice: i32) {
    // SAFETY: setpriority reads no memory of ours; on Linux, PRIO_PROCESS with a thread id sets
    // that thread's nice value. A thread may always lower its own process's priority.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if done != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "could not lower a SQLite thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of each of this process's SQLite threads (sqlx's and the ledger's writer).
    fn sqlite_threads_nice() -> Vec<i32> {
        let tasks = std::fs::read_dir("/proc/self/task").map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        tasks
            .iter()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(THREAD_NAME) || c.starts_with(WRITER_NAME)))
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                // After the name's closing parenthesis: the state is the first field, nice the 17th.
                stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_sqlite_ledger_s_threads_run_below_the_calls() {
        let (_ledger, _dir) = crate::ledger::tests::ledger().await;
        // Other tests open ledgers meanwhile: their threads may not be lowered yet.
        let nice = sqlite_threads_nice();
        assert!(nice.iter().filter(|n| **n == NICE).count() >= 3, "the writer's, the reader's and the checkpointer's threads: {nice:?}");
    }
}
