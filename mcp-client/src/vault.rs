//! Secrets from Vault / OpenBao KV v2 under Kubernetes auth (DESIGN §3.7), for whichever process
//! reads a credential: the sidecar (MCP server headers), the gateway (provider keys), the
//! operator (discovery). Each logs in with its own service-account token, read from its file at
//! every login (projected tokens rotate); tokens are kept for their lease, values for
//! `cache_seconds`, so a rotated secret applies without a restart. There is no stale fallback:
//! when Vault cannot be asked, the credential is missing and the call fails closed, with a reason
//! that names the path and never a value.
//!
//! Two HTTP calls on the shared transport (one TLS stack, ring) rather than `vaultrs`, whose
//! reqwest brings a second TLS provider and HTTP client into every sidecar.

use crate::transport::{self, HttpClient};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_core::vault as core;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where Vault is and how to log in; the same flags in every binary that reads secrets.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VaultArgs {
    /// Vault or OpenBao (`https://vault.example:8200`); Vault-sourced credentials fail, saying
    /// so, without it.
    #[arg(long = "vault-addr", env = "TOLLGATE_VAULT_ADDR")]
    pub addr: Option<String>,
    /// The mount of the Kubernetes auth method.
    #[arg(long = "vault-auth-mount", env = "TOLLGATE_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    pub auth_mount: String,
    /// The role logged in as when a reference names none.
    #[arg(long = "vault-role", env = "TOLLGATE_VAULT_ROLE")]
    pub role: Option<String>,
    /// The service-account token presented at login.
    #[arg(long = "vault-jwt-file", env = "TOLLGATE_VAULT_JWT_FILE", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub jwt_file: PathBuf,
    /// PEM CA certificates Vault's TLS certificate is checked against, besides the platform's.
    #[arg(long = "vault-ca-file", env = "TOLLGATE_VAULT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The path prefix the objects of a namespace may read under (`{namespace}` stands for it);
    /// empty: any path the role allows.
    #[arg(long = "vault-namespace-scope", env = "TOLLGATE_VAULT_NAMESPACE_SCOPE", default_value = core::DEFAULT_SCOPE)]
    pub namespace_scope: String,
    /// How long a value read is used before it is read again.
    #[arg(long = "vault-cache-seconds", env = "TOLLGATE_VAULT_CACHE_SECONDS", default_value_t = 30)]
    pub cache_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Vault {path} key {key}: {reason}")]
pub struct VaultError {
    pub path: String,
    pub key: String,
    pub reason: String,
}

pub struct Vault {
    args: VaultArgs,
    addr: String,
    http: HttpClient,
    /// Client tokens by role, with when they must be renewed.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    values: Mutex<HashMap<ValueKey, (Instant, String)>>,
}

/// `(role, path, key)`: a value read as one role is not another role's to use.
type ValueKey = (String, String, String);

impl Vault {
    /// A client when `args` name an address; why it cannot be made otherwise (a CA file that
    /// holds no certificate).
    pub fn new(args: &VaultArgs) -> Result<Option<Arc<Vault>>, String> {
        let Some(addr) = args.addr.clone().filter(|a| !a.is_empty()) else { return Ok(None) };
        let mut roots = transport::platform_roots();
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("--vault-ca-file {}: {e}", ca.display()))?;
            roots = transport::roots_with_bundle(&roots, &pem).map_err(|e| format!("--vault-ca-file {}: {e}", ca.display()))?;
        }
        let http = transport::client(Arc::new(roots));
        Ok(Some(Arc::new(Vault { args: args.clone(), addr, http, tokens: Mutex::default(), values: Mutex::default() })))
    }

    /// The field `key` of the KV v2 secret at `path`, named by an object of `namespace`, logged
    /// in as `role` (or the default role).
    pub async fn read(&self, namespace: &str, path: &str, key: &str, role: Option<&str>) -> Result<String, VaultError> {
        let fail = |reason: String| VaultError { path: path.to_owned(), key: key.to_owned(), reason };
        if let Some(problem) = core::path_problem(path).or_else(|| core::scope_problem(path, &self.args.namespace_scope, namespace)) {
            return Err(fail(problem));
        }
        let role = role
            .filter(|r| !r.is_empty())
            .or(self.args.role.as_deref())
            .ok_or_else(|| fail("no Vault role: name one in the reference or configure a default (--vault-role)".into()))?;
        let cache_key = (role.to_owned(), path.to_owned(), key.to_owned());
        let ttl = Duration::from_secs(self.args.cache_seconds);
        if let Some((at, value)) = lock(&self.values).get(&cache_key)
            && at.elapsed() < ttl
        {
            return Ok(value.clone());
        }
        let mut fresh_login = false;
        loop {
            let token = self.token(role, fresh_login).await.map_err(fail)?;
            let url = core::read_url(&self.addr, path);
            let headers = [("x-vault-token", token.as_str()), ("x-vault-request", "true")];
            let (status, body) = transport::small_call(&self.http, hyper::Method::GET, &url, &headers, Bytes::new(), TIMEOUT)
                .await
                .map_err(|e| fail(format!("Vault at {} {e}", self.addr)))?;
            if core::token_rejected(status) && !fresh_login {
                lock(&self.tokens).remove(role);
                fresh_login = true;
                continue;
            }
            let value = core::read_answer(status, &body, path, key).map_err(fail)?;
            lock(&self.values).insert(cache_key, (Instant::now(), value.clone()));
            return Ok(value);
        }
    }

    async fn token(&self, role: &str, fresh: bool) -> Result<String, String> {
        if !fresh
            && let Some((token, until)) = lock(&self.tokens).get(role)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let jwt =
            std::fs::read_to_string(&self.args.jwt_file).map_err(|e| format!("reading the service-account token {}: {e}", self.args.jwt_file.display()))?;
        let body = Bytes::from(core::login_body(role, &jwt).to_string());
        let url = core::login_url(&self.addr, &self.args.auth_mount);
        let (status, answer) = transport::post(&self.http, &url, &[("content-type", "application/json")], body, TIMEOUT)
            .await
            .map_err(|e| format!("Vault at {} {e}", self.addr))?;
        let login = core::login_answer(status, &answer, role)?;
        // Renewed at half its lease, so a token is never used as it expires.
        let keep = Duration::from_secs(login.lease_seconds.max(2) / 2);
        lock(&self.tokens).insert(role.to_owned(), (login.token.clone(), Instant::now() + keep));
        Ok(login.token)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
