//! Rights are checked when a request arrives, and again for as long as its answer stays open: a
//! GET stream opened before the agent was suspended, deleted, or lost the server from its
//! `mcpServers` ends with the next snapshot that says so, instead of carrying the server's
//! requests and notifications on.

use crate::body::{Body, channel};
use crate::snapshot::Snapshot;
use crate::state::Sidecar;
use http_body_util::BodyExt;
use std::sync::Arc;

/// Whether the agent may still use `server` (`None`: the aggregated endpoint, which needs only
/// the agent's own rights).
pub fn still_allowed(sc: &Sidecar, snapshot: &Snapshot, server: Option<&str>) -> bool {
    let Ok(agent) = snapshot.agent_access(&sc.config.agent, &sc.config.namespace) else { return false };
    server.is_none_or(|name| tollgate_core::mcp::access::server_access(agent, name, snapshot.servers.contains_key(name)).is_ok())
}

/// `body`, copied while the agent keeps its rights to `server`; cut when it loses them.
pub fn while_allowed(sc: &Arc<Sidecar>, mut body: Body, server: Option<String>) -> Body {
    let (tx, out) = channel();
    let mut swaps = sc.snapshot_swapped.subscribe();
    let sc = sc.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = body.frame() => {
                    let Some(Ok(frame)) = frame else { return };
                    if let Ok(data) = frame.into_data()
                        && tx.send(data).await.is_err()
                    {
                        return;
                    }
                }
                swapped = swaps.changed() => {
                    if swapped.is_err() || !still_allowed(&sc, &sc.snapshot.load(), server.as_deref()) {
                        tracing::info!(server = server.as_deref().unwrap_or("(aggregated)"), "open stream ended: the agent lost its rights to it");
                        return;
                    }
                }
            }
        }
    });
    out
}
