//! Tollgate's MCP firewall (DESIGN §3.2): a Streamable HTTP proxy on localhost that passes every
//! MCP message through unchanged except `tools/list` (hidden tools, justification schemas) and
//! `tools/call` (decided by `tollgate-core`: allowed, denied, or held for approval).

pub mod aggregate;
pub mod answer;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod body;
pub mod credentials;
pub mod proxy;
pub mod snapshot;
pub mod upstream;

use anyhow::{Context, Result};
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
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Seconds between progress notifications while a call waits for approval.
    #[arg(long, default_value_t = 5)]
    pub progress_interval_seconds: u64,
    /// Where the Secrets named by `MCPServer.spec.headers` are mounted, one directory per Secret
    /// (`<dir>/<secret>/<key>`); mounted into the sidecar's container only.
    #[arg(long, env = "TOLLGATE_CREDENTIALS_DIR", default_value = "/var/run/tollgate/credentials")]
    pub credentials_dir: std::path::PathBuf,
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
    pub fn transport_rules(&self) -> tollgate_core::access::TransportRules {
        tollgate_core::access::TransportRules { allowed_hosts: self.allowed_hosts.clone(), allowed_origins: self.allowed_origins.clone(), pod_ip: self.pod_ip }
    }
}

/// What every request handler shares.
pub struct Sidecar {
    pub config: Config,
    pub transport: tollgate_core::access::TransportRules,
    pub client: kube::Client,
    pub snapshot: Arc<arc_swap::ArcSwap<snapshot::Snapshot>>,
    pub upstream: upstream::Upstream,
    pub held: approvals::Registry,
    /// Sessions of the aggregated `/mcp` endpoint.
    pub sessions: aggregate::Sessions,
    pub metrics: Arc<tollgate_runtime::admin::Metrics>,
    pub audit: audit::AuditLog,
    /// This process's identity on the requests it creates: it executes only its own.
    pub instance: String,
}

/// SIGINT or SIGTERM (what Kubernetes sends): the audit buffer is flushed before exit.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn run(config: Config) -> Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let instance = format!("{:016x}", rand::random::<u64>());
    let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot::Snapshot::default()));
    let sidecar = Arc::new(Sidecar {
        config: config.clone(),
        transport: config.transport_rules(),
        client: client.clone(),
        snapshot: snapshot.clone(),
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
    let watch = snapshot::watch(client, config.agent.clone(), config.namespace.clone(), snapshot, ready.clone());
    let admin = tollgate_runtime::admin::serve(config.admin_addr, sidecar.metrics.clone(), ready);
    let serve = proxy::serve(config.listen, sidecar.clone());
    let result = tokio::select! {
        r = serve => r.context("MCP listener"),
        r = admin => r.context("admin listener"),
        r = watch => r.context("policy watch"),
        () = sidecar.audit.run() => Ok(()),
        () = shutdown_signal() => Ok(()),
    };
    sidecar.audit.flush();
    result
}
