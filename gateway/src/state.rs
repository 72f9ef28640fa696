//! What the gateway is told (its flags) and what every request shares.

use crate::index::Index;
use crate::ledger::Ledger;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_mcp_client::transport::HttpClient;

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "tollgate-gateway", version, about = "Tollgate's model gateway")]
pub struct Config {
    /// Where agents' SDKs reach the gateway (`/openai/v1/...`, `/anthropic/v1/...`).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "TOLLGATE_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,
    /// The ledger: `sqlite:///var/lib/tollgate/ledger.db?mode=rwc` (one replica) or
    /// `postgres://…` (several replicas).
    #[arg(long, env = "TOLLGATE_DATABASE_URL", default_value = "sqlite:///var/lib/tollgate/ledger.db?mode=rwc")]
    pub database_url: String,
    /// Largest request body accepted from an agent.
    #[arg(long, env = "TOLLGATE_MAX_BODY", default_value_t = 16 << 20)]
    pub max_body: usize,
    /// Largest non-streamed answer read from a provider.
    #[arg(long, env = "TOLLGATE_MAX_ANSWER", default_value_t = 64 << 20)]
    pub max_answer: usize,
    /// Seconds a provider may take to start answering.
    #[arg(long, env = "TOLLGATE_PROVIDER_TIMEOUT_SECONDS", default_value_t = 120)]
    pub provider_timeout_seconds: u64,
    /// Seconds between refreshes of `Budget` and `ManagedAgent` spend in status.
    #[arg(long, env = "TOLLGATE_STATUS_INTERVAL_SECONDS", default_value_t = 2)]
    pub status_interval_seconds: u64,
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,
}

pub struct Gateway {
    pub config: Config,
    pub client: kube::Client,
    pub index: Arc<ArcSwap<Index>>,
    pub ledger: Ledger,
    pub http: HttpClient,
    pub credentials: crate::credentials::ProviderCredentials,
    pub metrics: Arc<tollgate_runtime::admin::Metrics>,
    /// Settled and refused calls, written in batches by [`crate::recorder`].
    pub settled: tokio::sync::mpsc::Sender<crate::recorder::Entry>,
}
