//! The operator's flags and environment, and what they tell the sidecars and gateways it runs.

use k8s_openapi::api::core::v1::ResourceRequirements;
use std::net::SocketAddr;

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "tollgate-operator", version, about = "Tollgate's controllers and admission webhooks")]
pub struct Config {
    /// Where the validating webhook listens (HTTPS).
    #[arg(long, env = "TOLLGATE_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// How the API server reaches the webhook: a URL (`https://127.0.0.1:9443`), used as
    /// `clientConfig.url`. Without it, `--webhook-service` is used.
    #[arg(long, env = "TOLLGATE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// `namespace/name` of the Service in front of the webhook (in a cluster).
    #[arg(long, env = "TOLLGATE_WEBHOOK_SERVICE", default_value = "tollgate-system/tollgate-operator")]
    pub webhook_service: String,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, env = "TOLLGATE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// The identity of the gateway, the only one that may record Slack decisions.
    #[arg(long, env = "TOLLGATE_SLACK_RELAY_USER", default_value = "system:serviceaccount:tollgate-system:tollgate-gateway")]
    pub slack_relay_user: String,
    /// Name of the ValidatingWebhookConfiguration the operator keeps up to date.
    #[arg(long, env = "TOLLGATE_WEBHOOK_CONFIGURATION", default_value = "tollgate")]
    pub webhook_configuration: String,
    /// Log as JSON lines.
    #[arg(long, env = "TOLLGATE_LOG_JSON")]
    pub log_json: bool,
    /// The operator's own namespace: its Lease and its webhook TLS Secret live there.
    #[arg(long, env = "TOLLGATE_NAMESPACE", default_value = "tollgate-system")]
    pub namespace: String,
    /// The Secret holding the webhook's CA and serving certificate, shared by every replica.
    #[arg(long, default_value = "tollgate-webhook-tls")]
    pub tls_secret: String,
    /// Another party (cert-manager) fills the TLS Secret: wait for it instead of making one.
    #[arg(long, env = "TOLLGATE_TLS_SECRET_EXTERNAL")]
    pub tls_secret_external: bool,
    /// The Lease the replicas elect their leader on; only the leader runs the controllers.
    #[arg(long, default_value = "tollgate-operator")]
    pub lease_name: String,
    #[arg(long, env = "TOLLGATE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's name in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Let several replicas on one host listen on the same webhook address (SO_REUSEPORT), the
    /// kernel spreading connections between them as a Service would.
    #[arg(long)]
    pub webhook_reuse_port: bool,
    /// The image of injected sidecars.
    #[arg(long, env = "TOLLGATE_SIDECAR_IMAGE", default_value = concat!("ghcr.io/tollgate-dev/tollgate:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// Resources of injected sidecars, as the JSON of a container's `resources`.
    #[arg(long, env = "TOLLGATE_SIDECAR_RESOURCES", value_parser = parse_resources)]
    pub sidecar_resources: Option<ResourceRequirements>,
    /// The decision injected sidecars make for calls nothing else decides.
    #[arg(long, env = "TOLLGATE_CLUSTER_DEFAULT", default_value = "Allow", value_parser = ["Allow", "Deny"])]
    pub cluster_default: String,
    /// Transparent mode: destinations (CIDRs) injected pods reach without the sidecar, e.g. the
    /// API server's; comma-separated.
    #[arg(long, env = "TOLLGATE_REDIRECT_EXCLUDE_CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    pub redirect_exclude_cidrs: Vec<String>,
    /// Transparent mode: destination ports injected pods reach without the sidecar.
    #[arg(long, env = "TOLLGATE_REDIRECT_EXCLUDE_PORTS", value_delimiter = ',')]
    pub redirect_exclude_ports: Vec<u16>,
    /// Seconds between two discoveries of an MCP server (besides one on every change).
    #[arg(long, env = "TOLLGATE_DISCOVERY_INTERVAL_SECONDS", default_value_t = 300)]
    pub discovery_interval_seconds: u64,
    /// The model gateway's base URL, given to injected pods (with the agent's key); none: no
    /// model endpoint is injected.
    #[arg(long, env = "TOLLGATE_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// The Secret of the operator's namespace whose `ca.crt` is the CA of that gateway's TLS
    /// certificate (its `Gateway`'s TLS Secret): injected pods and the AI first reader trust it.
    /// Absent: the gateway is plain HTTP.
    #[arg(long, env = "TOLLGATE_GATEWAY_CA_SECRET")]
    pub gateway_ca_secret: Option<String>,
    /// The ClusterRole the service accounts of the gateways the operator runs are bound to.
    #[arg(long, env = "TOLLGATE_GATEWAY_CLUSTER_ROLE", default_value = "tollgate-gateway")]
    pub gateway_cluster_role: String,
    /// The image of gateways that name none; the sidecars' image when absent.
    #[arg(long, env = "TOLLGATE_GATEWAY_IMAGE")]
    pub gateway_image: Option<String>,
    /// Where traces go (OTLP/HTTP), for this process and, passed on, its sidecars and gateways.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[arg(long, env = "OTEL_TRACES_SAMPLER")]
    pub otel_sampler: Option<String>,
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub otel_sampler_arg: Option<String>,
    /// Let `ModelProvider.baseURL` be plain `http` (an in-cluster server without TLS); without
    /// it such a provider is refused at admission, since its credential would cross in the clear.
    #[arg(long, env = "TOLLGATE_ALLOW_HTTP_PROVIDERS")]
    pub allow_http_providers: bool,
    /// `anthropic-beta` / `openai-beta` values the gateways pass to providers (comma-separated);
    /// requests asking for any other beta are refused.
    #[arg(long, env = "TOLLGATE_GATEWAY_ALLOWED_BETAS", value_delimiter = ',')]
    pub gateway_allowed_betas: Vec<String>,
    /// Slack's Web API, which approval messages are posted to and updated at.
    #[arg(long, env = "TOLLGATE_SLACK_API_URL", default_value = "https://slack.com/api")]
    pub slack_api_url: String,
    /// The SMTP server approval emails go out through: `smtp://host:port` (plain SMTP, as to a
    /// relay inside the cluster). Without it, workflows' `notify.email` fails with that reason.
    #[arg(long, env = "TOLLGATE_SMTP_URL", value_parser = parse_smtp)]
    pub smtp_url: Option<(String, u16)>,
    #[arg(long, env = "TOLLGATE_SMTP_FROM", default_value = "Tollgate <tollgate@localhost>")]
    pub smtp_from: String,
    /// Vault, for the operator's own reads (discovery of servers whose headers are kept there);
    /// sidecars and gateways are given the same address and mount.
    #[command(flatten)]
    pub vault: tollgate_mcp_client::vault::VaultArgs,
    /// The Vault role sidecars log in as, for headers that name none.
    #[arg(long, env = "TOLLGATE_VAULT_SIDECAR_ROLE")]
    pub vault_sidecar_role: Option<String>,
    /// The Vault role gateways log in as, for provider credentials that name none.
    #[arg(long, env = "TOLLGATE_VAULT_GATEWAY_ROLE")]
    pub vault_gateway_role: Option<String>,
}

fn parse_smtp(text: &str) -> Result<(String, u16), String> {
    let rest = text.strip_prefix("smtp://").ok_or("an SMTP URL starts with smtp://")?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap_or((rest, "25"));
    let port = port.parse().map_err(|_| format!("port {port:?} is not a number"))?;
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host.to_owned(), port))
}

fn parse_cidr(text: &str) -> Result<String, String> {
    text.trim().parse::<tollgate_core::k8s::transparent::Cidr>().map(|c| c.to_string()).map_err(|e| e.to_string())
}

fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(text).map_err(|e| format!("not a container's resources: {e}"))
}

impl Config {
    /// How injected sidecars run.
    pub fn injection(&self) -> tollgate_core::k8s::inject::Settings {
        tollgate_core::k8s::inject::Settings {
            image: self.sidecar_image.clone(),
            listen_port: 15001,
            admin_port: 15021,
            resources: self.sidecar_resources.clone(),
            cluster_default: self.cluster_default.clone(),
            redirect_port: 15006,
            exclude_cidrs: self.redirect_exclude_cidrs.clone(),
            exclude_ports: self.redirect_exclude_ports.clone(),
            gateway_url: self.gateway_url.clone(),
            // Read from its Secret at each injection (`gateway_ca::GatewayCa`).
            gateway_ca: None,
            vault: self.vault_env(self.vault_sidecar_role.clone()),
            tracing: self.tracing_env(),
        }
    }

    /// The operator's own trace export, passed on to its sidecars and gateways.
    pub fn tracing_env(&self) -> Option<tollgate_core::k8s::inject::TracingEnv> {
        let endpoint = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty())?;
        Some(tollgate_core::k8s::inject::TracingEnv { endpoint, sampler: self.otel_sampler.clone(), sampler_arg: self.otel_sampler_arg.clone() })
    }

    /// What a sidecar or gateway is told of Vault, logging in as `role` by default.
    pub fn vault_env(&self, role: Option<String>) -> Option<tollgate_core::k8s::inject::VaultEnv> {
        let address = self.vault.addr.clone().filter(|a| !a.is_empty())?;
        Some(tollgate_core::k8s::inject::VaultEnv {
            address,
            auth_mount: self.vault.auth_mount.clone(),
            role,
            cache_seconds: self.vault.cache_seconds,
            namespace_scope: self.vault.namespace_scope.clone(),
        })
    }
}
