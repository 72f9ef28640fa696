//! Who may reach the sidecar at all, before any message is read (DESIGN §3.2): the transport
//! rules (DNS rebinding, cross-origin pages, content types) and the agent's rights (managed, not
//! suspended, the server among its `mcpServers`). Every method of every endpoint passes here.

use crate::policy::AgentInfo;
use std::net::IpAddr;

/// What the sidecar accepts as `Host` and `Origin` besides loopback and the pod's own address.
#[derive(Debug, Clone, Default)]
pub struct TransportRules {
    /// Extra host names (without port), compared case-insensitively.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) a browser page may call from; none by default.
    pub allowed_origins: Vec<String>,
    pub pod_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportRefusal {
    #[error("request without a Host header refused")]
    NoHost,
    #[error("Host {0:?} is not this sidecar: only loopback, the pod's own address or a configured name are served (DNS rebinding protection)")]
    ForeignHost(String),
    #[error("Origin {0:?} is not allowed to call this sidecar (cross-origin requests are refused unless configured)")]
    ForeignOrigin(String),
    #[error("POST bodies must be application/json, not {0:?}")]
    ContentType(String),
    #[error("more than one {0} header: refused, since a proxy and a server could each read another")]
    Repeated(&'static str),
}

impl TransportRefusal {
    pub fn http_status(&self) -> u16 {
        match self {
            TransportRefusal::ContentType(_) => 415,
            TransportRefusal::Repeated(_) => 400,
            _ => 403,
        }
    }
}

/// The host part of a `Host` value: `name`, `name:port`, `[v6]` or `[v6]:port`.
fn host_part(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl TransportRules {
    fn host_allowed(&self, host: &str) -> bool {
        let h = host_part(host);
        if h.eq_ignore_ascii_case("localhost") || self.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)) {
            return true;
        }
        match h.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || Some(ip) == self.pod_ip,
            Err(_) => false,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// Admits a request by its transport facts, or says why not.
    pub fn check(&self, is_post: bool, host: Option<&str>, origin: Option<&str>, content_type: Option<&str>) -> Result<(), TransportRefusal> {
        let host = host.ok_or(TransportRefusal::NoHost)?;
        if !self.host_allowed(host) {
            return Err(TransportRefusal::ForeignHost(host.to_owned()));
        }
        // A same-origin request (a page or client on the very address it calls, which the Host
        // check above already allowed) is no cross-origin call: the MCP transport's reference
        // servers accept it, and clients that send it must work.
        let same_origin = origin.is_some_and(|o| o.trim_end_matches('/').strip_prefix("http://").is_some_and(|a| a.eq_ignore_ascii_case(host)));
        self.check_redirected(is_post, origin.filter(|_| !same_origin), content_type)
    }

    /// As [`TransportRules::check`] for a connection the agent dialled to an MCP server's address
    /// and the pod's redirect sent here: its `Host` names that server, which is what it dialled.
    pub fn check_redirected(&self, is_post: bool, origin: Option<&str>, content_type: Option<&str>) -> Result<(), TransportRefusal> {
        if let Some(origin) = origin
            && !self.origin_allowed(origin)
        {
            return Err(TransportRefusal::ForeignOrigin(origin.to_owned()));
        }
        if is_post {
            let ct = content_type.unwrap_or_default();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(TransportRefusal::ContentType(ct.to_owned()));
            }
        }
        Ok(())
    }
}

/// Why the agent gets nothing from a server (or from any server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    #[error("Tollgate has not loaded its policies yet; nothing is served until it has")]
    NotLoaded,
    #[error("agent {agent} is no longer managed by Tollgate (no ManagedAgent {agent:?} in namespace {namespace}); every call is refused")]
    NotManaged { agent: String, namespace: String },
    #[error("agent {namespace}/{agent} is suspended (ManagedAgent.spec.suspended); every call is refused")]
    Suspended { agent: String, namespace: String },
    #[error("agent {agent} may not use MCP server {server:?} (not in its mcpServers)")]
    ServerNotAllowed { agent: String, server: String },
    #[error("no MCPServer named {server:?} in namespace {namespace}")]
    UnknownServer { server: String, namespace: String },
}

impl AccessRefusal {
    pub fn http_status(&self) -> u16 {
        match self {
            AccessRefusal::NotLoaded => 503,
            AccessRefusal::UnknownServer { .. } => 404,
            _ => 403,
        }
    }
}

/// The agent, if it may be served at all: policies loaded, its `ManagedAgent` exists, and it is
/// not suspended.
pub fn agent_access<'a>(loaded: bool, agent: Option<&'a AgentInfo>, name: &str, namespace: &str) -> Result<&'a AgentInfo, AccessRefusal> {
    if !loaded {
        return Err(AccessRefusal::NotLoaded);
    }
    let agent = agent.ok_or_else(|| AccessRefusal::NotManaged { agent: name.to_owned(), namespace: namespace.to_owned() })?;
    if agent.suspended {
        return Err(AccessRefusal::Suspended { agent: agent.name.clone(), namespace: agent.namespace.clone() });
    }
    Ok(agent)
}

/// Whether the agent may reach `server` (which `exists` as an `MCPServer`). The agent's rights are
/// checked first, so a server it may not use is refused whether or not it exists.
pub fn server_access(agent: &AgentInfo, server: &str, exists: bool) -> Result<(), AccessRefusal> {
    if !agent.may_use_server(server) {
        return Err(AccessRefusal::ServerNotAllowed { agent: agent.name.clone(), server: server.to_owned() });
    }
    if !exists {
        return Err(AccessRefusal::UnknownServer { server: server.to_owned(), namespace: agent.namespace.clone() });
    }
    Ok(())
}

/// The sidecar's own identity against its agent's: it must run as the agent's service account,
/// or it would speak for an agent under someone else's name (and the requests it creates would be
/// refused as forged). `user` is what the API server says the sidecar is.
pub fn identity_refusal(user: &str, namespace: &str, agent: &AgentInfo) -> Option<String> {
    let expected = format!("system:serviceaccount:{namespace}:{}", agent.service_account);
    (user != expected).then(|| {
        format!(
            "this sidecar runs as {user}, but ManagedAgent {namespace}/{} runs as service account {:?}: refusing to speak for it (inject the sidecar into the agent's own pods, or fix spec.serviceAccountName)",
            agent.name, agent.service_account
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::glob::Glob;

    fn rules() -> TransportRules {
        TransportRules { allowed_hosts: vec!["agent.svc".into()], allowed_origins: vec!["https://ui.example".into()], pod_ip: "10.1.2.3".parse().ok() }
    }

    #[test]
    fn hosts() {
        let r = rules();
        for ok in ["127.0.0.1:15001", "127.0.0.9", "localhost:1", "LOCALHOST", "[::1]:15001", "[::1]", "10.1.2.3:15001", "Agent.SVC:80"] {
            assert_eq!(r.check(false, Some(ok), None, None), Ok(()), "{ok}");
        }
        for bad in ["evil.example", "evil.example:15001", "127.0.0.1.evil.example", "10.1.2.4", "[::2]:1", "", "localhost.evil"] {
            assert!(matches!(r.check(false, Some(bad), None, None), Err(TransportRefusal::ForeignHost(_))), "{bad}");
        }
        assert_eq!(r.check(false, None, None, None), Err(TransportRefusal::NoHost));
    }

    #[test]
    fn origins_and_content_types() {
        let r = rules();
        let h = Some("127.0.0.1");
        assert_eq!(r.check(false, h, Some("https://ui.example/"), None), Ok(()));
        for bad in ["http://evil.example", "null", "https://ui.example.evil", "http://ui.example"] {
            assert_eq!(r.check(false, h, Some(bad), None), Err(TransportRefusal::ForeignOrigin(bad.into())), "{bad}");
        }
        assert!(TransportRules::default().check(false, h, Some("http://localhost:3000"), None).is_err(), "no origin by default");
        // Same origin: the page is on the address it calls.
        let d = TransportRules::default();
        assert_eq!(d.check(false, Some("127.0.0.1:15001"), Some("http://127.0.0.1:15001"), None), Ok(()));
        assert_eq!(d.check(false, Some("localhost:15001"), Some("http://LOCALHOST:15001/"), None), Ok(()));
        for (host, other) in [
            ("127.0.0.1:15001", "http://127.0.0.1:3000"),
            ("127.0.0.1:15001", "https://127.0.0.1:15001"),
            ("127.0.0.1:15001", "http://127.0.0.1"),
            ("127.0.0.1", "http://127.0.0.1:15001"),
            ("localhost:15001", "http://127.0.0.1:15001"),
        ] {
            assert_eq!(d.check(false, Some(host), Some(other), None), Err(TransportRefusal::ForeignOrigin(other.into())), "{other} to {host}");
        }
        // A foreign Host is refused whatever its Origin says (DNS rebinding).
        assert!(matches!(d.check(false, Some("evil.example:15001"), Some("http://evil.example:15001"), None), Err(TransportRefusal::ForeignHost(_))));
        assert_eq!(r.check(true, h, None, Some("application/json; charset=utf-8")), Ok(()));
        assert_eq!(r.check(true, h, None, Some("Application/JSON")), Ok(()));
        for bad in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx"), None] {
            let e = r.check(true, h, None, bad).unwrap_err();
            assert_eq!(e.http_status(), 415, "{bad:?}");
        }
        assert_eq!(r.check(false, h, None, Some("text/plain")), Ok(()), "GET and DELETE carry no body");
    }

    #[test]
    fn agent_rights() {
        let agent = AgentInfo { name: "coder".into(), namespace: "ns".into(), mcp_servers: vec![Glob::new("git*")], ..Default::default() };
        assert_eq!(agent_access(false, Some(&agent), "coder", "ns").unwrap_err(), AccessRefusal::NotLoaded);
        let gone = agent_access(true, None, "coder", "ns").unwrap_err();
        assert!(gone.to_string().contains("no longer managed"), "{gone}");
        assert_eq!(gone.http_status(), 403);
        let suspended = AgentInfo { suspended: true, ..agent.clone() };
        assert!(matches!(agent_access(true, Some(&suspended), "coder", "ns"), Err(AccessRefusal::Suspended { .. })));
        assert!(agent_access(true, Some(&agent), "coder", "ns").is_ok());
        assert_eq!(server_access(&agent, "github", true), Ok(()));
        assert_eq!(server_access(&agent, "github", false).unwrap_err().http_status(), 404);
        // Not in mcpServers: refused the same whether it exists or not (no probing).
        assert_eq!(server_access(&agent, "db", true), server_access(&agent, "db", false));
        assert_eq!(server_access(&agent, "db", true).unwrap_err().http_status(), 403);
    }

    #[test]
    fn a_sidecar_speaks_only_as_its_agents_service_account() {
        let agent = AgentInfo { name: "coder".into(), namespace: "ns".into(), service_account: "coder".into(), ..Default::default() };
        assert_eq!(identity_refusal("system:serviceaccount:ns:coder", "ns", &agent), None);
        for other in ["system:serviceaccount:ns:deployer", "system:serviceaccount:other:coder", "admin", ""] {
            let why = identity_refusal(other, "ns", &agent).unwrap_or_default();
            assert!(why.contains("ManagedAgent ns/coder") && why.contains("\"coder\""), "{other}: {why}");
        }
    }
}
