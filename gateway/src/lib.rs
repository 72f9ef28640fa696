//! Tollgate's model gateway (DESIGN §3.4): agents' OpenAI and Anthropic SDK calls, under the
//! agent's identity (its key), its allowed models and its budgets, with a ledger row per call.

pub mod audit_api;
pub mod audit_store;
pub mod checkpoints;
pub mod credentials;
pub mod forward;
pub mod index;
pub mod inflight;
pub mod ledger;
pub mod recorder;
pub mod reserver;
pub mod server;
pub mod settlement;
pub mod shadow_status;
pub mod slack;
pub mod state;
pub mod status;
pub mod stream;
pub mod tls;
pub mod trace;

use anyhow::{Context, Result};
use std::sync::Arc;

pub use state::{Config, GatewayState};

pub async fn run(config: Config) -> Result<()> {
    let client = tollgate_runtime::kube_client::infer().await.context("connecting to the Kubernetes API")?;
    let ledger = ledger::Ledger::connect(&config.database_url).await.context("opening the ledger")?;
    let instance = format!("{:016x}", rand::random::<u64>());
    // Alive before any call is opened: a call is never taken for a dead instance's.
    ledger.heartbeat(&instance).await.context("writing this gateway's heartbeat")?;
    let roots = Arc::new(tollgate_mcp_client::transport::platform_roots());
    let settled = recorder::spawn(ledger.clone());
    let settling = tokio_util::task::TaskTracker::new();
    let gw = Arc::new(GatewayState {
        config: config.clone(),
        client: client.clone(),
        index: Arc::default(),
        reserver: reserver::Reserver::spawn(ledger.clone(), instance.clone(), settled.clone(), settling.clone()),
        settled,
        ledger,
        http: tollgate_mcp_client::transport::client(roots),
        credentials: credentials::ProviderCredentials::new(tollgate_mcp_client::vault::Vault::new(&config.vault).map_err(anyhow::Error::msg)?),
        metrics: Arc::default(),
        instance,
        settling,
        signer: checkpoints::Signer::new(config.audit_signing_key.as_ref().map(|k| k.0.as_str()), &config.audit_checkpoint_namespace)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
    });
    match &gw.signer {
        Some(s) => tracing::info!(public_key = s.public, namespace = s.namespace, "audit checkpoints are signed"),
        None => tracing::warn!(
            "no audit signing key (TOLLGATE_AUDIT_SIGNING_KEY): the audit chain is not checkpointed, so a truncated or recomputed chain goes unseen"
        ),
    }
    tracing::info!(instance = gw.instance, "gateway starting");
    let ready = tollgate_runtime::admin::Readiness::default();
    let admin = tollgate_runtime::admin::serve(config.admin_addr, gw.metrics.clone(), ready.clone());
    let watch = index::watch(client, gw.index.clone(), ready);
    let drain = std::time::Duration::from_secs(config.drain_seconds);
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Files::load(cert.clone(), key.clone()).context("the serving certificate")?).server_config()),
        _ => None,
    };
    let serve = server::serve(config.listen, gw.clone(), tls, tollgate_runtime::shutdown_signal(), drain);
    let result = tokio::select! {
        r = serve => r.context("gateway listener"),
        r = admin => r.context("admin listener"),
        r = watch => r.context("watching agents, providers and budgets"),
        () = status::run(gw.clone()) => Ok(()),
        () = inflight::run(gw.clone()) => Ok(()),
        () = gw.ledger.checkpoints() => Ok(()),
        () = checkpoints::run(gw.signer.clone(), &gw.client, &gw.ledger, std::time::Duration::from_secs(config.audit_checkpoint_seconds.max(1))) => Ok(()),
    };
    // What was settled is written before the process goes; then its allowances go back; then its
    // heartbeat, so whatever it still had in flight is settled by the next gateway at once.
    gw.settling.close();
    if tokio::time::timeout(std::time::Duration::from_secs(5), gw.settling.wait()).await.is_err() {
        tracing::warn!("calls still settling after 5 s");
    }
    // Nothing more is taken from allowances in memory; then what was is written, and they go back.
    gw.reserver.close();
    recorder::flush(&gw.settled).await;
    if let Err(e) = gw.ledger.give_back_leases(&gw.instance).await {
        tracing::warn!(error = %e, "could not hand this gateway's budget allowances back; they are charged once its heartbeat is stale");
    }
    if let Err(e) = gw.ledger.forget(&gw.instance).await {
        tracing::warn!(error = %e, "could not remove this gateway's heartbeat");
    }
    tracing::info!("gateway stopped");
    result
}
