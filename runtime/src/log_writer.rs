//! Log lines written to stderr (and the sidecar's audit lines to stdout) from a thread of their
//! own, never from the thread that logs.
//!
//! A container's stderr is a pipe the container runtime reads. When it stops reading (a stalled
//! log agent, a node under pressure), a write to a full pipe blocks, and a log line written by
//! a runtime thread would stop every call that thread serves. Lines are queued in memory, up to
//! a bound ([`MAX_QUEUED`] bytes for logs), and a writer thread writes what has queued in one
//! write; past the bound a line is dropped and counted, and the writer says how many were lost
//! once it can write again, whether or not a line follows.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What may wait for a stalled reader: a quarter of a MiB, about a thousand lines.
pub const MAX_QUEUED: usize = 256 * 1024;
/// The most a buffer keeps of its capacity once written.
const KEPT: usize = 1 << 20;

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    /// Dropped since the writer last said so.
    dropped: u64,
    /// Dropped since the process began.
    dropped_ever: u64,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// The bytes of that batch.
    writing_bytes: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue stops being empty, and `flush` when the writer is done.
    changed: Condvar,
    /// What may queue before lines are dropped.
    bound: usize,
}

fn log_lines_dropped(dropped: u64) -> Vec<u8> {
    format!("{dropped} log line(s) dropped: the log was not read for a while\n").into_bytes()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where log lines go: cheap to clone, one writer thread behind all clones.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.shared.lock();
        f.debug_struct("LogQueue").field("queued", &q.lines.len()).field("dropped", &q.dropped_ever).finish()
    }
}

impl LogQueue {
    /// A queue of log lines (at most [`MAX_QUEUED`] bytes) that a new thread writes to `sink`.
    pub fn start(sink: impl Write + Send + 'static) -> std::io::Result<LogQueue> {
        LogQueue::start_bounded(sink, "log-writer", MAX_QUEUED, log_lines_dropped)
    }

    /// A queue of at most `bound` bytes that a new thread, `name`, writes to `sink`, writing
    /// `note` of the lines dropped before the batch after them.
    pub fn start_bounded(
        sink: impl Write + Send + 'static,
        name: &str,
        bound: usize,
        note: impl Fn(u64) -> Vec<u8> + Send + 'static,
    ) -> std::io::Result<LogQueue> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), changed: Condvar::new(), bound });
        let writer = shared.clone();
        std::thread::Builder::new().name(name.into()).stack_size(64 * 1024).spawn(move || write_lines(&writer, sink, note))?;
        Ok(LogQueue { shared })
    }

    /// Queues one line (or drops it, when the queue is full). A line longer than the bound is
    /// still taken into an empty queue: it is in memory already, and it may be the one that says
    /// what went wrong.
    pub fn push(&self, line: &[u8]) {
        self.push_lines(line, 1);
    }

    /// Queues `count` whole lines at once, or drops them all, as [`LogQueue::push`] one.
    pub fn push_lines(&self, lines: &[u8], count: u64) {
        self.queue_lines(count, lines.len(), |queued| queued.extend_from_slice(lines));
    }

    /// As [`LogQueue::push_lines`], taking the lines out of `lines` (left empty): into an empty
    /// queue by exchanging buffers, not copying, so a caller that gathers lines and the writer
    /// pass two buffers between them rather than fill three.
    pub fn hand_over(&self, lines: &mut Vec<u8>, count: u64) {
        self.queue_lines(count, lines.len(), |queued| {
            if queued.is_empty() {
                std::mem::swap(queued, lines);
            } else {
                queued.extend_from_slice(lines);
            }
        });
        lines.clear();
    }

    fn queue_lines(&self, count: u64, len: usize, add: impl FnOnce(&mut Vec<u8>)) {
        let mut q = self.shared.lock();
        if !q.lines.is_empty() && q.lines.len().saturating_add(len) > self.shared.bound {
            q.dropped += count;
            q.dropped_ever += count;
            return;
        }
        let was_empty = q.lines.is_empty();
        add(&mut q.lines);
        drop(q);
        if was_empty {
            self.shared.changed.notify_all();
        }
    }

    /// The bytes not yet written: queued, and in the batch the writer holds.
    pub fn backlog(&self) -> usize {
        let q = self.shared.lock();
        q.lines.len() + q.writing_bytes
    }

    /// Waits, at most `within`, for what is queued now to be written; true when it was.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut q = self.shared.lock();
        while !q.lines.is_empty() || q.dropped > 0 || q.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self.shared.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// The writer thread: takes all that has queued and writes it in one go, for as long as the
/// process runs. A sink that fails (stderr closed) loses the lines; nothing else can be done.
fn write_lines(shared: &Shared, mut sink: impl Write, note: impl Fn(u64) -> Vec<u8>) {
    let mut batch = Vec::new();
    loop {
        let dropped = {
            let mut q = shared.lock();
            // The buffer written last goes back to the queue, for the lines to come.
            if q.lines.capacity() == 0 {
                q.lines = std::mem::take(&mut batch);
            }
            q.writing = false;
            q.writing_bytes = 0;
            shared.changed.notify_all();
            while q.lines.is_empty() && q.dropped == 0 {
                q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.writing = true;
            // Taken, not exchanged: the buffer goes back to the queue once written (at the top of
            // the loop), and the lines that come meanwhile start one of their own only if they must.
            batch = std::mem::take(&mut q.lines);
            q.writing_bytes = batch.len();
            std::mem::take(&mut q.dropped)
        };
        if dropped > 0 {
            let _ = sink.write_all(&note(dropped));
        }
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        // A burst's buffer is not kept for ever.
        if batch.capacity() > KEPT.min(shared.bound / 4) {
            batch = Vec::new();
        }
    }
}

/// One event's line, handed to the queue whole when the formatter is done with it.
pub struct Line {
    queue: LogQueue,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            self.queue.push(&self.text);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { queue: self.clone(), text: Vec::new() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A pipe nobody reads, as a stalled container runtime leaves a container's stderr.
    fn unread_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
        std::io::pipe().unwrap()
    }

    #[test]
    fn a_log_nobody_reads_never_stops_the_thread_that_logs() {
        let (reader, writer) = unread_pipe();
        let queue = LogQueue::start(writer).unwrap();
        let line = [b'x'; 199].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        // Many times what the pipe and the queue hold together.
        let lines = 4 * (MAX_QUEUED + (1 << 20)) / line.len();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let logging = queue.clone();
        std::thread::spawn(move || {
            for _ in 0..lines {
                use tracing_subscriber::fmt::MakeWriter;
                let mut w = logging.make_writer();
                w.write_all(&line).unwrap();
            }
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(30)).is_ok(), "logging waited for a reader that never came");
        assert!(!queue.flush(Duration::from_millis(50)), "the queue cannot empty into a pipe nobody reads");
        // Counted whether or not the writer took the count before it blocked (it may not have run
        // at all until every line had been logged).
        assert!(queue.shared.lock().dropped_ever > 0, "lines past the bound are counted as dropped");
        drop(reader);
    }

    #[test]
    fn a_line_longer_than_the_bound_is_written_when_nothing_waits() {
        let (mut reader, writer) = unread_pipe();
        let queue = LogQueue::start(writer).unwrap();
        let long = vec![b'y'; MAX_QUEUED + 10];
        // Read for as long as the writer lives (the whole test process: it is never joined).
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        queue.push(&long);
        assert!(queue.flush(Duration::from_secs(10)), "the long line is written");
        assert_eq!(queue.shared.lock().dropped_ever, 0);
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_a_loss_is_reported() {
        let (mut reader, writer) = unread_pipe();
        let queue = LogQueue::start(writer).unwrap();
        {
            // Lines dropped while the writer is away are counted, and reported once it writes.
            let mut q = queue.shared.lock();
            q.dropped = 3;
        }
        for i in 0..100 {
            use tracing_subscriber::fmt::MakeWriter;
            let mut w = queue.make_writer();
            write!(w, "line {i} ").unwrap();
            writeln!(w, "of 100").unwrap();
        }
        assert!(queue.flush(Duration::from_secs(10)), "a read pipe empties the queue");
        drop(queue);
        let mut text = vec![0u8; 64 * 1024];
        let n = std::io::Read::read(&mut reader, &mut text).unwrap();
        let text = String::from_utf8_lossy(&text[..n]).into_owned();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("3 log line(s) dropped: the log was not read for a while"));
        let rest: Vec<&str> = lines.collect();
        let expected: Vec<String> = (0..100).map(|i| format!("line {i} of 100")).collect();
        assert_eq!(rest, expected);
    }

    #[test]
    fn the_backlog_counts_what_the_writer_holds_and_what_waits() {
        /// Takes nothing until it is let go, saying when the writer reached it: a writer stuck
        /// on its first batch.
        struct Held {
            reached: std::sync::mpsc::Sender<()>,
            go: std::sync::mpsc::Receiver<()>,
        }
        impl Write for Held {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.reached.send(());
                let _ = self.go.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (go, held) = std::sync::mpsc::channel();
        let (reached_tx, reached) = std::sync::mpsc::channel();
        // Never drops: what waits is the caller's to weigh.
        let queue = LogQueue::start_bounded(Held { reached: reached_tx, go: held }, "test-writer", usize::MAX, |_| Vec::new()).unwrap();
        let line = [b'y'; 1023].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        queue.push(&line);
        assert!(reached.recv_timeout(Duration::from_secs(10)).is_ok(), "the writer took the first line");
        for _ in 0..3 {
            queue.push(&line);
        }
        assert_eq!(queue.backlog(), 4 * 1024, "every byte not yet written, whoever holds it");
        drop(go);
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(queue.backlog(), 0);
    }

    #[test]
    fn handed_over_lines_pass_two_buffers_back_and_forth() {
        #[derive(Clone, Default)]
        struct Kept(Arc<Mutex<Vec<u8>>>);
        impl Write for Kept {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let kept = Kept::default();
        let queue = LogQueue::start_bounded(kept.clone(), "test-writer", 1 << 20, |_| Vec::new()).unwrap();
        let mut lines = b"a\n".repeat(500);
        queue.hand_over(&mut lines, 500);
        assert!(lines.is_empty(), "the lines are taken");
        assert!(queue.flush(Duration::from_secs(10)));
        lines.extend_from_slice(&b"b\n".repeat(500));
        queue.hand_over(&mut lines, 500);
        assert!(lines.is_empty() && lines.capacity() >= 1000, "the buffer written first comes back, not a new one: {}", lines.capacity());
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(*kept.0.lock().unwrap(), [b"a\n".repeat(500), b"b\n".repeat(500)].concat());
    }

    #[test]
    fn a_loss_with_nothing_after_it_is_reported_all_the_same() {
        let (mut reader, writer) = unread_pipe();
        let queue = LogQueue::start_bounded(writer, "test-writer", 1024, |n| format!("{n} lost\n").into_bytes()).unwrap();
        queue.shared.lock().dropped = 2;
        queue.shared.changed.notify_all();
        assert!(queue.flush(Duration::from_secs(10)), "the loss is written though no line follows it");
        let mut text = vec![0u8; 64];
        let n = std::io::Read::read(&mut reader, &mut text).unwrap();
        assert_eq!(String::from_utf8_lossy(&text[..n]), "2 lost\n");
    }
}
