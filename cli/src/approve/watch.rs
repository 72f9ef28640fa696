//! `kubectl approve watch`: one line per request as it starts waiting, and one when it resolves,
//! until Ctrl-C.

use std::collections::HashSet;

use anyhow::Result;
use futures::TryStreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use tollgate_api::{ApprovalRequest, Phase};

use super::args::WatchArgs;
use super::client::Session;
use super::errors::{self, Doing};
use super::{format, out};

pub async fn watch(session: &Session, args: &WatchArgs) -> Result<()> {
    let api: Api<ApprovalRequest> =
        if args.all_namespaces { Api::all(session.client.clone()) } else { Api::namespaced(session.client.clone(), &session.namespace) };
    let cx = errors::Context { namespace: &session.namespace, user: None, doing: Doing::Watch { all_namespaces: args.all_namespaces } };
    // The watcher retries forever; a refusal is better reported once, in plain words.
    api.list(&ListParams::default().limit(1)).await.map_err(|e| anyhow::Error::msg(errors::explain(&e, &cx)))?;

    let stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects();
    futures::pin_mut!(stream);
    let ctrl_c = tokio::signal::ctrl_c();
    futures::pin_mut!(ctrl_c);
    // Requests announced as pending, so their resolution is reported once and nothing twice.
    let mut shown: HashSet<String> = HashSet::new();
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = stream.try_next() => next,
        };
        let ar = match next {
            Ok(Some(ar)) => ar,
            Ok(None) => return Ok(()),
            Err(e) => {
                eprintln!("warning: the watch was interrupted ({e}); retrying");
                continue;
            }
        };
        let key = format::qualified_name(&ar);
        match format::phase(&ar) {
            Phase::Pending => {
                if shown.insert(key) {
                    out::println(&format::watch_line(&ar))?;
                }
            }
            phase => {
                if shown.remove(&key) {
                    out::println(&format!("{} {key}", phase.to_string().to_lowercase()))?;
                }
            }
        }
    }
}
