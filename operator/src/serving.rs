//! The Gateway agents are sent to (`tollgate_core::k8s::one_gateway::target`): the one the
//! operator was configured with (the chart's), or, when that Gateway has stepped aside for
//! another, the one that serves the cluster. Injection gives its URL and CA to agent pods, the
//! AI first reader calls the model through it, and only its account may relay a Slack decision.
//!
//! Every replica answers webhooks, and only the leader runs the gateways controller, so each
//! replica watches the Gateways of its namespace itself (a handful of objects) and works the
//! choice out when asked, by the controller's own rule.

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tollgate_api::Gateway;
use tollgate_core::k8s::conditions;
use tollgate_core::k8s::gateway_objects;
use tollgate_core::k8s::one_gateway::{self, Candidate, Target};

pub struct ServingGateway {
    namespace: String,
    configured: Target,
    gateways: Store<Gateway>,
}

/// What the rule reads of a Gateway (the gateways controller reads the same).
pub fn candidate(g: &Gateway) -> Candidate<'_> {
    let status = g.status.as_ref();
    let ready_reason = status.and_then(|s| conditions::reason(&s.conditions, "Ready"));
    Candidate {
        name: g.metadata.name.as_deref().unwrap_or_default(),
        created: g.metadata.creation_timestamp.as_ref().map(|t| t.0),
        replicas: gateway_objects::replicas(&g.spec),
        deleting: g.metadata.deletion_timestamp.is_some(),
        serving: one_gateway::serves_by_status(status.is_some_and(|s| s.url.is_some()), ready_reason),
    }
}

impl ServingGateway {
    /// The choice over the Gateways of `namespace`, and the watch that keeps it current (to run
    /// for as long as the operator does).
    pub fn start(client: kube::Client, namespace: &str, configured: Target) -> (ServingGateway, impl std::future::Future<Output = ()> + use<>) {
        let (gateways, writer) = reflector::store();
        let api = Api::<Gateway>::namespaced(client, namespace);
        let watch = watcher(api, crate::controllers::lean::config()).backoff(crate::controllers::lean::backoff()).reflect(writer).for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching gateways for the one agents are sent to");
            }
            futures::future::ready(())
        });
        (ServingGateway { namespace: namespace.to_owned(), configured, gateways }, watch)
    }

    /// Once the Gateways have been listed (until then, [`ServingGateway::target`] knows none).
    pub async fn synced(&self) -> Result<(), reflector::store::WriterDropped> {
        self.gateways.wait_until_ready().await
    }

    /// Where agents are sent now.
    pub fn target(&self) -> Target {
        let all: Vec<_> = self.gateways.state().into_iter().filter(|g| gateway_objects::name_problem(&g.name_any()).is_none()).collect();
        let candidates: Vec<Candidate<'_>> = all.iter().map(|g| candidate(g)).collect();
        let serving = one_gateway::serving(&candidates).and_then(|name| {
            all.iter().find(|g| g.metadata.name.as_deref() == Some(name)).map(|g| (name, one_gateway::target_of(name, &self.namespace, &g.spec)))
        });
        let configured_is = self.configured.url.as_deref().and_then(|url| one_gateway::gateway_of_url(url, &self.namespace));
        one_gateway::target(&self.configured, configured_is.as_deref(), serving.as_ref().map(|(n, t)| (*n, t))).clone()
    }
}
