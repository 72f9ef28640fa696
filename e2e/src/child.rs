//! A child process of a test: started from a thread that outlives the test's, stopped when
//! dropped, its output in a log file.

use crate::basics::wait_until;
use crate::process::{spawn_guarded, terminate};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

/// A child process of a test, stopped when dropped, with its output in a log file.
pub struct Process {
    child: Mutex<Option<Child>>,
    pub log: PathBuf,
}

impl Process {
    /// The process id, for reading its CPU time and memory from /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Child::id)
    }

    /// Starts `cmd` from a thread that outlives the test's own.
    pub fn spawn(cmd: Command, log: PathBuf) -> Result<Process> {
        let child = spawn_on_long_lived_thread(cmd, log.clone())?;
        Ok(Process { child: Mutex::new(Some(child)), log })
    }

    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// SIGKILL, as a node failure or the OOM killer would: no chance to clean up.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            crate::process::signal_group(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, as the kubelet sends when a pod is deleted; returns at once.
    pub fn terminate(&self) {
        if let Some(child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            crate::process::signal_group(child, libc::SIGTERM);
        }
    }

    /// Waits until `GET http://127.0.0.1:port{path}` answers 200, failing early if the process dies.
    pub fn wait_http_ok(&self, what: &str, port: u16, path: &str) -> Result<()> {
        wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
            if let Some(status) = self.exited() {
                anyhow::bail!("{what} exited ({status}):\n{}", self.log_tail());
            }
            Ok(http_ok(port, path).then_some(()))
        })
        .with_context(|| format!("waiting for {what}; log:\n{}", self.log_tail()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Children die with the thread that forked them (PR_SET_PDEATHSIG); tests run on short-lived
/// threads, so fork from one that never ends.
fn spawn_on_long_lived_thread(mut cmd: Command, log: PathBuf) -> Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-child".into())
        .spawn(move || {
            let _ = tx.send(spawn_guarded(&mut cmd, &log));
            loop {
                std::thread::park();
            }
        })
        .context("spawning the launcher thread")?;
    rx.recv().context("the launcher thread died")?
}

fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
