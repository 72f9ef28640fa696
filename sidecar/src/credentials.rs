//! Header values for upstream MCP servers (`MCPServer.spec.headers`), read from Secrets mounted
//! into the sidecar container alone: `<dir>/<secret>/<key>`, the layout of a Secret volume. The
//! agent's container never sees them, and its service account needs no right to read Secrets.
//! Values are re-read after [`TTL`], so a rotated Secret applies without a restart.

use hyper::header::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tollgate_api::HeaderSource;

const TTL: Duration = Duration::from_secs(10);
/// A header value larger than this is refused: it would not be a credential.
const MAX_VALUE: u64 = 16 << 10;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    #[error("header {header}: Secret {secret} key {key} is not mounted into the sidecar ({path}): {reason}")]
    NotMounted { header: String, secret: String, key: String, path: String, reason: String },
    #[error("header {header}: Vault-sourced headers are not supported by the sidecar yet")]
    Vault { header: String },
    #[error("header {header}: set exactly one of secretKeyRef or vault")]
    NoSource { header: String },
    #[error("header {header}: not a valid header name or value")]
    Invalid { header: String },
    #[error("header {header}: {what} {given:?} is not a valid Secret {what} (it would be a path outside the mounted Secrets)")]
    BadReference { header: String, what: &'static str, given: String },
}

pub struct Credentials {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, Read>>,
}

/// When a file was read, and what it held (or why it could not be read).
type Read = (Instant, Result<String, String>);

impl Credentials {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Credentials { dir: dir.into(), cache: Mutex::default() }
    }

    /// The headers to send, in order; the first that cannot be had is the error.
    pub fn resolve(&self, sources: &[HeaderSource]) -> Result<Vec<(HeaderName, HeaderValue)>, CredentialError> {
        sources.iter().map(|s| self.one(s)).collect()
    }

    fn one(&self, source: &HeaderSource) -> Result<(HeaderName, HeaderValue), CredentialError> {
        let header = source.name.clone();
        let secret = match (&source.secret_key_ref, &source.vault) {
            (Some(secret), None) => secret,
            (None, Some(_)) => return Err(CredentialError::Vault { header }),
            _ => return Err(CredentialError::NoSource { header }),
        };
        // The API server's schema already refuses these; checked again here, where they become a path.
        if !tollgate_core::k8s_names::is_dns1123_subdomain(&secret.name) {
            return Err(CredentialError::BadReference { header, what: "name", given: secret.name.clone() });
        }
        if !tollgate_core::k8s_names::is_secret_key(&secret.key) {
            return Err(CredentialError::BadReference { header, what: "key", given: secret.key.clone() });
        }
        let path = self.dir.join(&secret.name).join(&secret.key);
        let value = self.read(&path).map_err(|reason| CredentialError::NotMounted {
            header: header.clone(),
            secret: secret.name.clone(),
            key: secret.key.clone(),
            path: path.display().to_string(),
            reason,
        })?;
        let full = format!("{}{}", source.prefix.as_deref().unwrap_or_default(), value);
        let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| CredentialError::Invalid { header: header.clone() })?;
        let mut value = HeaderValue::from_str(&full).map_err(|_| CredentialError::Invalid { header })?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, value)) = cache.get(path)
            && at.elapsed() < TTL
        {
            return value.clone();
        }
        let value = read_value(path);
        cache.insert(path.to_path_buf(), (Instant::now(), value.clone()));
        value
    }
}

/// A Secret's value as a header wants it: one line, the trailing newline a file often has dropped.
fn read_value(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_VALUE {
        return Err(format!("{len} bytes is too large for a header"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_api::{SecretKeyRef, VaultRef};

    fn source(name: &str, prefix: Option<&str>, secret: Option<(&str, &str)>, vault: bool) -> HeaderSource {
        HeaderSource {
            name: name.into(),
            prefix: prefix.map(str::to_owned),
            secret_key_ref: secret.map(|(n, k)| SecretKeyRef { name: n.into(), key: k.into() }),
            vault: vault.then(|| VaultRef { path: "secret/data/x".into(), key: "k".into(), role: None }),
        }
    }

    #[test]
    fn references_that_are_paths_never_reach_the_filesystem() {
        let root = tempfile::tempdir().unwrap();
        let creds = root.path().join("credentials");
        std::fs::create_dir_all(creds.join("gh")).unwrap();
        std::fs::write(root.path().join("token"), "the-service-account-token").unwrap();
        let c = Credentials::new(&creds);
        for (name, key) in [("..", "token"), ("gh", "../../token"), ("gh", "/etc/hostname"), ("/etc", "hostname"), ("gh/..", "token"), ("..", "..")] {
            let err = c.resolve(&[source("Authorization", None, Some((name, key)), false)]).unwrap_err();
            assert!(matches!(err, CredentialError::BadReference { .. }), "{name}/{key}: {err}");
            assert!(!err.to_string().contains("the-service-account-token"));
        }
    }

    #[test]
    fn reads_mounted_secrets_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gh")).unwrap();
        std::fs::write(dir.path().join("gh/token"), "s3cr3t\n").unwrap();
        let c = Credentials::new(dir.path());
        let got = c.resolve(&[source("Authorization", Some("Bearer "), Some(("gh", "token")), false)]).unwrap();
        assert_eq!(got[0].0, "authorization");
        assert_eq!(got[0].1, "Bearer s3cr3t");
        assert!(got[0].1.is_sensitive(), "kept out of debug output");

        let missing = c.resolve(&[source("X-Key", None, Some(("gh", "nope")), false)]).unwrap_err();
        assert!(missing.to_string().contains("Secret gh key nope is not mounted into the sidecar"), "{missing}");
        assert_eq!(c.resolve(&[source("X", None, None, true)]).unwrap_err(), CredentialError::Vault { header: "X".into() });

        std::fs::write(dir.path().join("gh/bad"), "a\nb").unwrap();
        assert!(matches!(c.resolve(&[source("X", None, Some(("gh", "bad")), false)]).unwrap_err(), CredentialError::Invalid { .. }));
    }
}
