//! HTTPS for the gateway's listener (DESIGN §3.4): the certificate and key from files (the
//! Gateway's TLS Secret, mounted), read again when the certificate file changes, so a renewal by
//! cert-manager or a re-issue takes effect without a restart; a renewal that cannot be read keeps
//! the certificate in use and says why.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey { path: String, reason: String },
    #[error("the key in {path} does not fit: {reason}")]
    Key { path: String, reason: String },
}

/// How often a handshake looks at the certificate file's modification time, at most.
const LOOK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Files {
    cert: PathBuf,
    key: PathBuf,
    look_every: Duration,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    modified: Option<SystemTime>,
    looked: Instant,
}

impl Files {
    /// The pair as it is now; an error when it cannot serve.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Files, Error> {
        Files::load_looking(cert, key, LOOK_EVERY)
    }

    fn load_looking(cert: PathBuf, key: PathBuf, look_every: Duration) -> Result<Files, Error> {
        let modified = modified(&cert);
        let certified = read(&cert, &key)?;
        Ok(Files { cert, key, look_every, current: RwLock::new(Current { key: certified, modified, looked: Instant::now() }) })
    }

    pub fn server_config(self: Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn refresh(&self) {
        {
            let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.looked.elapsed() < self.look_every {
                return;
            }
        }
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.looked = Instant::now();
        let now = modified(&self.cert);
        if now == current.modified {
            return;
        }
        match read(&self.cert, &self.key) {
            Ok(key) => {
                tracing::info!(cert = %self.cert.display(), "serving certificate changed on disk: serving the new one");
                *current = Current { key, modified: now, looked: Instant::now() };
            }
            // Mid-rename (the kubelet swaps a Secret volume's files) or a bad renewal: the
            // certificate in use stays, and the next look tries again.
            Err(e) => tracing::warn!(error = %e, "the changed serving certificate cannot be used yet; the previous one stays"),
        }
    }
}

impl Files {
    fn serving(&self) -> Arc<CertifiedKey> {
        self.refresh();
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).key.clone()
    }
}

impl ResolvesServerCert for Files {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.serving())
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<CertifiedKey>, Error> {
    let text = |p: &std::path::Path| std::fs::read(p).map_err(|source| Error::Read { path: p.display().to_string(), source });
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text(cert)?).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(Error::NoCertificate { path: cert.display().to_string() });
    }
    let private = PrivateKeyDer::from_pem_slice(&text(key)?).map_err(|e| Error::NoKey { path: key.display().to_string(), reason: e.to_string() })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| Error::Key { path: key.display().to_string(), reason: e.to_string() })?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params").self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn set_modified(path: &std::path::Path, at: SystemTime) {
        std::fs::File::options().write(true).open(path).and_then(|f| f.set_modified(at)).expect("mtime");
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_keeps_the_last_good() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (a_cert, a_key) = pair("a.example");
        std::fs::write(&cert, &a_cert).expect("write");
        std::fs::write(&key, &a_key).expect("write");
        let files = Files::load_looking(cert.clone(), key.clone(), Duration::ZERO).expect("loaded");
        let first = files.serving();

        let (b_cert, b_key) = pair("b.example");
        std::fs::write(&key, &b_key).expect("write");
        std::fs::write(&cert, &b_cert).expect("write");
        set_modified(&cert, SystemTime::now() + Duration::from_secs(60));
        let renewed = files.serving();
        assert_ne!(renewed.cert, first.cert, "the renewed certificate is served");

        // A half-written renewal (the certificate without its key) keeps the good one.
        let (c_cert, _) = pair("c.example");
        std::fs::write(&cert, &c_cert).expect("write");
        set_modified(&cert, SystemTime::now() + Duration::from_secs(120));
        assert_eq!(files.serving().cert, renewed.cert, "a key that does not fit is not served");

        std::fs::write(&cert, "not a certificate").expect("write");
        assert!(matches!(Files::load(cert, key), Err(Error::NoCertificate { .. })), "a bad file at start is an error");
    }
}
