//! The audit chain's signed checkpoints (`tollgate_core::audit::checkpoint`), written where the
//! ledger's database writer cannot rewrite them: a ConfigMap per checkpoint in the gateway's
//! namespace, which the gateway may create and read but not change or delete. Every
//! `TOLLGATE_AUDIT_CHECKPOINT_SECONDS`, when the chain has grown, its head is signed.

use crate::ledger::Ledger;
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_core::audit::checkpoint::{self, Checkpoint};

/// The label every checkpoint's ConfigMap carries, with the signing key's id: gateways with
/// other keys (other ledgers) checkpoint in the same namespace without mixing.
pub const LABEL: &str = "tollgate.dev/audit-checkpoint";
const KEY: &str = "checkpoint";

/// The gateway's signing key, and where its checkpoints go.
pub struct Signer {
    key: Vec<u8>,
    /// Its public key, base64: what a reader trusts (the `Gateway`'s status shows it).
    pub public: String,
    /// A short id of the public key, in the checkpoints' names and label.
    pub id: String,
    pub namespace: String,
}

impl Signer {
    /// From the base64 PKCS#8 key the gateway is given; none without one.
    pub fn new(key: Option<&str>, namespace: &str) -> Result<Option<Signer>, String> {
        let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else { return Ok(None) };
        let key = base64::engine::general_purpose::STANDARD.decode(key).map_err(|e| format!("the audit signing key is not base64: {e}"))?;
        let public = checkpoint::public_key(&key).map_err(|e| e.to_string())?;
        let id = checkpoint::key_id(&public);
        Ok(Some(Signer { key, public, id, namespace: namespace.to_owned() }))
    }
}

/// Signs the chain's head whenever it has grown, every `every`, until the process ends.
pub async fn run(signer: Option<Arc<Signer>>, client: &kube::Client, ledger: &Ledger, every: Duration) {
    let Some(signer) = signer else { return std::future::pending().await };
    let mut last = 0;
    loop {
        tokio::time::sleep(every).await;
        match checkpoint(client, ledger, &signer, last).await {
            Ok(seq) => last = seq,
            Err(e) => tracing::warn!(error = %e, "could not write an audit checkpoint; trying again"),
        }
    }
}

/// One checkpoint if the chain grew past `last`; the head it stands at.
async fn checkpoint(client: &kube::Client, ledger: &Ledger, signer: &Signer, last: i64) -> Result<i64, String> {
    let (seq, hash) = ledger.audit_head().await.map_err(|e| e.to_string())?;
    if seq <= last {
        return Ok(last);
    }
    let time = jiff::Timestamp::now().to_string();
    let cp = checkpoint::sign(&signer.key, seq, &hash, &time).map_err(|e| e.to_string())?;
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("audit-checkpoint-{}-{seq:012}", signer.id)),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), signer.id.clone())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), serde_json::to_string(&cp).map_err(|e| e.to_string())?)])),
        ..Default::default()
    };
    match Api::<ConfigMap>::namespaced(client.clone(), &signer.namespace).create(&PostParams::default(), &map).await {
        // Another replica signed this head first: it is recorded either way.
        Ok(_) => Ok(seq),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(seq, "another replica wrote this audit checkpoint");
            Ok(seq)
        }
        Err(e) => Err(format!("creating ConfigMap {}/audit-checkpoint-{}-{seq:012}: {e}", signer.namespace, signer.id)),
    }
}

/// Every checkpoint `signer`'s key recorded. One that does not parse is an error: a reader must
/// not lose a checkpoint to a typo someone made in it.
pub async fn load(client: &kube::Client, signer: &Signer) -> Result<Vec<Checkpoint>, String> {
    let selector = format!("{LABEL}={}", signer.id);
    let maps =
        Api::<ConfigMap>::namespaced(client.clone(), &signer.namespace).list(&ListParams::default().labels(&selector)).await.map_err(|e| e.to_string())?;
    maps.items
        .iter()
        .map(|m| {
            let name = m.metadata.name.clone().unwrap_or_default();
            let text = m.data.as_ref().and_then(|d| d.get(KEY)).ok_or_else(|| format!("ConfigMap {name} holds no {KEY}"))?;
            serde_json::from_str(text).map_err(|e| format!("ConfigMap {name}: {e}"))
        })
        .collect()
}
