//! What audited rules and budgets would have done, into their `status.shadow` (docs/design.md
//! §3.1): counted from the audit store over the last hour, written only when changed, and set
//! back to zero once an object's calls have left the window.

use crate::state::GatewayState;
use kube::api::{Api, Patch, PatchParams};
use std::collections::HashMap;
use tollgate_api::{Budget, ClusterToolPolicy, ShadowCounts, ToolPolicy};
use tollgate_core::audit::shadow::{self, Subject};

/// The window counted, and its name in status.
const WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
const WINDOW_NAME: &str = "1h";

/// Counts written so far, by object.
pub type Written = HashMap<Subject, ShadowCounts>;

pub async fn refresh(gw: &GatewayState, params: &PatchParams, written: &mut Written) -> anyhow::Result<()> {
    let since = jiff::Timestamp::now().checked_sub(WINDOW)?.as_microsecond();
    let mut counts = shadow::counts(&gw.ledger.shadow_counts(since).await?, WINDOW_NAME);
    for subject in written.keys() {
        counts.entry(subject.clone()).or_insert_with(|| ShadowCounts { window: WINDOW_NAME.into(), ..ShadowCounts::default() });
    }
    for (subject, c) in counts {
        if written.get(&subject) == Some(&c) {
            continue;
        }
        match patch(gw, params, &subject, &c).await {
            Ok(()) => {
                written.insert(subject, c);
            }
            // Deleted since (or never made): nothing to count for.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                written.remove(&subject);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn patch(gw: &GatewayState, params: &PatchParams, subject: &Subject, counts: &ShadowCounts) -> Result<(), kube::Error> {
    let body = Patch::Merge(serde_json::json!({"status": {"shadow": counts}}));
    let client = gw.client.clone();
    match subject {
        Subject::ToolPolicy { namespace, name } => Api::<ToolPolicy>::namespaced(client, namespace).patch_status(name, params, &body).await.map(drop),
        Subject::ClusterToolPolicy { name } => Api::<ClusterToolPolicy>::all(client).patch_status(name, params, &body).await.map(drop),
        Subject::Budget { namespace, name } => Api::<Budget>::namespaced(client, namespace).patch_status(name, params, &body).await.map(drop),
    }
}
