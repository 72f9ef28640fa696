//! Providers' credentials, read from the Secret a `ModelProvider` names (or from Vault, under
//! the gateway's own service-account token) at use time and kept briefly, so a rotated key
//! applies without a restart. The value never leaves this module but
//! in the header sent to the provider; errors name the Secret, never its content.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tollgate_api::CredentialSource;

const TTL: Duration = Duration::from_secs(10);

/// `(namespace, secret, key)`.
type SecretKey = (String, String, String);

#[derive(Default)]
pub struct ProviderCredentials {
    cache: Mutex<HashMap<SecretKey, (Instant, String)>>,
    vault: Option<std::sync::Arc<tollgate_mcp_client::vault::Vault>>,
}

impl ProviderCredentials {
    pub fn new(vault: Option<std::sync::Arc<tollgate_mcp_client::vault::Vault>>) -> Self {
        ProviderCredentials { cache: Mutex::default(), vault }
    }

    /// The credential of a provider of `namespace`; None when it names none.
    pub async fn get(&self, client: &kube::Client, namespace: &str, source: Option<&CredentialSource>) -> Result<Option<String>, String> {
        let Some(source) = source else { return Ok(None) };
        let Some(r) = &source.secret_key_ref else {
            let Some(v) = &source.vault else { return Err("the credentials name neither a Secret nor Vault".into()) };
            let vault = self
                .vault
                .as_ref()
                .ok_or_else(|| format!("the credential is in Vault at {}, but this gateway has no Vault address (the chart's vault.address)", v.path))?;
            return vault.read(namespace, &v.path, &v.key, v.role.as_deref()).await.map(|value| Some(value.trim().to_owned())).map_err(|e| e.to_string());
        };
        let key = (namespace.to_owned(), r.name.clone(), r.key.clone());
        if let Some((at, value)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key)
            && at.elapsed() < TTL
        {
            return Ok(Some(value.clone()));
        }
        let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(&r.name).await.map_err(|e| format!("reading Secret {}: {e}", r.name))?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&r.key).map(|b| String::from_utf8_lossy(&b.0).trim().to_owned()))
            .ok_or_else(|| format!("Secret {namespace}/{} has no key {}", r.name, r.key))?;
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (Instant::now(), value.clone()));
        Ok(Some(value))
    }
}
