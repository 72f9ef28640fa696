//! Starts the e2e control plane for interactive use and keeps it up until Ctrl-C or SIGTERM.

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use tollgate_e2e::{ControlPlane, User};

fn main() -> Result<()> {
    // Installed before the start so that a signal during the (slow) startup still shuts down cleanly.
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;

    let began = Instant::now();
    // Started on the main thread, which lives as long as the children should (PR_SET_PDEATHSIG).
    let cp = ControlPlane::start()?;
    eprintln!("control plane up at {} in {:.1?}", cp.server_url(), began.elapsed());
    println!("export KUBECONFIG={}", cp.kubeconfig(User::Admin).display());
    for user in User::ALL.into_iter().filter(|&u| u != User::Admin) {
        println!("# {user}: {}", cp.kubeconfig(user).display());
    }
    eprintln!("logs in {}; Ctrl-C to stop", cp.dir().display());

    rx.recv().context("the signal handler went away")?;
    eprintln!("stopping");
    drop(cp);
    Ok(())
}
