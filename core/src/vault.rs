//! Vault / OpenBao (DESIGN §3.7): the two calls Tollgate makes, as data. A Kubernetes-auth login
//! (`POST /v1/auth/<mount>/login` with a role and the caller's service-account token) gives a
//! client token; a KV v2 read (`GET /v1/<mount>/data/<path>`) gives the secret's fields. What
//! Vault answers is turned into the value or into a reason that names the path, never a value.

use serde_json::{Value, json};

/// What a login gave: the client token and how long Vault keeps it (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub token: String,
    pub lease_seconds: u64,
}

pub fn login_url(addr: &str, auth_mount: &str) -> String {
    format!("{}/v1/auth/{}/login", addr.trim_end_matches('/'), auth_mount.trim_matches('/'))
}

pub fn login_body(role: &str, jwt: &str) -> Value {
    json!({"role": role, "jwt": jwt.trim()})
}

/// The URL of a KV v2 path as `VaultRef.path` names it (`secret/data/tollgate/github`).
pub fn read_url(addr: &str, path: &str) -> String {
    format!("{}/v1/{}", addr.trim_end_matches('/'), path.trim_matches('/'))
}

/// Why a path cannot be a KV v2 read: Tollgate reads secrets, it never calls other endpoints
/// with its token.
pub fn path_problem(path: &str) -> Option<String> {
    let p = path.trim_matches('/');
    let segments: Vec<&str> = p.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains(['?', '#', '%'])) {
        return Some(format!("Vault path {path:?} is not a plain KV v2 path"));
    }
    if segments.len() < 3 || segments[1] != "data" {
        return Some(format!("Vault path {path:?} is not a KV v2 data path: write <mount>/data/<path>, e.g. secret/data/tollgate/github"));
    }
    None
}

/// Where the objects of a namespace may read by default: the operator and the gateway read with
/// identities of their own, shared by every namespace, so a path must say whose it is.
pub const DEFAULT_SCOPE: &str = "secret/data/tollgate/{namespace}/";

/// Why `path` is not one an object of `namespace` may name, under `scope` (a path prefix with
/// `{namespace}` in it; empty: no limit). Without this a ModelProvider or MCPServer could name
/// another team's secret and have it read by the gateway or the operator, and sent where it says.
pub fn scope_problem(path: &str, scope: &str, namespace: &str) -> Option<String> {
    if scope.is_empty() {
        return None;
    }
    let prefix = scope.replace("{namespace}", namespace);
    let prefix = prefix.trim_start_matches('/');
    (!path.trim_start_matches('/').starts_with(prefix))
        .then(|| format!("Vault path {path} is outside {prefix}, where objects of namespace {namespace} may read (the chart's vault.namespaceScope)"))
}

/// Vault's own words, when an answer carries them (`{"errors": [...]}`).
fn vault_errors(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let errors: Vec<&str> = v["errors"].as_array().into_iter().flatten().filter_map(Value::as_str).filter(|e| !e.is_empty()).collect();
    if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
}

/// The client token of a login answer.
pub fn login_answer(status: u16, body: &[u8], role: &str) -> Result<Login, String> {
    if !(200..300).contains(&status) {
        let hint = if status == 400 || status == 403 { " (is the role bound to this service account and namespace?)" } else { "" };
        return Err(format!("Vault refused the Kubernetes login for role {role:?} ({status}{}){hint}", vault_errors(body)));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| format!("Vault's login answer for role {role:?} is not JSON"))?;
    let token =
        v["auth"]["client_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| format!("Vault's login answer for role {role:?} has no client token"))?;
    Ok(Login { token: token.to_owned(), lease_seconds: v["auth"]["lease_duration"].as_u64().unwrap_or(0) })
}

/// Whether a read failed because the token is no longer good (expired or revoked): worth one
/// fresh login.
pub fn token_rejected(status: u16) -> bool {
    status == 403
}

/// The field `key` of a KV v2 read answer.
pub fn read_answer(status: u16, body: &[u8], path: &str, key: &str) -> Result<String, String> {
    match status {
        200..=299 => {}
        404 => return Err(format!("Vault has no secret at {path}")),
        403 => return Err(format!("Vault denied reading {path} ({status}{}): the role's policy does not allow it", vault_errors(body))),
        _ => return Err(format!("Vault answered {status} reading {path}{}", vault_errors(body))),
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| format!("Vault's answer for {path} is not JSON"))?;
    match &v["data"]["data"][key] {
        Value::String(s) => Ok(s.clone()),
        Value::Null if v["data"]["data"].is_object() => Err(format!("Vault secret {path} has no key {key}")),
        Value::Null => Err(format!("Vault's answer for {path} is not a KV v2 secret (no data.data)")),
        _ => Err(format!("Vault secret {path} key {key} is not a string")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_cleanly() {
        assert_eq!(login_url("http://127.0.0.1:8200/", "/kubernetes/"), "http://127.0.0.1:8200/v1/auth/kubernetes/login");
        assert_eq!(read_url("http://v:8200", "/secret/data/a/b"), "http://v:8200/v1/secret/data/a/b");
    }

    #[test]
    fn only_kv2_data_paths_are_read() {
        assert_eq!(path_problem("secret/data/tollgate/github"), None);
        for bad in
            ["secret/tollgate", "sys/policy", "secret/data", "secret/data/../../sys/seal", "secret/data/x?list=true", "secret//data/x", "auth/token/data/x%2f"]
        {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn a_namespace_reads_only_under_its_own_scope() {
        assert_eq!(scope_problem("secret/data/tollgate/team-a/github", DEFAULT_SCOPE, "team-a"), None);
        let other = scope_problem("secret/data/tollgate/team-b/github", DEFAULT_SCOPE, "team-a").unwrap();
        assert!(other.contains("outside secret/data/tollgate/team-a/"), "{other}");
        // A namespace whose name prefixes another's reads only its own directory.
        assert!(scope_problem("secret/data/tollgate/team-ab/x", DEFAULT_SCOPE, "team-a").is_some());
        assert_eq!(scope_problem("kv/data/anything", "", "team-a"), None, "no scope: no limit");
    }

    #[test]
    fn a_login_gives_its_token_or_says_why_not() {
        let ok = br#"{"auth": {"client_token": "s.abc", "lease_duration": 3600}}"#;
        assert_eq!(login_answer(200, ok, "r"), Ok(Login { token: "s.abc".into(), lease_seconds: 3600 }));
        let denied = login_answer(403, br#"{"errors": ["permission denied"]}"#, "sidecar").unwrap_err();
        assert!(denied.contains("role \"sidecar\"") && denied.contains("permission denied") && denied.contains("bound"), "{denied}");
        assert!(login_answer(200, br#"{"auth": {}}"#, "r").unwrap_err().contains("no client token"));
    }

    #[test]
    fn a_read_gives_the_field_and_never_a_value_in_an_error() {
        let body = br#"{"data": {"data": {"token": "ghp_secret", "n": 1}, "metadata": {"version": 2}}}"#;
        assert_eq!(read_answer(200, body, "secret/data/gh", "token").as_deref(), Ok("ghp_secret"));
        for (status, body, key, want) in [
            (200, &body[..], "missing", "has no key missing"),
            (200, &body[..], "n", "is not a string"),
            (404, &b"{}"[..], "token", "no secret at secret/data/gh"),
            (403, &br#"{"errors": ["permission denied"]}"#[..], "token", "denied reading secret/data/gh"),
            (503, &br#"{"errors": ["Vault is sealed"]}"#[..], "token", "503 reading secret/data/gh: Vault is sealed"),
        ] {
            let e = read_answer(status, body, "secret/data/gh", key).unwrap_err();
            assert!(e.contains(want) && !e.contains("ghp_secret"), "{status} {key}: {e}");
        }
    }
}
