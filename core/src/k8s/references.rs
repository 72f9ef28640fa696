//! What an `MCPServer` or `ModelProvider` may point at (DESIGN §3.6). Tollgate reads the
//! Secrets and ConfigMaps such an object names and sends them to the URL it names, with
//! identities every namespace shares; so whoever writes one must be able to read what it names
//! themselves (the operator asks the API server, with a SubjectAccessReview), and a provider's
//! URL is `https` and never a link-local or cloud metadata address.

use std::net::IpAddr;
use tollgate_api::{McpServerSpec, ModelProviderSpec};

/// An object of the namespace named by a spec: its resource (`secrets`, `configmaps`) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Named {
    pub resource: &'static str,
    pub name: String,
}

fn secret(name: &str) -> Named {
    Named { resource: "secrets", name: name.to_owned() }
}

/// The Secrets and ConfigMaps an `MCPServer` names, each once.
pub fn of_server(spec: &McpServerSpec) -> Vec<Named> {
    let mut out: Vec<Named> = spec.headers.iter().filter_map(|h| h.secret_key_ref.as_ref().map(|r| secret(&r.name))).collect();
    if let Some(bundle) = spec.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) {
        out.extend(bundle.secret_key_ref.as_ref().map(|r| secret(&r.name)));
        out.extend(bundle.config_map_key_ref.as_ref().map(|r| Named { resource: "configmaps", name: r.name.clone() }));
    }
    out.sort();
    out.dedup();
    out
}

/// The Secrets a `ModelProvider` names.
pub fn of_provider(spec: &ModelProviderSpec) -> Vec<Named> {
    spec.credentials.iter().filter_map(|c| c.secret_key_ref.as_ref().map(|r| secret(&r.name))).collect()
}

/// Host names that answer with a cloud's instance credentials.
const METADATA_HOSTS: &[&str] = &["metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"];

/// Addresses that are a node's own or a cloud's metadata service, never a model or MCP server.
fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
                || v6.to_ipv4_mapped().is_some_and(|v4| forbidden_ip(IpAddr::V4(v4)))
        }
    }
}

/// The host of `url` (`scheme://[user@]host[:port][/…]`), lowercased, without brackets.
fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') { v6.split(']').next()? } else { hostport.rsplit_once(':').map_or(hostport, |(h, _)| h) };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// Why `url` may not be called with a Secret's value, if it may not: not `https` (unless
/// `allow_http`), or a link-local or metadata address.
pub fn url_refusal(field: &str, url: &str, allow_http: bool) -> Option<String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Some(format!("{field} is http: credentials would cross the network in the clear; use https (or allow http in the chart's values)"));
        }
        _ => return Some(format!("{field} is not an http(s) URL")),
    }
    let Some(host) = host(url).filter(|h| !h.is_empty()) else { return Some(format!("{field} names no host")) };
    let ip = host.parse::<IpAddr>().ok();
    if METADATA_HOSTS.contains(&host.as_str()) || ip.is_some_and(forbidden_ip) {
        return Some(format!("{field} is a link-local or cloud metadata address ({host}): Tollgate never sends credentials there"));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_named_secret_and_config_map_once() {
        let server: McpServerSpec = serde_json::from_value(json!({"url": "https://x/mcp", "headers": [
            {"name": "A", "secretKeyRef": {"name": "tok", "key": "k"}}, {"name": "B", "secretKeyRef": {"name": "tok", "key": "j"}}],
            "tls": {"caBundle": {"configMapKeyRef": {"name": "ca", "key": "ca.crt"}}}}))
        .unwrap();
        assert_eq!(of_server(&server), vec![Named { resource: "configmaps", name: "ca".into() }, secret("tok")]);
        let provider: ModelProviderSpec = serde_json::from_value(json!({"type": "openai", "baseURL": "https://api.openai.com/v1",
            "credentials": {"secretKeyRef": {"name": "openai", "key": "k"}}, "models": [{"name": "m"}]}))
        .unwrap();
        assert_eq!(of_provider(&provider), vec![secret("openai")]);
    }

    #[test]
    fn credentials_go_only_to_https_and_never_to_metadata() {
        assert_eq!(url_refusal("baseURL", "https://api.openai.com/v1", false), None);
        assert!(url_refusal("baseURL", "http://api.openai.com/v1", false).unwrap().contains("use https"));
        assert_eq!(url_refusal("baseURL", "http://vllm.models.svc:8000/v1", true), None);
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "https://169.254.10.1/",
            "https://[fe80::1]:443/",
            "https://[::ffff:169.254.169.254]/",
            "https://metadata.google.internal/computeMetadata/v1",
            "https://METADATA.google.internal./",
            "https://user@100.100.100.200/",
            "https://[fd00:ec2::254]/",
            "https://0.0.0.0/",
        ] {
            assert!(url_refusal("baseURL", bad, true).unwrap_or_default().contains("metadata"), "{bad}");
        }
        assert!(url_refusal("baseURL", "ftp://x", true).is_some());
        assert!(url_refusal("baseURL", "https://", true).is_some());
    }
}
