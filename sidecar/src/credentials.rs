//! Header values for upstream MCP servers (`MCPServer.spec.headers`), read from Secrets mounted
//! into the sidecar container alone: `<dir>/<secret>/<key>`, the layout of a Secret volume. The
//! agent's container never sees them, and its service account needs no right to read Secrets.
//! Values are re-read after [`TTL`], so a rotated Secret applies without a restart. Headers
//! whose value lives in Vault / OpenBao are read with the sidecar's own service-account token
//! (`tollgate_mcp_client::vault`).

use hyper::header::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tollgate_api::HeaderSource;
use tollgate_mcp_client::vault::{Vault, VaultError};

const TTL: Duration = Duration::from_secs(10);
/// A header value larger than this is refused: it would not be a credential.
const MAX_VALUE: u64 = 16 << 10;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    #[error("header {header}: Secret {secret} key {key} is not mounted into the sidecar ({path}): {reason}")]
    NotMounted { header: String, secret: String, key: String, path: String, reason: String },
    #[error("header {header}: {source}")]
    Vault { header: String, source: VaultError },
    #[error("header {header}: its value is in Vault at {path}, but this sidecar has no Vault address (the chart's vault.address)")]
    NoVault { header: String, path: String },
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
    vault: Option<std::sync::Arc<Vault>>,
    /// The agent's namespace, whose Vault scope its headers must be under.
    namespace: String,
}

/// When a file was read, and what it held (or why it could not be read).
type Read = (Instant, Result<String, String>);

impl Credentials {
    pub fn new(dir: impl Into<PathBuf>, vault: Option<std::sync::Arc<Vault>>, namespace: &str) -> Self {
        Credentials { dir: dir.into(), cache: Mutex::default(), vault, namespace: namespace.to_owned() }
    }

    /// The headers to send, in order; the first that cannot be had is the error.
    pub async fn resolve(&self, sources: &[HeaderSource]) -> Result<Vec<(HeaderName, HeaderValue)>, CredentialError> {
        let mut out = Vec::with_capacity(sources.len());
        for s in sources {
            let value = match (&s.secret_key_ref, &s.vault) {
                (Some(_), None) => self.mounted_secret(s)?,
                (None, Some(v)) => {
                    let vault = self.vault.as_ref().ok_or_else(|| CredentialError::NoVault { header: s.name.clone(), path: v.path.clone() })?;
                    vault
                        .read(&self.namespace, &v.path, &v.key, v.role.as_deref())
                        .await
                        .map_err(|source| CredentialError::Vault { header: s.name.clone(), source })?
                }
                _ => return Err(CredentialError::NoSource { header: s.name.clone() }),
            };
            out.push(header(s, &value)?);
        }
        Ok(out)
    }

    fn mounted_secret(&self, source: &HeaderSource) -> Result<String, CredentialError> {
        let header = source.name.clone();
        let Some(secret) = &source.secret_key_ref else { return Err(CredentialError::NoSource { header }) };
        // The API server's schema already refuses these; checked again here, where they become a path.
        if !tollgate_core::k8s::names::is_dns1123_subdomain(&secret.name) {
            return Err(CredentialError::BadReference { header, what: "name", given: secret.name.clone() });
        }
        if !tollgate_core::k8s::names::is_secret_key(&secret.key) {
            return Err(CredentialError::BadReference { header, what: "key", given: secret.key.clone() });
        }
        let path = self.dir.join(&secret.name).join(&secret.key);
        self.read(&path).map_err(|reason| CredentialError::NotMounted {
            header: header.clone(),
            secret: secret.name.clone(),
            key: secret.key.clone(),
            path: path.display().to_string(),
            reason,
        })
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

fn header(source: &HeaderSource, value: &str) -> Result<(HeaderName, HeaderValue), CredentialError> {
    tollgate_mcp_client::transport::credential_header(&source.name, source.prefix.as_deref(), value)
        .ok_or_else(|| CredentialError::Invalid { header: source.name.clone() })
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

    #[tokio::test]
    async fn references_that_are_paths_never_reach_the_filesystem() {
        let root = tempfile::tempdir().unwrap();
        let creds = root.path().join("credentials");
        std::fs::create_dir_all(creds.join("gh")).unwrap();
        std::fs::write(root.path().join("token"), "the-service-account-token").unwrap();
        let c = Credentials::new(&creds, None, "ns");
        for (name, key) in [("..", "token"), ("gh", "../../token"), ("gh", "/etc/hostname"), ("/etc", "hostname"), ("gh/..", "token"), ("..", "..")] {
            let err = c.resolve(&[source("Authorization", None, Some((name, key)), false)]).await.unwrap_err();
            assert!(matches!(err, CredentialError::BadReference { .. }), "{name}/{key}: {err}");
            assert!(!err.to_string().contains("the-service-account-token"));
        }
    }

    #[tokio::test]
    async fn reads_mounted_secrets_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gh")).unwrap();
        std::fs::write(dir.path().join("gh/token"), "s3cr3t\n").unwrap();
        let c = Credentials::new(dir.path(), None, "ns");
        let got = c.resolve(&[source("Authorization", Some("Bearer "), Some(("gh", "token")), false)]).await.unwrap();
        assert_eq!(got[0].0, "authorization");
        assert_eq!(got[0].1, "Bearer s3cr3t");
        assert!(got[0].1.is_sensitive(), "kept out of debug output");

        let missing = c.resolve(&[source("X-Key", None, Some(("gh", "nope")), false)]).await.unwrap_err();
        assert!(missing.to_string().contains("Secret gh key nope is not mounted into the sidecar"), "{missing}");
        let no_vault = c.resolve(&[source("X", None, None, true)]).await.unwrap_err();
        assert_eq!(no_vault, CredentialError::NoVault { header: "X".into(), path: "secret/data/x".into() });
        assert!(no_vault.to_string().contains("no Vault address"), "{no_vault}");

        std::fs::write(dir.path().join("gh/bad"), "a\nb").unwrap();
        assert!(matches!(c.resolve(&[source("X", None, Some(("gh", "bad")), false)]).await.unwrap_err(), CredentialError::Invalid { .. }));
    }
}
