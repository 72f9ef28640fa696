//! The webhook's self-managed CA and serving certificate, shared by every replica through one
//! Secret (the first replica makes it; the others read it), so the CA bundle in the
//! ValidatingWebhookConfiguration verifies whichever replica a call reaches.

use crate::config::Config;
use anyhow::{Context, Result};
use std::sync::Arc;

pub struct WebhookCerts {
    pub ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

impl WebhookCerts {
    /// The certificates in the Secret, made and stored there first if there are none yet. Two
    /// replicas starting together both try to create it; the API server keeps one, and the other
    /// reads that one.
    pub async fn shared(client: &kube::Client, config: &Config) -> Result<Self> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, ObjectMeta, PostParams};
        let api: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
        let mut conflicts = 0;
        loop {
            if let Some(secret) = api.get_opt(&config.tls_secret).await.context("reading the webhook TLS Secret")? {
                let data = secret.data.unwrap_or_default();
                let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
                if let (Some(ca_pem), Some(cert_pem), Some(key_pem)) = (text(CA_KEY), text(CERT_KEY), text(KEY_KEY)) {
                    tracing::info!(secret = config.tls_secret, "webhook certificates read from the shared Secret");
                    return Ok(WebhookCerts { ca_pem, cert_pem, key_pem });
                }
                if !config.tls_secret_external {
                    anyhow::bail!("Secret {}/{} lacks {CA_KEY}, {CERT_KEY} or {KEY_KEY}", config.namespace, config.tls_secret);
                }
            }
            if config.tls_secret_external {
                // Issued by someone else (cert-manager): it comes, or this replica never gets ready.
                tracing::info!(secret = config.tls_secret, "waiting for the webhook TLS Secret to be issued ({CA_KEY}, {CERT_KEY}, {KEY_KEY})");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            let made = WebhookCerts::generate(config)?;
            let data = [(CA_KEY, &made.ca_pem), (CERT_KEY, &made.cert_pem), (KEY_KEY, &made.key_pem)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect();
            let secret = Secret {
                metadata: ObjectMeta { name: Some(config.tls_secret.clone()), ..Default::default() },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = config.tls_secret, "webhook certificates made and stored");
                    return Ok(made);
                }
                Err(kube::Error::Api(e)) if e.code == 409 && conflicts < 5 => conflicts += 1,
                Err(kube::Error::Api(e)) if e.code == 409 => anyhow::bail!("the webhook TLS Secret kept changing while it was being read"),
                Err(e) => return Err(e).context("storing the webhook TLS Secret"),
            }
        }
    }

    pub fn generate(config: &Config) -> Result<Self> {
        let mut names = vec!["localhost".to_owned()];
        if let Some((ns, name)) = config.webhook_service.split_once('/') {
            names.push(format!("{name}.{ns}.svc"));
            names.push(format!("{name}.{ns}.svc.cluster.local"));
        }
        let mut ips = vec![std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)];
        if let Some(host) = config.webhook_url.as_deref().and_then(host_of) {
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(host),
            }
        }
        let issued = crate::certs::issue("tollgate-webhook-ca", "tollgate-webhook", &names, &ips).context("issuing the webhook's certificate")?;
        Ok(WebhookCerts { ca_pem: issued.ca_pem, cert_pem: issued.cert_pem, key_pem: issued.key_pem })
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).context("serving cert PEM")?];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("serving key PEM")?;
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    Some(host.trim_start_matches('[').trim_end_matches(']').to_owned())
}
