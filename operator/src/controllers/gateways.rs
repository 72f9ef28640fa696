//! The `Gateway` controller (DESIGN §3.4): each Gateway in the operator's namespace becomes its
//! ServiceAccount, Service, Deployment and (SQLite) ledger claim, built by
//! `tollgate_core::k8s::gateway_objects`; its service account is a subject of the gateways'
//! ClusterRoleBinding while it exists; its status says where agents reach it and how many
//! replicas are ready.
//!
//! Only the operator's namespace: a gateway's service account reads Secrets in every namespace
//! (the providers' credentials), so a Gateway elsewhere would hand that to whoever may create
//! pods there. Such a Gateway is told why, in its status, and gets nothing.
//!
//! One Gateway serves (`tollgate_core::k8s::one_gateway`): another that would run replicas is
//! told which serves, runs none (a Deployment it had is scaled to zero) and is not bound to the
//! gateway role; when the serving one goes or scales to zero, every Gateway is reconciled again
//! and the next serves.

use super::lean::Listeners;
use super::{condition, upsert_condition};
use crate::context::Shared;
use crate::serving::candidate;
use crate::ssa;
use base64::Engine;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PartialObjectMeta, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tollgate_api::{Gateway, GatewayStatus};
use tollgate_core::audit::checkpoint;
use tollgate_core::k8s::conditions;
use tollgate_core::k8s::gateway_objects::{self, GATEWAY_LABEL, Owner};
use tollgate_core::k8s::one_gateway::{self, Candidate};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(shared: Arc<Shared>) {
    let api = Api::<Gateway>::all(shared.client.clone());
    // One watch and one cache of gateways for the controller and the cluster binding alike.
    let changed = Arc::new(tokio::sync::Notify::new());
    let controller = super::lean::controller_heard(api, super::lean::config(), reflector::store(), Listeners::default().with_notice(changed.clone()));
    // Every Gateway again when the choice of the one that serves may have changed: the next in
    // line takes over, and one that a scale-up made serve stops.
    let (again_tx, again_rx) = tokio::sync::mpsc::channel::<()>(1);
    let binding = {
        let (shared, gateways) = (shared.clone(), controller.store());
        async move {
            let (mut choice, mut written) = (None, true);
            loop {
                // A binding that could not be written is tried again at the next change, or
                // within 5 s: a refused or deleted gateway's account must lose the role.
                if written {
                    changed.notified().await;
                } else {
                    let _ = tokio::time::timeout(Duration::from_secs(5), changed.notified()).await;
                }
                let (now, ok) = cluster_binding(&shared, &gateways).await;
                written = ok;
                if choice.as_ref() != Some(&now) {
                    choice = Some(now);
                    let _ = again_tx.try_send(());
                }
            }
        }
    };
    let again = futures::stream::unfold(again_rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) });
    // Owner references are all `owns` reads: a Deployment's metadata is all that is watched.
    let deployments = Api::<PartialObjectMeta<Deployment>>::namespaced(shared.client.clone(), &shared.namespace);
    let controller = controller
        .owns(deployments, super::lean::config().labels(GATEWAY_LABEL))
        .reconcile_all_on(again)
        .run(reconcile, error_policy, shared)
        .for_each(|_| futures::future::ready(()));
    futures::join!(binding, controller);
}

fn runs_here(shared: &Shared, g: &Gateway) -> bool {
    g.namespace().as_deref() == Some(shared.namespace.as_str()) && gateway_objects::name_problem(&g.name_any()).is_none()
}

/// What the choice of the serving Gateway is made from, and the choice: when it changes, every
/// Gateway is reconciled again.
type Choice = (Option<String>, Vec<(String, bool, bool)>);

/// The gateways' service accounts, exactly those of the Gateways that exist and run, and none
/// another serves instead of: a Gateway deleted or refused loses the Secrets its account could
/// read with the next event. Returns the choice, and whether the binding was written.
async fn cluster_binding(shared: &Shared, gateways: &Store<Gateway>) -> (Choice, bool) {
    let all: Vec<Arc<Gateway>> = gateways.state().into_iter().filter(|g| runs_here(shared, g)).collect();
    let mut candidates: Vec<Candidate<'_>> = all.iter().map(|g| candidate(g)).collect();
    candidates.sort_by_key(|c| c.name);
    let running: Vec<(String, String)> = candidates
        .iter()
        .filter(|c| !c.deleting && one_gateway::served_instead(c.name, &candidates).is_none())
        .map(|c| (shared.namespace.clone(), c.name.to_owned()))
        .collect();
    let wanted = gateway_objects::cluster_binding(running.iter().map(|(ns, n)| (ns.as_str(), n.as_str())), &shared.gateways.cluster_role);
    let written =
        Api::<ClusterRoleBinding>::all(shared.client.clone()).patch(gateway_objects::GATEWAYS_CLUSTER_BINDING, &ssa::params(), &ssa::body(&wanted)).await;
    match &written {
        Ok(_) => tracing::debug!(gateways = running.len(), "gateways' cluster role binding in step"),
        Err(e) => tracing::warn!(error = %e, "could not keep the gateways' cluster role binding; trying again"),
    }
    let inputs = candidates.iter().map(|c| (c.name.to_owned(), c.replicas > 0 && !c.deleting, c.serving)).collect();
    ((one_gateway::serving(&candidates).map(str::to_owned), inputs), written.is_ok())
}

fn error_policy(_: Arc<Gateway>, error: &Error, shared: Arc<Shared>) -> Action {
    shared.metrics.reconcile("gateway", false);
    tracing::warn!(%error, "gateway reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(gateway = %g.name_any(), namespace = g.namespace().unwrap_or_default()))]
async fn reconcile(g: Arc<Gateway>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = g.namespace().unwrap_or_default();
    let name = g.name_any();
    let generation = g.meta().generation;
    let old = g.status.clone().unwrap_or_default();
    let mut status = GatewayStatus { observed_generation: generation, ..old.clone() };
    let refusal = refusal(&g, &shared).await?;
    let outcome = match refusal {
        Some((reason, message)) => {
            status.url = None;
            status.ready_replicas = None;
            let was = conditions::reason(&old.conditions, "Ready").map(str::to_owned);
            upsert_condition(&mut status.conditions, condition("Ready", false, reason, &message, generation, Timestamp::now()));
            match reason {
                one_gateway::REFUSED | one_gateway::DELETING => {
                    if was.as_deref() != Some(reason) {
                        tracing::warn!(%message, "gateway runs no replicas");
                    }
                    // Looked at again now and then, besides every change of the choice.
                    stop_replicas(&g, &shared).await.map(|()| Action::requeue(Duration::from_secs(60))).map_err(Error::from)
                }
                _ => Ok(Action::await_change()),
            }
        }
        None => apply(&g, &shared, &mut status).await,
    };
    if status != old {
        // A field the status no longer has is written as null: a merge patch leaves out what
        // is merely absent (a Gateway that stops serving keeps no URL).
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        for (field, gone) in [("url", status.url.is_none()), ("readyReplicas", status.ready_replicas.is_none())] {
            if gone {
                body[field] = serde_json::Value::Null;
            }
        }
        Api::<Gateway>::namespaced(shared.client.clone(), &ns)
            .patch_status(&name, &ssa::write_params(), &Patch::Merge(serde_json::json!({"status": body})))
            .await?;
    }
    shared.metrics.reconcile("gateway", outcome.is_ok());
    outcome
}

/// Why `g` gets nothing or runs no replicas, if it does not serve: a Gateway elsewhere, one
/// whose objects' names would not be valid, one being deleted, one another serves instead of.
async fn refusal(g: &Gateway, shared: &Shared) -> Result<Option<(&'static str, String)>, kube::Error> {
    let name = g.name_any();
    if g.namespace().as_deref() != Some(shared.namespace.as_str()) {
        let message = format!(
            "gateways run only in {}, the operator's namespace: a gateway's service account reads model providers' Secrets in every namespace",
            shared.namespace
        );
        return Ok(Some(("OutsideTollgateNamespace", message)));
    }
    if let Some(problem) = gateway_objects::name_problem(&name) {
        return Ok(Some(("InvalidName", problem)));
    }
    if g.metadata.deletion_timestamp.is_some() {
        return Ok(Some((one_gateway::DELETING, "the Gateway is being deleted: it runs no replicas, and the next Gateway in line serves".to_owned())));
    }
    Ok(served_instead(g, shared).await?.map(|other| (one_gateway::REFUSED, one_gateway::refusal(&name, &other))))
}

/// The Gateway that serves instead of `g`, read from the API server (not the cache: two
/// Gateways made at once must each see the other).
async fn served_instead(g: &Gateway, shared: &Shared) -> Result<Option<String>, kube::Error> {
    let all = Api::<Gateway>::namespaced(shared.client.clone(), &shared.namespace).list(&Default::default()).await?;
    let candidates: Vec<Candidate<'_>> = all.items.iter().filter(|o| gateway_objects::name_problem(&o.name_any()).is_none()).map(candidate).collect();
    Ok(one_gateway::served_instead(&g.name_any(), &candidates).map(str::to_owned))
}

/// A refused or deleting Gateway's Deployment, made while it served, is scaled to zero: its
/// ledger stops counting. One never made is not made; one gone meanwhile stays gone (a patch,
/// not an apply, which would make it again).
async fn stop_replicas(g: &Gateway, shared: &Shared) -> Result<(), kube::Error> {
    let object_name = gateway_objects::object_name(&g.name_any());
    let api = Api::<Deployment>::namespaced(shared.client.clone(), &shared.namespace);
    let Some(running) = api.get_opt(&object_name).await? else { return Ok(()) };
    if running.spec.and_then(|s| s.replicas) == Some(0) {
        return Ok(());
    }
    match api.patch(&object_name, &ssa::write_params(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}))).await {
        Ok(_) => tracing::info!(deployment = object_name, "deployment of a gateway that does not serve scaled to zero"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The public key of the gateway's audit signing key, made (once) if it has none: the private
/// key stays in its Secret, which only the operator and the gateway read.
async fn audit_key(client: &kube::Client, owner: Owner<'_>) -> Result<String, kube::Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), owner.namespace);
    let name = gateway_objects::audit_key_name(owner.name);
    let invalid = |e: String| kube::Error::Service(format!("Secret {name}: {e}").into());
    let stored = secrets.get_opt(&name).await?.and_then(|s| s.data).and_then(|d| d.get(gateway_objects::AUDIT_KEY).map(|b| b.0.clone()));
    let encoded = match stored {
        Some(bytes) => String::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?,
        None => {
            let key = checkpoint::generate_key().map_err(|e| invalid(e.to_string()))?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(key);
            match secrets.create(&kube::api::PostParams::default(), &gateway_objects::audit_key_secret(owner, &encoded)).await {
                Ok(_) => encoded,
                // Another replica made it first: theirs is the key.
                Err(kube::Error::Api(e)) if e.code == 409 => return Box::pin(audit_key(client, owner)).await,
                Err(e) => return Err(e),
            }
        }
    };
    let key = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|e| invalid(e.to_string()))?;
    checkpoint::public_key(&key).map_err(|e| invalid(e.to_string()))
}

/// Why the Gateway's TLS Secret cannot serve yet, if it cannot: the one the operator issues is
/// made (once; the first writer wins), one issued elsewhere must exist with its three keys.
async fn tls_secret(client: &kube::Client, owner: Owner<'_>, spec: &tollgate_api::GatewaySpec) -> Result<Option<String>, kube::Error> {
    let Some(name) = gateway_objects::tls_secret_name(owner.name, spec) else { return Ok(None) };
    let secrets = Api::<Secret>::namespaced(client.clone(), owner.namespace);
    let stored = secrets.get_opt(&name).await?;
    let missing = |s: &Secret| -> Vec<&str> {
        let data = s.data.as_ref();
        [gateway_objects::TLS_CERT, gateway_objects::TLS_KEY, gateway_objects::TLS_CA]
            .into_iter()
            .filter(|k| !data.is_some_and(|d| d.contains_key(*k)))
            .collect()
    };
    match stored {
        Some(s) if missing(&s).is_empty() => Ok(None),
        Some(s) => Ok(Some(format!("Secret {name} lacks {}: the gateway cannot serve TLS without them", missing(&s).join(", ")))),
        None if !gateway_objects::issues_tls(spec) => {
            Ok(Some(format!("Secret {name} (spec.tls.secretName) does not exist yet: the gateway serves nothing until it does")))
        }
        None => {
            let names = gateway_objects::serving_names(owner.name, owner.namespace);
            let issued = crate::certs::issue(&format!("{}-ca", gateway_objects::object_name(owner.name)), &names[0], &names, &[])
                .map_err(|e| kube::Error::Service(format!("issuing the gateway's certificate: {e}").into()))?;
            let secret = gateway_objects::tls_secret(owner, &name, &issued.ca_pem, &issued.cert_pem, &issued.key_pem);
            match secrets.create(&kube::api::PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = name, "gateway certificate issued");
                    Ok(None)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

async fn apply(g: &Gateway, shared: &Shared, status: &mut GatewayStatus) -> Result<Action, Error> {
    let ns = &shared.namespace;
    let name = g.name_any();
    let generation = g.meta().generation;
    let owner = Owner { name: &name, namespace: ns, uid: g.metadata.uid.as_deref().unwrap_or_default() };
    let objects = gateway_objects::objects(owner, &g.spec, &shared.gateways);
    let object_name = gateway_objects::object_name(&name);
    let client = &shared.client;
    let written = async {
        status.audit_public_key = Some(audit_key(client, owner).await?);
        let tls_problem = tls_secret(client, owner, &g.spec).await?;
        Api::<ServiceAccount>::namespaced(client.clone(), ns).patch(&object_name, &ssa::params(), &ssa::body(&objects.service_account)).await?;
        if let Some(claim) = &objects.claim {
            // Created once: a bound claim's spec is immutable but for its size.
            let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
            let claim_name = gateway_objects::claim_name(&name);
            if claims.get_opt(&claim_name).await?.is_none() {
                claims.patch(&claim_name, &ssa::params(), &ssa::body(claim)).await?;
            }
        }
        Api::<Service>::namespaced(client.clone(), ns).patch(&object_name, &ssa::params(), &ssa::body(&objects.service)).await?;
        let deployment = Api::<Deployment>::namespaced(client.clone(), ns).patch(&object_name, &ssa::params(), &ssa::body(&objects.deployment)).await?;
        Ok::<_, kube::Error>((deployment, tls_problem))
    }
    .await;
    let (deployment, tls_problem) = match written {
        Ok(d) => d,
        Err(e) => {
            let message = format!("could not write the gateway's objects: {e}");
            upsert_condition(&mut status.conditions, condition("Ready", false, "ApplyFailed", &message, generation, Timestamp::now()));
            return Err(e.into());
        }
    };
    let desired = gateway_objects::replicas(&g.spec);
    let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let (ok, reason, message) = gateway_objects::readiness(desired, ready);
    status.url = Some(gateway_objects::url(&name, ns, &g.spec));
    status.ready_replicas = Some(ready);
    if let Some(problem) = tls_problem {
        upsert_condition(&mut status.conditions, condition("Ready", false, "TLSSecretUnusable", &problem, generation, Timestamp::now()));
        // A Secret is not watched: it is looked for again soon.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    upsert_condition(&mut status.conditions, condition("Ready", ok, reason, &message, generation, Timestamp::now()));
    Ok(Action::requeue(Duration::from_secs(600)))
}
