//! Writing to stdout without panicking when the reader goes away (`kubectl approve list | head`).

use std::io::Write;

/// stdout was closed by its reader: stop quietly, it is not a failure.
#[derive(Debug, thiserror::Error)]
#[error("stdout closed")]
pub struct StdoutClosed;

/// Writes `text`, with every control character but newline and tab escaped: whatever a request
/// holds, nothing printed can drive the approver's terminal.
pub fn print(text: &str) -> anyhow::Result<()> {
    let text = super::format::terminal_safe(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// `text` and a newline.
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}
