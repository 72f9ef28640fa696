//! `kubectl approve ui`: the approvals inbox in a browser, served on loopback, acting with the
//! person's own kubeconfig credentials (docs/operations.md, "In the browser"; docs/design.md §3.3).

mod history;
mod live;
mod pages;
mod server;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use ring::rand::{SecureRandom, SystemRandom};
use tollgate_api::{ApprovalRequest, ApprovalWorkflow};

use super::args::UiArgs;
use super::client::{self, Session};
use super::errors::{self, Doing};
use super::out;
use live::Scope;
use pages::Shell;
use view::Caller;

pub use server::CSP;

fn secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness for the one-time secret"))?;
    Ok(hex::encode(bytes))
}

/// Where to look, and why not everywhere: every namespace unless `-n` names one; the context's
/// namespace when listing across all is refused.
async fn scope(session: &Session, explicit_namespace: bool, user: &str) -> (Scope, Option<String>, Option<String>) {
    let ns = Scope::Namespace(session.namespace.clone());
    let explain = |e: &kube::Error, all: bool| {
        let cx = errors::Context { namespace: &session.namespace, user: Some(user), doing: Doing::List { all_namespaces: all } };
        errors::explain(e, &cx)
    };
    if !explicit_namespace {
        match live::may_list(&Scope::All.api::<ApprovalRequest>(&session.client)).await {
            Ok(()) => return (Scope::All, None, None),
            Err(e) => {
                let note = format!("{}; showing namespace {} only", explain(&e, true), session.namespace);
                return match live::may_list(&ns.api::<ApprovalRequest>(&session.client)).await {
                    Ok(()) => (ns, Some(note), None),
                    Err(e) => (ns, None, Some(explain(&e, false))),
                };
            }
        }
    }
    match live::may_list(&ns.api::<ApprovalRequest>(&session.client)).await {
        Ok(()) => (ns, None, None),
        Err(e) => (ns, None, Some(explain(&e, false))),
    }
}

/// Opens `url` in the person's browser when one is at hand: `$BROWSER`, else the desktop's
/// opener when there is a display. The opener is given a file that redirects to `url`, never
/// `url` itself: a command line is readable by every user of the machine (`/proc/*/cmdline`),
/// and the link's secret would be theirs to spend first. The file is the person's alone (0600,
/// in a 0700 directory) and removed with the server.
fn open_browser(url: &str, launcher: &std::path::Path) -> bool {
    let opener = std::env::var("BROWSER").ok().filter(|b| !b.is_empty()).or_else(|| {
        let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
        if cfg!(target_os = "macos") { Some("open".into()) } else { desktop.then(|| "xdg-open".into()) }
    });
    let Some(opener) = opener else {
        return false;
    };
    if write_launcher(launcher, url).is_err() {
        return false;
    }
    std::process::Command::new(opener)
        .arg(format!("file://{}", launcher.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

#[cfg(unix)]
fn write_launcher(path: &std::path::Path, url: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    // The URL is hex, digits, a `.localhost` name and punctuation of our own: nothing to escape.
    writeln!(file, "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><a href=\"{url}\">Tollgate approvals</a>")
}

#[cfg(not(unix))]
fn write_launcher(_: &std::path::Path, _: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("no private file for the link on this platform"))
}

pub async fn ui(session: &Session, args: &UiArgs, explicit_namespace: bool) -> Result<()> {
    let (user, groups) = client::whoami_with_groups(session).await?;
    let (scope, note, list_error) = scope(session, explicit_namespace, &user).await;
    let live = match &list_error {
        None => {
            let workflows = live::may_list(&scope.api::<ApprovalWorkflow>(&session.client)).await.is_ok();
            Some(live::start(&session.client, &scope, workflows).await)
        }
        Some(_) => None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await.with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    let token = secret()?;
    let host = format!("{}.localhost", &secret()?[..16]);
    let url = format!("http://{host}:{port}/?token={token}");
    let ui = Arc::new(server::Ui {
        client: session.client.clone(),
        caller: Caller { user: user.clone(), groups },
        shell: Shell { user: user.clone(), scope: scope.describe(), note },
        list_error,
        live,
        host,
        port,
        token: Mutex::new(Some(token)),
        session: secret()?,
        csrf: secret()?,
        flash: Mutex::new(HashMap::new()),
    });
    out::println(&format!("Approvals for {user} ({}), served at:\n  {url}\nThe link opens once; press Ctrl-C to stop.", ui.shell.scope))?;
    let launcher_dir = std::env::temp_dir().join(format!("tollgate-ui-{}", &secret()?[..16]));
    if !args.no_browser && open_browser(&url, &launcher_dir.join("open.html")) {
        out::println("Opened in your browser.")?;
    }
    let app = server::router(ui);
    // Not a graceful shutdown: the pages' event streams never end on their own.
    let served = tokio::select! {
        served = axum::serve(listener, app) => served.context("the web server failed"),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&launcher_dir);
    served
}
