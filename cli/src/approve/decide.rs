//! `kubectl approve NAME` and `kubectl approve deny NAME --reason TEXT`: append the caller's
//! decision to `status.decisions` through the status subresource (DESIGN §3.3).

use std::time::Duration;

use anyhow::Result;
use futures::TryStreamExt;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use tollgate_api::{ApprovalDecision, ApprovalRequest, Phase, Verdict, Via};

use super::args::DecideArgs;
use super::client::{self, Session};
use super::errors::{self, Doing};
use super::{format, out, patch};

/// Reads and patches before giving up when others keep writing the same request.
const ATTEMPTS: usize = 5;

pub async fn decide(session: &Session, verdict: Verdict, args: &DecideArgs) -> Result<()> {
    let name = args.name.as_str();
    let ns = session.namespace.as_str();
    let reason = patch::check_reason(verdict, name, args.reason.as_deref()).map_err(anyhow::Error::msg)?;
    let user = client::whoami(session).await?;
    let cx = errors::Context { namespace: ns, user: Some(&user), doing: Doing::Decide { name } };
    let api: Api<ApprovalRequest> = Api::namespaced(session.client.clone(), ns);
    let now = jiff::Timestamp::now();
    let decision =
        tollgate_core::approval::decision::person_decision(&user, verdict, reason.as_deref(), Via::Kubectl, now, "", false).map_err(anyhow::Error::msg)?;

    let fresh = append(&api, name, None, &user, &decision, &cx, |attempt| {
        eprintln!("note: {ns}/{name} changed while your decision was being written; writing it again (attempt {attempt} of {ATTEMPTS})");
    })
    .await?;
    out::println(&format::decided_line(verdict, &fresh))?;
    let id = format::qualified_name(&fresh);
    if format::phase(&fresh) != Phase::Pending {
        return out::println(&format!("{id} is now {}", format::phase(&fresh)));
    }
    if args.wait > 0 && format::may_resolve(verdict, &fresh) {
        let rv = fresh.metadata.resource_version.clone().unwrap_or_default();
        let wait = Duration::from_secs(args.wait);
        if let Ok(Some(phase)) = tokio::time::timeout(wait, next_phase(&api, name, &rv, args.wait)).await {
            out::println(&format!("{id} is now {phase}"))?;
        }
    }
    Ok(())
}

/// Appends `decision` by `user` to request `name` through the status subresource, reading and
/// retrying when someone else wrote in between; the request as stored afterwards. With `uid`,
/// only to that request: a page's decision is about the request it showed, not one made since
/// under the same name. Errors are in plain words. `kubectl approve` and `kubectl approve ui`
/// both decide through here.
pub async fn append(
    api: &Api<ApprovalRequest>,
    name: &str,
    uid: Option<&str>,
    user: &str,
    decision: &ApprovalDecision,
    cx: &errors::Context<'_>,
    on_retry: impl Fn(usize),
) -> Result<ApprovalRequest> {
    let fail = |e: kube::Error| anyhow::Error::msg(errors::explain(&e, cx));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ar = api.get(name).await.map_err(fail)?;
        patch::precheck(&ar, uid, user).map_err(anyhow::Error::msg)?;
        let ops = patch::append_decision(&ar, decision)?;
        let ops: json_patch::Patch = serde_json::from_value(ops)?;
        match api.patch_status(name, &PatchParams::default(), &Patch::Json::<()>(ops)).await {
            Ok(_) => break,
            // Someone wrote in between (another approver, the operator): read again and redo.
            Err(kube::Error::Api(s)) if attempt < ATTEMPTS && errors::is_stale_write(s.code, &s.message) => on_retry(attempt + 1),
            Err(e) => return Err(fail(e)),
        }
    }
    api.get(name).await.map_err(fail)
}

/// The request's phase once the operator moves it out of Pending, watching from `rv`; `None`
/// when the watch ends first or fails (waiting is a courtesy, never a reason to fail).
async fn next_phase(api: &Api<ApprovalRequest>, name: &str, rv: &str, seconds: u64) -> Option<Phase> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(u32::try_from(seconds).unwrap_or(u32::MAX));
    let stream = api.watch(&params, rv).await.ok()?;
    futures::pin_mut!(stream);
    while let Some(event) = stream.try_next().await.ok()? {
        match event {
            WatchEvent::Added(ar) | WatchEvent::Modified(ar) if format::phase(&ar) != Phase::Pending => {
                return Some(format::phase(&ar));
            }
            WatchEvent::Deleted(_) | WatchEvent::Error(_) => return None,
            _ => {}
        }
    }
    None
}
