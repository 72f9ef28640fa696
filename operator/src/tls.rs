//! The webhook's self-managed CA and serving certificate, made at start-up and never written to
//! disk: the CA bundle goes into the ValidatingWebhookConfiguration the operator owns.

use crate::Config;
use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::sync::Arc;

pub struct WebhookCerts {
    pub ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl WebhookCerts {
    pub fn generate(config: &Config) -> Result<Self> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        ca.distinguished_name.push(DnType::CommonName, "tollgate-webhook-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names = vec!["localhost".to_owned()];
        if let Some((ns, name)) = config.webhook_service.split_once('/') {
            names.push(format!("{name}.{ns}.svc"));
            names.push(format!("{name}.{ns}.svc.cluster.local"));
        }
        let key = KeyPair::generate().context("serving key")?;
        let mut params = CertificateParams::new(names).context("serving params")?;
        params.distinguished_name.push(DnType::CommonName, "tollgate-webhook");
        params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        if let Some(host) = config.webhook_url.as_deref().and_then(host_of) {
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params.subject_alt_names.push(SanType::DnsName(host.try_into().context("webhook host")?)),
            }
        }
        let cert = params.signed_by(&key, &issuer).context("serving certificate")?;
        Ok(WebhookCerts { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
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
