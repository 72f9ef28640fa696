//! Certificates the operator issues itself, each from a CA of its own: the webhook's (the API
//! server trusts it through the webhook configurations' `caBundle`) and each `Gateway`'s (agents
//! trust it through what injection gives their pods).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::net::IpAddr;

/// A CA, and a serving certificate and key it signed (PEM).
#[derive(Debug, Clone)]
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A new CA named `ca_name` and a certificate for `names` and `ips` signed by it. The CA's key is
/// thrown away: nothing else is ever signed by it, so a leaked Secret exposes one server's key
/// and nothing that could mint another.
pub fn issue(ca_name: &str, serving_name: &str, names: &[String], ips: &[IpAddr]) -> Result<Issued, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, serving_name);
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issued_certificate_verifies_against_its_ca_for_its_names_only() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let issued = issue("test-ca", "test", &["main-gateway.tollgate-system.svc".to_owned()], &[]).expect("issued");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(issued.ca_pem.as_bytes()).expect("CA PEM")).expect("CA added");
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into()).build().expect("verifier");
        let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert PEM");
        let at = |name: &str| verifier.verify_server_cert(&cert, &[], &ServerName::try_from(name.to_owned()).expect("name"), &[], UnixTime::now());
        assert!(at("main-gateway.tollgate-system.svc").is_ok());
        assert!(at("other-gateway.tollgate-system.svc").is_err(), "a name it was not issued for");
        // Another issue's CA does not vouch for it.
        let other = issue("test-ca", "test", &["main-gateway.tollgate-system.svc".to_owned()], &[]).expect("issued");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(other.ca_pem.as_bytes()).expect("CA PEM")).expect("CA added");
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into()).build().expect("verifier");
        let name = ServerName::try_from("main-gateway.tollgate-system.svc".to_owned()).expect("name");
        assert!(verifier.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).is_err());
    }
}
