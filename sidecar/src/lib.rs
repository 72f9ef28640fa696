//! Tollgate's MCP firewall (DESIGN §3.2): a Streamable HTTP proxy on localhost that passes every
//! MCP message through unchanged except `tools/list` (hidden tools, justification schemas) and
//! `tools/call` (decided by `tollgate-core`: allowed, denied, or held for approval).

pub mod aggregate;
pub mod answer;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod body;
pub mod call;
pub mod credentials;
pub mod guard;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tools;
pub mod upstream;

use anyhow::{Context, Result};
use std::sync::Arc;

pub use state::{Config, Sidecar};

pub async fn run(config: Config) -> Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let instance = format!("{:016x}", rand::random::<u64>());
    let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot::Snapshot::default()));
    let sidecar = Arc::new(Sidecar {
        config: config.clone(),
        transport: config.transport_rules(),
        client: client.clone(),
        snapshot: snapshot.clone(),
        snapshot_swapped: tokio::sync::watch::Sender::new(()),
        upstream: upstream::Upstream::new(credentials::Credentials::new(&config.credentials_dir), config.max_upstream_answer),
        held: approvals::Registry::default(),
        sessions: aggregate::Sessions::default(),
        metrics: Arc::default(),
        audit: audit::AuditLog::default(),
        instance,
    });
    tracing::info!(agent = config.agent, namespace = config.namespace, instance = sidecar.instance, "sidecar starting");
    approvals::cancel_orphans(&sidecar).await;
    let ready = tollgate_runtime::admin::Readiness::default();
    let swapped = {
        let sidecar = sidecar.clone();
        move || {
            sidecar.snapshot_swapped.send_replace(());
        }
    };
    let watch = snapshot::watch(client, config.agent.clone(), config.namespace.clone(), snapshot, ready.clone(), swapped);
    let admin = tollgate_runtime::admin::serve(config.admin_addr, sidecar.metrics.clone(), ready);
    let serve = server::serve(config.listen, sidecar.clone());
    let result = tokio::select! {
        r = serve => r.context("MCP listener"),
        r = admin => r.context("admin listener"),
        r = watch => r.context("policy watch"),
        () = sidecar.audit.run() => Ok(()),
        () = tollgate_runtime::shutdown_signal() => Ok(()),
    };
    sidecar.audit.flush();
    result
}
