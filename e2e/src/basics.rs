//! What every helper of the suite needs: waiting for a condition with a deadline, the
//! repository's files, unguessable names, log tails.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// A file of this repository.
pub fn repo_file(relative: &str) -> std::path::PathBuf {
    crate::components::repo_root().join(relative)
}

/// Polls `f` every `poll` until it yields `Some`, for at most `timeout`.
///
/// `Ok(None)` means "not yet"; an `Err` from `f` is final and returned at once. Running out of
/// time is a [`TimedOut`] error, so callers can tell it apart and add what they last saw.
pub fn wait_until<T>(timeout: Duration, poll: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut(timeout).into());
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// The error of [`wait_until`] when the condition did not hold in time.
#[derive(Debug)]
pub struct TimedOut(pub Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "condition not met within {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}

/// `2 * bytes` lowercase hex digits from the kernel's CSPRNG (tokens must not be guessable).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last lines of a log file, for error messages; never fails, since it is already reporting one.
pub(crate) fn log_tail(path: &Path) -> String {
    const LINES: usize = 30;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}
