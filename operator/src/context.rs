//! What the webhooks and controllers share: the client, who the operator is, its settings and
//! its long-lived helpers. Built once by `run`; nothing here calls back into a controller.

use crate::{ai_reader, gateway_ca, notify};
use std::sync::Arc;

/// What every part of the operator shares.
pub struct Shared {
    pub client: kube::Client,
    /// Who the operator is, as the API server sees it; only it may move `phase`.
    pub identity: String,
    /// The Gateway agents are sent to; only its account may relay a Slack decision.
    pub serving: Arc<crate::serving::ServingGateway>,
    pub metrics: Arc<tollgate_runtime::admin::Metrics>,
    pub injection: tollgate_core::k8s::inject::Settings,
    /// The operator's namespace, the only one it runs gateways in.
    pub namespace: String,
    pub gateways: tollgate_core::k8s::gateway_objects::Settings,
    pub notifier: Arc<notify::Notifier>,
    pub ai_reader: Arc<ai_reader::AiReader>,
    /// The operator's own Vault client (discovery of servers whose headers are kept there).
    pub vault: Option<Arc<tollgate_mcp_client::vault::Vault>>,
    /// Whether a `ModelProvider.baseURL` may be plain `http`.
    pub allow_http_providers: bool,
    /// The CA of the gateway agents are sent to (`serving`), when it serves TLS.
    pub gateway_ca: Arc<gateway_ca::GatewayCa>,
}
