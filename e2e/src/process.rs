//! Child processes that cannot outlive the test process.
//!
//! This is the only module with `unsafe`: `pre_exec` (to set the parent-death signal between fork
//! and exec), `kill` on a process group, and `atexit` are foreign calls with no safe std wrapper.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Spawns `cmd` in its own process group with stdout and stderr appended to `log`.
///
/// The child gets SIGKILL when the *thread* that spawned it exits (that is how the kernel defines
/// the parent for PR_SET_PDEATHSIG), so spawn from a thread that lives as long as the child should.
pub(crate) fn spawn_guarded(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file handle")?;
    let parent = std::process::id();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, _exit); it touches no memory the parent's other threads could hold locked.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect; then nobody would send the signal.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("spawning {:?}", cmd.get_program()))
}

/// SIGTERM to the child's process group, SIGKILL once `grace` has passed, then reaps the child.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal_group(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(child, libc::SIGKILL);
    // After SIGKILL the wait is short; an error here means it was already reaped.
    let _ = child.wait();
}

pub(crate) fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions. The group id is the child's own pid
    // (process_group(0)), and the child is not reaped yet, so the id cannot have been reused.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Runs `handler` when the process exits normally (return from main or `std::process::exit`, which
/// is how libtest ends), the only hook that ever runs for values kept in statics.
pub(crate) fn at_exit(handler: extern "C" fn()) -> Result<()> {
    // SAFETY: atexit stores a function pointer; `handler` is a plain `extern "C" fn` with 'static
    // lifetime. The handler itself must not unwind (it would abort), which callers ensure.
    let rc = unsafe { libc::atexit(handler) };
    anyhow::ensure!(rc == 0, "atexit failed");
    Ok(())
}
