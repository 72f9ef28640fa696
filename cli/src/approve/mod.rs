//! `kubectl approve`: the approvers' kubectl plugin (DESIGN §3.3). Pure parts (argument rewrite,
//! formatting, patch building, error wording) are tested here; the rest talks to the API server.

pub mod args;
mod client;
pub mod complete;
mod decide;
pub mod errors;
pub mod format;
mod list;
mod out;
pub mod patch;
pub mod ui;
mod watch;

use std::ffi::OsString;

use clap::Parser;
use tollgate_api::Verdict;

use args::{Cli, Command};

/// Runs the plugin with `argv` (program name first) and returns the process exit code.
///
/// Errors are printed here as `error: ...`, never as a panic or a debug dump: they are meant for
/// the person at the terminal.
pub fn main(argv: Vec<OsString>) -> i32 {
    if let Some(words) = completion_words(&argv) {
        return complete_line(words);
    }
    let cli = Cli::parse_from(args::normalize(argv));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) if e.is::<out::StdoutClosed>() => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// The words to complete when kubectl asks: run as `kubectl_complete-approve WORDS…` (a link to
/// this binary) or `kubectl-approve __complete WORDS…`.
fn completion_words(argv: &[OsString]) -> Option<Vec<String>> {
    let name = argv.first().map(std::path::Path::new).and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default();
    let words = if name.starts_with("kubectl_complete-approve") {
        &argv[1..]
    } else if argv.get(1).is_some_and(|a| a == "__complete") {
        &argv[2..]
    } else {
        return None;
    };
    Some(words.iter().map(|w| w.to_string_lossy().into_owned()).collect())
}

/// Prints the candidates for the last of `words`; never fails (a completion that cannot reach
/// the cluster offers nothing).
fn complete_line(mut words: Vec<String>) -> i32 {
    let partial = words.pop().unwrap_or_default();
    let offered = match complete::offer(&words, &partial) {
        complete::Offer::Words(w) => w,
        complete::Offer::Nothing => Vec::new(),
        complete::Offer::Requests { all } => {
            let conn = complete::connection(&words);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .and_then(|rt| rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(3), list::names(&conn, all)).await.ok() }))
                .unwrap_or_default()
        }
    };
    print!("{}", complete::lines(&offered, &partial));
    0
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A deny without a reason is refused before connecting, whoever and wherever the caller is.
    if let Command::Deny(d) = &cli.command {
        patch::check_reason(Verdict::Deny, &d.name, d.reason.as_deref()).map_err(anyhow::Error::msg)?;
    }
    if let Command::Completion(c) = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut buf = Vec::new();
        clap_complete::generate(c.shell, &mut cmd, "kubectl-approve", &mut buf);
        return out::print(&String::from_utf8_lossy(&buf));
    }
    let session = client::connect(&cli.conn).await?;
    match &cli.command {
        Command::List(a) => list::list(&session, a).await,
        Command::Show(a) => list::show(&session, a).await,
        Command::Approve(a) => decide::decide(&session, Verdict::Approve, a).await,
        Command::Deny(a) => decide::decide(&session, Verdict::Deny, a).await,
        Command::Watch(a) => watch::watch(&session, a).await,
        Command::Ui(a) => ui::ui(&session, a, cli.conn.namespace.is_some()).await,
        Command::Completion(_) => Ok(()),
    }
}
