//! Each agent's gateway key: minted once into a Secret the agent owns (so it goes with the agent),
//! minted again when the agent's rotation annotation changes. Status keeps only a prefix and a
//! hash, which is what the gateway checks keys against; the key itself is only in the Secret,
//! from which injection gives it to the agent's app containers.

use crate::ssa;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use tollgate_api::{AgentCredentials, ManagedAgent};
use tollgate_core::model::keys;

pub async fn ensure(client: &kube::Client, agent: &ManagedAgent) -> Result<AgentCredentials, kube::Error> {
    let ns = agent.namespace().unwrap_or_default();
    let name = keys::secret_name(&agent.name_any());
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let existing = secrets.get_opt(&name).await?;
    let current = existing.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(keys::SECRET_KEY)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let minted_for = existing.as_ref().and_then(|s| s.annotations().get(keys::MINTED_FOR_ANNOTATION).cloned());
    let rotation = agent.annotations().get(keys::ROTATE_ANNOTATION).cloned();
    let key = match current {
        Some(k) if !keys::must_mint(Some(&k), minted_for.as_deref(), rotation.as_deref()) => k,
        _ => {
            let key = keys::new_key(&rand::random());
            let owner = OwnerReference {
                api_version: ManagedAgent::api_version(&()).into_owned(),
                kind: ManagedAgent::kind(&()).into_owned(),
                name: agent.name_any(),
                uid: agent.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            };
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    owner_references: Some(vec![owner]),
                    annotations: Some(BTreeMap::from([(keys::MINTED_FOR_ANNOTATION.to_owned(), rotation.clone().unwrap_or_default())])),
                    labels: Some(BTreeMap::from([(tollgate_core::k8s::inject::AGENT_LABEL.to_owned(), agent.name_any())])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(keys::SECRET_KEY.to_owned(), ByteString(key.clone().into_bytes()))])),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            secrets.patch(&name, &ssa::params(), &ssa::body(&secret)).await?;
            tracing::info!(secret = name, prefix = keys::prefix(&key), rotation = rotation.as_deref().unwrap_or(""), "gateway key minted");
            key
        }
    };
    Ok(AgentCredentials { secret_name: name, key_prefix: keys::prefix(&key), key_hash: keys::hash(&key) })
}
