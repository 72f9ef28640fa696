//! Tollgate's model gateway (DESIGN §3.4): agents' OpenAI and Anthropic SDK calls, under the
//! agent's identity (its key), its allowed models and its budgets, with a ledger row per call.

pub mod audit_api;
pub mod audit_store;
pub mod credentials;
pub mod forward;
pub mod index;
pub mod ledger;
pub mod recorder;
pub mod server;
pub mod state;
pub mod status;
pub mod stream;

use anyhow::{Context, Result};
use std::sync::Arc;

pub use state::{Config, Gateway};

pub async fn run(config: Config) -> Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let ledger = ledger::Ledger::connect(&config.database_url).await.context("opening the ledger")?;
    let roots = Arc::new(tollgate_mcp_client::transport::platform_roots());
    let gw = Arc::new(Gateway {
        config: config.clone(),
        client: client.clone(),
        index: Arc::default(),
        settled: recorder::spawn(ledger.clone()),
        ledger,
        http: tollgate_mcp_client::transport::client(roots),
        credentials: credentials::ProviderCredentials::default(),
        metrics: Arc::default(),
    });
    let ready = tollgate_runtime::admin::Readiness::default();
    let admin = tollgate_runtime::admin::serve(config.admin_addr, gw.metrics.clone(), ready.clone());
    let watch = index::watch(client, gw.index.clone(), ready);
    let serve = server::serve(config.listen, gw.clone());
    tokio::select! {
        r = serve => r.context("gateway listener"),
        r = admin => r.context("admin listener"),
        r = watch => r.context("watching agents, providers and budgets"),
        () = status::run(gw.clone()) => Ok(()),
        () = tollgate_runtime::shutdown_signal() => Ok(()),
    }
}
