//! What the sidecar is told (its flags) and what every request handler shares.

use crate::aggregate::Sessions;
use crate::approvals::Registry;
use crate::{audit, snapshot, upstream};
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_core::policy::Action;

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "tollgate-sidecar", version, about = "Tollgate's MCP firewall")]
pub struct Config {
    /// Where agents reach MCP: `/mcp` aggregates every server, `/mcp/<server>` exposes one.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:15001")]
    pub listen: SocketAddr,
    #[arg(long, env = "TOLLGATE_ADMIN_ADDR", default_value = "127.0.0.1:15021")]
    pub admin_addr: SocketAddr,
    /// The `ManagedAgent` this sidecar serves.
    #[arg(long, env = "TOLLGATE_AGENT")]
    pub agent: String,
    #[arg(long, env = "TOLLGATE_NAMESPACE")]
    pub namespace: String,
    #[arg(long, env = "TOLLGATE_POD", default_value = "")]
    pub pod: String,
    /// The decision for calls no policy and no `defaultAction` decides.
    #[arg(long, env = "TOLLGATE_CLUSTER_DEFAULT", default_value = "Allow", value_parser = tollgate_core::policy::parse_action)]
    pub cluster_default: Action,
    /// Largest request body accepted from the agent.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Largest answer read from an MCP server (a tool result, a list); a larger one is an error
    /// naming the server.
    #[arg(long, env = "TOLLGATE_MAX_UPSTREAM_ANSWER", default_value_t = 16 << 20)]
    pub max_upstream_answer: usize,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Seconds a client may take to send a request's body, once its headers are in.
    #[arg(long, env = "TOLLGATE_REQUEST_BODY_SECONDS", default_value_t = 30)]
    pub request_body_seconds: u64,
    /// Seconds between progress notifications while a call waits for approval.
    #[arg(long, default_value_t = 5)]
    pub progress_interval_seconds: u64,
    /// Where the Secrets named by `MCPServer.spec.headers` are mounted, one directory per Secret
    /// (`<dir>/<secret>/<key>`); mounted into the sidecar's container only.
    #[arg(long, env = "TOLLGATE_CREDENTIALS_DIR", default_value = "/var/run/tollgate/credentials")]
    pub credentials_dir: std::path::PathBuf,
    /// Where ConfigMaps holding CA bundles of `MCPServer.spec.tls` are mounted, one directory per
    /// ConfigMap (`<dir>/<configmap>/<key>`); Secrets holding them are under the credentials dir.
    #[arg(long, env = "TOLLGATE_CA_DIR", default_value = "/var/run/tollgate/ca")]
    pub ca_dir: std::path::PathBuf,
    /// The model gateway's base URL: audit records are shipped to its audit store too.
    #[arg(long, env = "TOLLGATE_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// The CA (PEM) of the gateway's TLS certificate: audit batches go to the gateway trusting
    /// it alone (an `https` audit URL without it trusts the platform's roots).
    #[arg(long, env = "TOLLGATE_GATEWAY_CA", hide_env_values = true)]
    pub gateway_ca: Option<String>,
    /// Where the app containers find that CA (`gateway-ca.crt`) and it with the platform's roots
    /// (`ca-bundle.crt`), written before the sidecar turns ready (an emptyDir they mount).
    #[arg(long, env = "TOLLGATE_TRUST_DIR")]
    pub trust_dir: Option<std::path::PathBuf>,
    /// The token audit batches are sent with (the pod's service-account token).
    #[arg(long, env = "TOLLGATE_AUDIT_TOKEN_FILE", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub audit_token_file: std::path::PathBuf,
    /// Where headers from Vault (`MCPServer.spec.headers[].vault`) are read, under the pod's
    /// service-account token.
    #[command(flatten)]
    pub vault: tollgate_mcp_client::vault::VaultArgs,
    /// Transparent mode: where the pod's iptables redirect sends its outbound TCP.
    #[arg(long, env = "TOLLGATE_TRANSPARENT_LISTEN")]
    pub transparent_listen: Option<SocketAddr>,
    /// Threads serving requests: 1 (the default) runs everything on one thread.
    #[arg(long, env = "TOLLGATE_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,
    /// The pod's own address (downward API `status.podIP`): accepted as `Host` like loopback.
    #[arg(long, env = "TOLLGATE_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// More names accepted as `Host` (comma-separated, no port); loopback is always accepted.
    #[arg(long, env = "TOLLGATE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may call the sidecar; none by default.
    #[arg(long, env = "TOLLGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

impl Config {
    pub fn transport_rules(&self) -> tollgate_core::mcp::access::TransportRules {
        tollgate_core::mcp::access::TransportRules {
            allowed_hosts: self.allowed_hosts.clone(),
            allowed_origins: self.allowed_origins.clone(),
            pod_ip: self.pod_ip,
        }
    }
}

/// What every request handler shares.
pub struct Sidecar {
    pub config: Config,
    pub transport: tollgate_core::mcp::access::TransportRules,
    pub client: kube::Client,
    pub snapshot: Arc<arc_swap::ArcSwap<snapshot::Snapshot>>,
    /// Signalled after every snapshot swap: open streams check the agent's rights again.
    pub snapshot_swapped: tokio::sync::watch::Sender<()>,
    pub upstream: upstream::Upstream,
    pub held: Registry,
    /// Sessions of the aggregated `/mcp` endpoint.
    pub sessions: Sessions,
    pub metrics: Arc<tollgate_runtime::admin::Metrics>,
    pub audit: audit::AuditLog,
    /// This process's identity on the requests it creates: it executes only its own.
    pub instance: String,
    /// The buckets of the rules' rate limits.
    pub limits: crate::limits::Limiter,
}
