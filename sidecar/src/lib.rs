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
pub mod limits;
pub mod proxy;
pub mod redirect;
pub mod server;
pub mod ship;
pub mod snapshot;
pub mod state;
pub mod tools;
pub mod trace;
pub mod transparent;
pub mod trust;
pub mod upstream;

use anyhow::{Context, Result};
use std::sync::Arc;
use tollgate_runtime::admin::Readiness;

pub use state::{Config, Sidecar};

pub async fn run(config: Config) -> Result<()> {
    let client = tollgate_runtime::kube_client::infer().await.context("connecting to the Kubernetes API")?;
    let instance = format!("{:016x}", rand::random::<u64>());
    let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot::Snapshot::default()));
    let metrics: Arc<tollgate_runtime::admin::Metrics> = Arc::default();
    if let (Some(ca), Some(dir)) = (&config.gateway_ca, &config.trust_dir) {
        trust::write(dir, ca).context("writing the gateway's CA for the app containers")?;
    }
    // Audit batches go to the gateway under its CA alone; the platform's roots are loaded only
    // for an `https` gateway without one, and nothing at all without a gateway.
    let shipper = match config.audit_url.as_deref() {
        Some(url) => {
            let roots = match &config.gateway_ca {
                Some(ca) => trust::gateway_roots(ca)?,
                None => tollgate_mcp_client::transport::platform_roots(),
            };
            Some(ship::Shipper::new(url, Arc::new(roots), config.audit_token_file.clone(), &instance, &config.agent, metrics.clone()))
        }
        None => None,
    };
    let sidecar = Arc::new(Sidecar {
        config: config.clone(),
        transport: config.transport_rules(),
        client: client.clone(),
        snapshot: snapshot.clone(),
        snapshot_swapped: tokio::sync::watch::Sender::new(()),
        upstream: upstream::Upstream::new(
            credentials::Credentials::new(
                &config.credentials_dir,
                tollgate_mcp_client::vault::Vault::new(&config.vault).map_err(anyhow::Error::msg)?,
                &config.namespace,
            ),
            config.max_upstream_answer,
            upstream::CaFiles { secrets: config.credentials_dir.clone(), config_maps: config.ca_dir.clone() },
        ),
        held: approvals::Registry::default(),
        sessions: aggregate::Sessions::default(),
        metrics: metrics.clone(),
        audit: audit::AuditLog::new(shipper, &config.agent, {
            let metrics = metrics.clone();
            move |n| metrics.audit("unwritten", n)
        }),
        instance,
        limits: limits::Limiter::default(),
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
    // Ready once the policies are loaded and the sidecar is known to run as its agent.
    let loaded = tollgate_runtime::admin::Readiness::default();
    let watch = snapshot::watch(client, config.agent.clone(), config.namespace.clone(), snapshot, loaded.clone(), swapped);
    let admin = tollgate_runtime::admin::serve(config.admin_addr, sidecar.metrics.clone(), ready.clone());
    let serve = server::serve(config.listen, sidecar.clone());
    let identity = speaks_for_its_agent(&sidecar, &loaded, &ready);
    let redirected = async {
        match config.transparent_listen {
            Some(addr) => transparent::serve(addr, sidecar.clone()).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = serve => r.context("MCP listener"),
        r = redirected => r.context("transparent-mode listener"),
        r = admin => r.context("admin listener"),
        r = watch => r.context("policy watch"),
        r = identity => r,
        () = sidecar.audit.run() => Ok(()),
        () = async { match &sidecar.audit.shipper { Some(s) => s.run().await, None => std::future::pending().await } } => Ok(()),
        () = tollgate_runtime::shutdown_signal() => Ok(()),
    };
    sidecar.audit.flush_and_wait();
    result
}

/// Runs while the sidecar may speak for its agent; ends with the reason as soon as the agent it
/// serves runs as another service account than this sidecar (at start, or after an edit).
async fn speaks_for_its_agent(sc: &Arc<Sidecar>, loaded: &Readiness, ready: &Readiness) -> Result<()> {
    let user = tollgate_runtime::whoami(&sc.client).await?;
    tracing::info!(user, "the API server knows this sidecar as");
    let mut swaps = sc.snapshot_swapped.subscribe();
    loop {
        let snapshot = sc.snapshot.load_full();
        if let Some(refusal) = snapshot.agent.as_ref().and_then(|a| tollgate_core::mcp::access::identity_refusal(&user, &sc.config.namespace, a)) {
            anyhow::bail!(refusal);
        }
        if loaded.is_ready() {
            ready.set_ready();
        }
        if swaps.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
