//! Tollgate's operator: the `ApprovalRequest` phase machine, policy status, and the validating
//! admission webhook that decides who may write what (DESIGN §3.3). `run` wires the parts; they
//! share `context::Shared` and never this file.

pub mod admission;
pub mod ai_reader;
pub mod certs;
pub mod config;
pub mod context;
pub mod controllers;
pub mod events;
pub mod gateway_ca;
pub mod leader;
pub mod notify;
pub mod serving;
pub mod ssa;

pub use config::Config;
pub use context::Shared;

use admission::{register, tls, validate};
use anyhow::{Context, Result};
use controllers::{agents, approvals, gateways, policies, servers, workflows};
use std::sync::Arc;

pub async fn run(config: Config) -> Result<()> {
    let client = tollgate_runtime::kube_client::infer().await.context("connecting to the Kubernetes API")?;
    let identity = tollgate_runtime::whoami(&client).await?;
    tracing::info!(identity, "operator starting");
    let gateway_ca = Arc::new(gateway_ca::GatewayCa::new(&config.namespace));
    // Until a Gateway serves (or without one), agents are sent where the chart says.
    let configured = tollgate_core::k8s::one_gateway::Target {
        url: config.gateway_url.clone(),
        ca_secret: config.gateway_ca_secret.clone().filter(|s| !s.is_empty()),
        relay_user: config.slack_relay_user.clone(),
    };
    let (serving, watch_gateways) = serving::ServingGateway::start(client.clone(), &config.namespace, configured);
    let watch_gateways = tokio::spawn(watch_gateways);
    let serving = Arc::new(serving);
    let shared = Arc::new(Shared {
        client: client.clone(),
        identity,
        serving: serving.clone(),
        metrics: Arc::default(),
        injection: config.injection(),
        namespace: config.namespace.clone(),
        notifier: notify::Notifier::new(
            client.clone(),
            config.slack_api_url.clone(),
            config.smtp_url.clone().map(|(host, port)| notify::Smtp { host, port, from: config.smtp_from.clone() }),
        ),
        gateways: tollgate_core::k8s::gateway_objects::Settings {
            image: config.gateway_image.clone().unwrap_or_else(|| config.sidecar_image.clone()),
            cluster_role: config.gateway_cluster_role.clone(),
            vault: config.vault_env(config.vault_gateway_role.clone()),
            allowed_betas: config.gateway_allowed_betas.clone(),
            tracing: config.tracing_env(),
        },
        vault: tollgate_mcp_client::vault::Vault::new(&config.vault).map_err(anyhow::Error::msg)?,
        ai_reader: ai_reader::AiReader::new(client.clone(), serving.clone(), gateway_ca.clone()),
        allow_http_providers: config.allow_http_providers,
        gateway_ca,
    });
    let ready = tollgate_runtime::admin::Readiness::default();

    let certs = tls::WebhookCerts::shared(&client, &config).await?;
    let webhook = validate::serve(config.webhook_addr, config.webhook_reuse_port, certs.server_config()?, shared.clone());
    let admin = tollgate_runtime::admin::serve(config.admin_addr, shared.metrics.clone(), ready.clone());
    // Every replica registers the same configuration (one CA, one address): idempotent.
    register::webhook_configuration(&client, &config, &certs.ca_pem).await?;
    // Not before the Gateways are listed: a pod admitted meanwhile would be sent to the
    // configured gateway though another serves, and keep that URL.
    serving.synced().await.context("listing the gateways agents are sent to")?;
    ready.set_ready();

    let identity = config.identity.clone().unwrap_or_else(|| format!("tollgate-operator-{:08x}", rand::random::<u32>()));
    let election = leader::Election {
        api: kube::Api::namespaced(client.clone(), &config.namespace),
        name: config.lease_name.clone(),
        identity,
        duration: std::time::Duration::from_secs(config.lease_duration_seconds.max(3)),
    };
    let lead = async {
        election.acquire().await?;
        let mut agents = agents::Agents::default();
        let counted = policies::Counted { agents: agents.store(), namespaced: agents.follow(), cluster: agents.follow() };
        tokio::select! {
            r = election.keep() => r,
            () = approvals::run(shared.clone()) => Ok(()),
            () = agents::run(shared.clone(), agents) => Ok(()),
            () = policies::run(shared.clone(), counted) => Ok(()),
            () = workflows::run(shared.clone()) => Ok(()),
            () = gateways::run(shared.clone()) => Ok(()),
            () = servers::run(shared.clone(), std::time::Duration::from_secs(config.discovery_interval_seconds.max(1))) => Ok(()),
        }
    };
    let result = tokio::select! {
        r = webhook => r.context("webhook server"),
        r = admin => r.context("admin server"),
        _ = watch_gateways => Err(anyhow::anyhow!("the watch of gateways ended")),
        r = lead => r.context("leading"),
        () = tollgate_runtime::shutdown_signal() => { tracing::info!("stopping"); Ok(()) }
    };
    election.release().await;
    result
}
