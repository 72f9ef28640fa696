//! The `MCPServer` controller: connects to each server as a client that only looks (Streamable
//! HTTP, with the server's own credentials and CA bundle), records what it says of itself and
//! which tools it offers (`status.serverInfo`, `status.tools` with a digest of each input schema)
//! and a `Ready` condition whose reason says what is wrong; refreshes on every change and every
//! `--discovery-interval-seconds`; an Event when tools come, go, or change their schema.

use super::{condition, upsert_condition};
use crate::context::Shared;
use futures::StreamExt;
use hyper::header::{HeaderName, HeaderValue};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{CaBundleSource, DiscoveredTool, HeaderSource, McpServer, ServerInfo};
use tollgate_mcp_client::discovery::{self, Target};
use tollgate_mcp_client::transport::{self, HttpClient};
use tollgate_mcp_client::vault::Vault;

/// Discoveries at once. Each waits on its server (up to [`MAX_DISCOVERY`]), not on the API
/// server, so a few silent servers must not hold up everyone else's; still bounded, as each
/// holds connections and their buffers.
const DISCOVERIES_AT_ONCE: u16 = 16;
/// Discoveries at once of one namespace's servers: a namespace whose servers never answer holds
/// a quarter of the slots, and the servers of other namespaces are discovered meanwhile.
const DISCOVERIES_PER_NAMESPACE: usize = DISCOVERIES_AT_ONCE as usize / 4;
/// When a namespace already runs its share, its server is tried again after this.
const WAIT_FOR_SHARE: Duration = Duration::from_secs(2);

/// The longest a discovery may take, whatever the server's own timeout.
const MAX_DISCOVERY: Duration = Duration::from_secs(20);
/// The largest answer read from a server during discovery.
const MAX_ANSWER: usize = 4 << 20;
/// After a failure, the next try comes sooner than the periodic refresh.
const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Why the server could not even be called: its configuration, not the server.
#[derive(Debug, thiserror::Error)]
enum Setup {
    #[error("set exactly one of url or service")]
    NoEndpoint,
    #[error("header {header}: Secret {secret} has no key {key} (or does not exist)")]
    MissingSecret { header: String, secret: String, key: String },
    #[error("header {header}: {source} (read for discovery with the operator's own Vault role)")]
    Vault { header: String, source: tollgate_mcp_client::vault::VaultError },
    #[error("header {header}: its value is in Vault at {path}, but the operator has no Vault address (the chart's vault.address)")]
    NoVault { header: String, path: String },
    #[error("header {header}: not a valid header name or value")]
    InvalidHeader { header: String },
    #[error("CA bundle {what} {name} key {key}: {reason}")]
    CaBundle { what: &'static str, name: String, key: String, reason: String },
    #[error("the operator may not read {what} {name} (the chart's discovery.readSecrets is off): a server with credentials or a CA bundle is not discovered")]
    Forbidden { what: &'static str, name: String },
}

impl Setup {
    fn reason(&self) -> &'static str {
        match self {
            Setup::NoEndpoint => "InvalidSpec",
            Setup::MissingSecret { .. } | Setup::Vault { .. } | Setup::NoVault { .. } | Setup::InvalidHeader { .. } => "CredentialsMissing",
            Setup::CaBundle { .. } => "CABundleInvalid",
            Setup::Forbidden { .. } => "CredentialsUnavailable",
        }
    }
}

struct Context {
    shared: Arc<Shared>,
    /// Trusts the platform's roots; servers with a CA bundle get a client of their own.
    client: HttpClient,
    roots: Arc<rustls::RootCertStore>,
    interval: Duration,
    shares: super::share::Shares,
}

pub async fn run(shared: Arc<Shared>, interval: Duration) {
    let roots = Arc::new(transport::platform_roots());
    let ctx = Arc::new(Context {
        client: transport::client(roots.clone()),
        roots,
        shared: shared.clone(),
        interval,
        shares: super::share::Shares::new(DISCOVERIES_PER_NAMESPACE),
    });
    super::lean::controller(Api::<McpServer>::all(shared.client.clone()), super::lean::config())
        .with_config(super::lean::settings(DISCOVERIES_AT_ONCE))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_: Arc<McpServer>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.reconcile("mcpserver", false);
    tracing::warn!(%error, "MCP server reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(server = %server.name_any(), namespace = server.namespace().unwrap_or_default()))]
async fn reconcile(server: Arc<McpServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = server.namespace().unwrap_or_default();
    let Some(_slot) = ctx.shares.take(&ns) else {
        tracing::debug!("its namespace runs its share of discoveries; later");
        return Ok(Action::requeue(WAIT_FOR_SHARE));
    };
    let client = &ctx.shared.client;
    let old = server.status.clone().unwrap_or_default();
    let generation = server.meta().generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    let now = Timestamp::now();
    let outcome = match target(client, ctx.shared.vault.as_deref(), &ns, &server, &ctx.roots).await? {
        Err(setup) => Err((setup.reason(), setup.to_string())),
        Ok((target, own_client)) => {
            let http = own_client.as_ref().unwrap_or(&ctx.client);
            discovery::discover(http, &target).await.map_err(|e| (e.reason(), e.to_string()))
        }
    };
    let next = match outcome {
        Ok(found) => {
            let tools: Vec<DiscoveredTool> = found
                .tools
                .iter()
                .map(|t| DiscoveredTool {
                    name: t.name.clone(),
                    description: t.description.as_ref().map(|d| d.chars().take(1024).collect()),
                    schema_digest: Some(t.schema_digest()),
                })
                .collect();
            if old.last_discovery_time.is_some() {
                announce_changes(&ctx.shared, &server, &old.tools, &tools).await;
            }
            let message = format!("{} tools from {} {}", tools.len(), found.name, found.version.as_deref().unwrap_or_default());
            status.server_info = Some(ServerInfo { name: found.name, version: found.version, protocol_version: found.protocol_version });
            status.tool_count = i32::try_from(tools.len()).ok();
            status.tools = tools;
            status.last_discovery_time = Some(Time(now));
            upsert_condition(&mut status.conditions, condition("Ready", true, "Discovered", message.trim(), generation, now));
            ctx.interval
        }
        Err((reason, message)) => {
            let was_ready = old.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let first = !old.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == reason);
            if was_ready || first {
                crate::events::publish_event(client, &server.object_ref(&()), EventType::Warning, "DiscoveryFailed", &message, "Discover").await;
            }
            tracing::info!(reason, message, "MCP server discovery failed");
            upsert_condition(&mut status.conditions, condition("Ready", false, reason, &message, generation, now));
            RETRY.min(ctx.interval)
        }
    };
    if status != old {
        Api::<McpServer>::namespaced(client.clone(), &ns)
            .patch_status(&server.name_any(), &crate::ssa::write_params(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
    }
    ctx.shared.metrics.reconcile("mcpserver", true);
    Ok(Action::requeue(next))
}

async fn announce_changes(shared: &Shared, server: &McpServer, before: &[DiscoveredTool], after: &[DiscoveredTool]) {
    let changes = tollgate_core::mcp::discovery::tool_changes(before, after);
    let reference = server.object_ref(&());
    for (tool, from, to) in &changes.schema_changed {
        let note = format!("tool {tool} changed its input schema ({from} → {to}): review the policies that decide it");
        crate::events::publish_event(&shared.client, &reference, EventType::Warning, "ToolSchemaChanged", &note, "Discover").await;
    }
    if let Some(note) = changes.membership_note() {
        crate::events::publish_event(&shared.client, &reference, EventType::Normal, "ToolsChanged", &note, "Discover").await;
    }
}

/// Where and how to call the server; a client of its own when it has a CA bundle.
async fn target(
    client: &kube::Client,
    vault: Option<&Vault>,
    ns: &str,
    server: &McpServer,
    roots: &rustls::RootCertStore,
) -> Result<Result<(Target, Option<HttpClient>), Setup>, Error> {
    let Some(url) = server.spec.endpoint(ns) else { return Ok(Err(Setup::NoEndpoint)) };
    let mut headers = Vec::new();
    for h in &server.spec.headers {
        match header(client, vault, ns, h).await? {
            Ok(pair) => headers.push(pair),
            Err(setup) => return Ok(Err(setup)),
        }
    }
    let own_client = match server.spec.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) {
        None => None,
        Some(bundle) => match ca_bundle(client, ns, bundle).await? {
            Ok(pem) => match transport::roots_with_bundle(roots, &pem) {
                Ok(r) => Some(transport::client(Arc::new(r))),
                Err(reason) => return Ok(Err(bundle_error(bundle, reason))),
            },
            Err(setup) => return Ok(Err(setup)),
        },
    };
    let secs = u64::try_from(server.spec.timeout_seconds.max(1)).unwrap_or(30);
    let timeout = Duration::from_secs(secs).min(MAX_DISCOVERY);
    Ok(Ok((Target { url, headers, timeout, max_answer: MAX_ANSWER }, own_client)))
}

/// A header of the server, its value from a Secret or from Vault. Vault is read as the
/// operator's own role: a reference's role is the sidecar's, bound to the agent's account.
async fn header(client: &kube::Client, vault: Option<&Vault>, ns: &str, h: &HeaderSource) -> Result<Result<(HeaderName, HeaderValue), Setup>, Error> {
    let value = match (&h.secret_key_ref, &h.vault) {
        (Some(r), _) => {
            let missing = || Setup::MissingSecret { header: h.name.clone(), secret: r.name.clone(), key: r.key.clone() };
            let secret = match Api::<Secret>::namespaced(client.clone(), ns).get_opt(&r.name).await {
                Err(e) if forbidden(&e) => return Ok(Err(Setup::Forbidden { what: "Secret", name: r.name.clone() })),
                other => other?,
            };
            let Some(secret) = secret else { return Ok(Err(missing())) };
            let Some(value) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else { return Ok(Err(missing())) };
            String::from_utf8_lossy(&value.0).into_owned()
        }
        (None, Some(v)) => {
            let Some(vault) = vault else { return Ok(Err(Setup::NoVault { header: h.name.clone(), path: v.path.clone() })) };
            match vault.read(ns, &v.path, &v.key, None).await {
                Ok(value) => value,
                Err(source) => return Ok(Err(Setup::Vault { header: h.name.clone(), source })),
            }
        }
        (None, None) => return Ok(Err(Setup::InvalidHeader { header: h.name.clone() })),
    };
    Ok(transport::credential_header(&h.name, h.prefix.as_deref(), &value).ok_or_else(|| Setup::InvalidHeader { header: h.name.clone() }))
}

fn bundle_error(bundle: &CaBundleSource, reason: String) -> Setup {
    match (&bundle.secret_key_ref, &bundle.config_map_key_ref) {
        (Some(r), _) => Setup::CaBundle { what: "Secret", name: r.name.clone(), key: r.key.clone(), reason },
        (None, Some(r)) => Setup::CaBundle { what: "ConfigMap", name: r.name.clone(), key: r.key.clone(), reason },
        (None, None) => Setup::CaBundle { what: "source", name: String::new(), key: String::new(), reason },
    }
}

async fn ca_bundle(client: &kube::Client, ns: &str, bundle: &CaBundleSource) -> Result<Result<Vec<u8>, Setup>, Error> {
    let found = match (&bundle.secret_key_ref, &bundle.config_map_key_ref) {
        (Some(r), _) => match Api::<Secret>::namespaced(client.clone(), ns).get_opt(&r.name).await {
            Err(e) if forbidden(&e) => return Ok(Err(Setup::Forbidden { what: "Secret", name: r.name.clone() })),
            other => other?.and_then(|s| s.data?.get(&r.key).map(|b| b.0.clone())),
        },
        (None, Some(r)) => match Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(&r.name).await {
            Err(e) if forbidden(&e) => return Ok(Err(Setup::Forbidden { what: "ConfigMap", name: r.name.clone() })),
            other => other?.and_then(|c| c.data?.get(&r.key).map(|s| s.clone().into_bytes())),
        },
        (None, None) => None,
    };
    Ok(found.ok_or_else(|| bundle_error(bundle, "not found".into())))
}

fn forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}
