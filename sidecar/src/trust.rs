//! The gateway's CA (DESIGN §3.6): the only root the sidecar ships audit batches under, and the
//! files the app containers' SDKs trust the gateway by. Written before the sidecar turns ready,
//! and a native sidecar is ready before the app containers start, so they never look too early.

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use tollgate_core::k8s::inject::{TRUST_BUNDLE, TRUST_GATEWAY_CA};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TOLLGATE_GATEWAY_CA is not a PEM CA certificate: {0}")]
    Unusable(String),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The roots that vouch for the gateway: its CA alone.
pub fn gateway_roots(ca_pem: &str) -> Result<rustls::RootCertStore, Error> {
    tollgate_mcp_client::transport::roots_with_bundle(&rustls::RootCertStore::empty(), ca_pem.as_bytes()).map_err(Error::Unusable)
}

/// Writes `gateway-ca.crt` (the CA) and `ca-bundle.crt` (the CA, then the platform's roots, so
/// that `SSL_CERT_FILE` pointing at it still reaches the rest of the internet) into `dir`.
pub fn write(dir: &Path, ca_pem: &str) -> Result<(), Error> {
    let ca: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(ca_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| Error::Unusable(e.to_string()))?;
    let ca_text: String = ca.iter().map(|c| pem(c)).collect();
    let mut bundle = ca_text.clone();
    for c in rustls_native_certs::load_native_certs().certs {
        bundle.push_str(&pem(&c));
    }
    put(&dir.join(TRUST_GATEWAY_CA), &ca_text)?;
    put(&dir.join(TRUST_BUNDLE), &bundle)
}

/// Replaces `path` whole: a reader sees the old file or the new one.
fn put(path: &Path, text: &str) -> Result<(), Error> {
    let err = |source| Error::Write { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_certificate_is_refused_saying_so() {
        assert!(matches!(gateway_roots("not pem"), Err(Error::Unusable(_))));
        assert!(matches!(write(Path::new("/nonexistent"), ""), Err(Error::Write { .. }) | Err(Error::Unusable(_))));
    }

    #[test]
    fn the_files_hold_the_ca_first_and_round_trip_as_pem() {
        let dir = std::env::temp_dir().join(format!("tollgate-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // Long enough for several PEM lines; write() re-encodes, never parses X.509.
        let original = pem(&CertificateDer::from((0..200u8).collect::<Vec<u8>>()));
        write(&dir, &original).expect("written");
        let ca = std::fs::read_to_string(dir.join(TRUST_GATEWAY_CA)).expect("ca");
        let bundle = std::fs::read_to_string(dir.join(TRUST_BUNDLE)).expect("bundle");
        let der = |text: &str| CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM");
        assert_eq!(der(&ca), der(&original), "the CA, re-encoded, is the same certificate");
        assert!(ca.lines().all(|l| l.len() <= 64), "{ca}");
        assert!(bundle.starts_with(&ca), "the bundle starts with the gateway's CA");
        assert!(!dir.join("gateway-ca.tmp").exists() && !dir.join("ca-bundle.tmp").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
