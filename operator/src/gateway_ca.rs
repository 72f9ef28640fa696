//! The CA of the gateway agents call (the `ca.crt` of its TLS Secret: the serving Gateway's, else
//! `TOLLGATE_GATEWAY_CA_SECRET`), read where it is needed: injection hands it to every agent pod, the AI first reader
//! trusts it. Read by name and kept briefly, so a pod burst is one read; a Secret that is not
//! there yet (the Gateway's certificate not issued) is an error the caller fails closed on.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEEP: Duration = Duration::from_secs(30);

pub struct GatewayCa {
    namespace: String,
    /// The Secret last read and its CA, by name: the serving Gateway's changes seldom.
    cached: Mutex<Option<(String, Instant, String)>>,
}

impl GatewayCa {
    pub fn new(namespace: &str) -> GatewayCa {
        GatewayCa { namespace: namespace.to_owned(), cached: Mutex::default() }
    }

    /// The PEM of the CA in `secret` (the `ca.crt` of the TLS Secret of the Gateway agents are
    /// sent to, `crate::serving`); `None` when that gateway is not served over TLS.
    pub async fn pem(&self, client: &kube::Client, secret: Option<&str>) -> Result<Option<String>, String> {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else { return Ok(None) };
        if let Some((name, at, pem)) = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && name == secret
            && at.elapsed() < KEEP
        {
            return Ok(Some(pem.clone()));
        }
        let where_ = format!("Secret {}/{secret}", self.namespace);
        let stored = Api::<Secret>::namespaced(client.clone(), &self.namespace).get_opt(secret).await.map_err(|e| format!("reading {where_}: {e}"))?;
        let pem = stored
            .and_then(|s| s.data)
            .and_then(|d| d.get(tollgate_core::k8s::gateway_objects::TLS_CA).map(|b| String::from_utf8_lossy(&b.0).into_owned()))
            .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"))
            .ok_or_else(|| format!("{where_} holds no CA certificate (ca.crt) yet: the gateway's certificate is not issued"))?;
        *self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((secret.to_owned(), Instant::now(), pem.clone()));
        Ok(Some(pem))
    }
}
