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
    /// Seconds a client may take to send a request's headers (from connecting, or from its last
    /// answer on a kept-alive connection).
    /// HTTPS: the serving certificate (PEM chain) and its key; both or neither. Read again when
    /// the certificate file changes.
    #[arg(long, env = "TOLLGATE_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "TOLLGATE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Seconds a client may take to send a request's body, once its headers are in.
    #[arg(long, env = "TOLLGATE_REQUEST_BODY_SECONDS", default_value_t = 30)]
    pub request_body_seconds: u64,
    /// The audience a sidecar's audit token must be for (injection projects one for it): a
    /// token for the API server is refused, so one sniffed on its way here opens nothing else.
    #[arg(long, env = "TOLLGATE_AUDIT_TOKEN_AUDIENCE", default_value = "tollgate-gateway")]
    pub audit_token_audience: String,
    /// Seconds a client may leave the answer unread (its socket full) before the connection is
    /// closed and its call settled at its reservation.
    #[arg(long, env = "TOLLGATE_CLIENT_WRITE_SECONDS", default_value_t = 60)]
    pub client_write_seconds: u64,
    /// Largest non-streamed answer read from a provider.
    #[arg(long, env = "TOLLGATE_MAX_ANSWER", default_value_t = 64 << 20)]
    pub max_answer: usize,
    /// Seconds a provider may take to start answering, and to send a stream's next event.
    #[arg(long, env = "TOLLGATE_PROVIDER_TIMEOUT_SECONDS", default_value_t = 120)]
    pub provider_timeout_seconds: u64,
    /// Seconds between refreshes of `Budget` and `ManagedAgent` spend in status.
    #[arg(long, env = "TOLLGATE_STATUS_INTERVAL_SECONDS", default_value_t = 2)]
    pub status_interval_seconds: u64,
    /// Seconds without a heartbeat after which a gateway instance is taken for dead and the
    /// calls it left in flight are settled as interrupted.
    #[arg(long, env = "TOLLGATE_INSTANCE_LEASE_SECONDS", default_value_t = 15)]
    pub instance_lease_seconds: u64,
    /// On SIGTERM: seconds the calls in progress get to finish before the gateway stops.
    #[arg(long, env = "TOLLGATE_DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
    /// `anthropic-beta` / `openai-beta` values passed to providers (comma-separated); a request
    /// asking for any other beta is refused, since a beta changes what a body means.
    #[arg(long, env = "TOLLGATE_ALLOWED_BETAS", value_delimiter = ',')]
    pub allowed_betas: Vec<String>,
    /// The Ed25519 key (PKCS#8, base64) the audit chain's checkpoints are signed with; without
    /// it no checkpoint is written, and truncation or a rewritten chain goes unseen.
    #[arg(long, env = "TOLLGATE_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub audit_signing_key: Option<Hidden>,
    /// The namespace checkpoints are recorded in (as ConfigMaps the gateway may only create).
    #[arg(long, env = "TOLLGATE_AUDIT_CHECKPOINT_NAMESPACE", default_value = "tollgate-system")]
    pub audit_checkpoint_namespace: String,
    /// Seconds between checkpoints while the chain grows.
    #[arg(long, env = "TOLLGATE_AUDIT_CHECKPOINT_SECONDS", default_value_t = 30)]
    pub audit_checkpoint_seconds: u64,
    /// Threads serving calls: 0 (the default) is one per CPU the process may use (its affinity,
    /// its container's CPU limit), and one CPU runs everything on a single thread.
    #[arg(long, env = "TOLLGATE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,
    /// The Slack app's signing secret: `/slack/interactions` is served only with it.
    #[arg(long, env = "TOLLGATE_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<Hidden>,
    /// The Slack bot token, to open the reason modal and answer the person who clicked.
    #[arg(long, env = "TOLLGATE_SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: Option<Hidden>,
    #[arg(long, env = "TOLLGATE_SLACK_API_URL", default_value = "https://slack.com/api")]
    pub slack_api_url: String,
    /// Where provider credentials kept in Vault (`ModelProvider.spec.credentials.vault`) are read.
    #[command(flatten)]
    pub vault: tollgate_mcp_client::vault::VaultArgs,
}

/// A secret value: never in a log line, whatever prints the configuration.
#[derive(Clone)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Hidden(s.to_owned()))
    }
}

pub struct GatewayState {
    pub config: Config,
    pub client: kube::Client,
    pub index: Arc<ArcSwap<Index>>,
    pub ledger: Ledger,
    pub http: HttpClient,
    pub credentials: crate::credentials::ProviderCredentials,
    pub metrics: Arc<tollgate_runtime::admin::Metrics>,
    /// Settled and refused calls, written in batches by [`crate::recorder`].
    pub settled: tokio::sync::mpsc::Sender<crate::recorder::Entry>,
    /// Budget reservations, group-committed by [`crate::reserver`].
    pub reserver: crate::reserver::Reserver,
    /// This process, as its calls in flight and its heartbeat name it.
    pub instance: String,
    /// Settlements still to be made (streams', whole answers' just after they are returned, calls
    /// whose client went away), awaited before the process stops.
    pub settling: tokio_util::task::TaskTracker,
    /// Signs the audit chain's checkpoints, when the gateway has a key.
    pub signer: Option<Arc<crate::checkpoints::Signer>>,
}
