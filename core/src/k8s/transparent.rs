//! Transparent mode (DESIGN §3.6): the iptables rules an agent pod's init step installs, and what
//! the sidecar does with a connection the rules sent it, by the destination the agent dialled.
//! Both pure: the init subcommand runs the rules, the sidecar's listener asks [`route`].

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The nat chain holding Tollgate's rules; `OUTPUT` jumps to it for TCP.
pub const CHAIN: &str = "TOLLGATE_OUTPUT";

/// An address range, `addr/len` (a bare address is its own /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an address range: expected addr/len such as 10.0.0.0/8 or fd00::/8")]
    Syntax(String),
    #[error("{0:?} has a prefix longer than its address")]
    Length(String),
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.trim().parse::<u8>().map_err(|_| CidrError::Syntax(s.to_owned()))?,
        };
        if len > max {
            return Err(CidrError::Length(s.to_owned()));
        }
        Ok(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the init step is told: where the sidecar listens for redirected connections, whose
/// traffic is the sidecar's own, and what never goes through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub port: u16,
    pub proxy_uid: u32,
    pub exclude_cidrs: Vec<Cidr>,
    pub exclude_ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Redirect {
    /// The rules appended to [`CHAIN`] (which `OUTPUT` jumps to for TCP), in order: the sidecar's
    /// own connections, loopback and the exclusions return; everything else is redirected.
    pub fn rules(&self, family: Family) -> Vec<Vec<String>> {
        let s = |v: &str| v.to_owned();
        let mut rules = vec![vec![s("-m"), s("owner"), s("--uid-owner"), self.proxy_uid.to_string(), s("-j"), s("RETURN")]];
        let loopback = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        };
        rules.push(vec![s("-d"), s(loopback), s("-j"), s("RETURN")]);
        for c in self.exclude_cidrs.iter().filter(|c| c.addr.is_ipv4() == (family == Family::V4)) {
            rules.push(vec![s("-d"), c.to_string(), s("-j"), s("RETURN")]);
        }
        for p in &self.exclude_ports {
            rules.push(vec![s("-p"), s("tcp"), s("--dport"), p.to_string(), s("-j"), s("RETURN")]);
        }
        rules.push(vec![s("-p"), s("tcp"), s("-j"), s("REDIRECT"), s("--to-ports"), self.port.to_string()]);
        rules
    }
}

/// What the sidecar does with a redirected connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// MCP servers' address: served and decided as on `/mcp/<server>`, the server being the one
    /// whose URL path the request names (several servers may share a host and port).
    Mcp(Vec<&'a str>),
    /// Any other destination: relayed untouched.
    PassThrough,
    /// Closed (logged and counted).
    Refuse(ConnectionRefusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    #[error("the sidecar has not resolved its MCP servers' addresses yet; nothing is relayed until it has")]
    NotReady,
    #[error("the connection was not redirected (no original destination): nothing to relay it to")]
    NotRedirected,
    #[error("{0} is the sidecar itself: relaying it would loop")]
    Loop(SocketAddr),
    #[error("{0} is not an MCP server, and this agent's other destinations are refused (ManagedAgent.spec.injection.otherDestinations)")]
    OtherDestination(SocketAddr),
    #[error("encrypted traffic to MCP server {0} cannot be inspected: speak plain HTTP to its address, the sidecar originates TLS upstream")]
    Encrypted(String),
}

impl ConnectionRefusal {
    /// A metric label: one per kind, never an address.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectionRefusal::NotReady => "refused_not_ready",
            ConnectionRefusal::NotRedirected => "refused_not_redirected",
            ConnectionRefusal::Loop(_) => "refused_loop",
            ConnectionRefusal::OtherDestination(_) => "refused_other_destination",
            ConnectionRefusal::Encrypted(_) => "refused_encrypted",
        }
    }
}

/// How a connection that reached the redirect port is handled. `original` is the destination
/// the agent dialled (none when the connection was not redirected, i.e. dialled the port
/// directly); `servers` the MCP servers' addresses (none until they were resolved: then nothing
/// may pass, as it might be one); `own` the sidecar's listening addresses.
pub fn route<'a>(original: Option<SocketAddr>, servers: Option<&'a [(SocketAddr, String)]>, own: &[SocketAddr], refuse_others: bool) -> Route<'a> {
    let Some(servers) = servers else {
        return Route::Refuse(ConnectionRefusal::NotReady);
    };
    let Some(original) = original else {
        return Route::Refuse(ConnectionRefusal::NotRedirected);
    };
    if own.iter().any(|o| o.port() == original.port() && (o.ip() == original.ip() || o.ip().is_unspecified() || original.ip().is_loopback())) {
        return Route::Refuse(ConnectionRefusal::Loop(original));
    }
    let names: Vec<&str> = servers.iter().filter(|(a, _)| *a == original).map(|(_, n)| n.as_str()).collect();
    if !names.is_empty() {
        return Route::Mcp(names);
    }
    if refuse_others {
        return Route::Refuse(ConnectionRefusal::OtherDestination(original));
    }
    Route::PassThrough
}

/// Whether a connection's first bytes are a TLS handshake record: encrypted traffic to an MCP
/// server cannot be inspected, so it is refused (the agent speaks plain HTTP to the server's
/// address and the sidecar originates TLS upstream).
/// A record type of 22 (handshake) is enough: no HTTP request starts with that byte.
pub fn is_tls_handshake(first: &[u8]) -> bool {
    first.first() == Some(&0x16)
}

/// The host and port a URL names (`http` defaults to 80, `https` to 443); None when it is not an
/// absolute http(s) URL.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None if !authority.is_empty() => Some((authority.to_owned(), default)),
        None => None,
    }
}

/// The cluster Service a URL's host names, `(namespace, name)`, as the pod's DNS search path
/// resolves it: `svc` (the agent's namespace), `svc.ns`, `svc.ns.svc` and `svc.ns.svc.<domain>`.
/// An address names no Service; a two-label name may be an outside domain, which only means its
/// endpoints are looked for in a namespace that has none.
pub fn cluster_service(url: &str, namespace: &str) -> Option<(String, String)> {
    let (host, _) = url_host_port(url)?;
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    match labels.as_slice() {
        [svc] => Some((namespace.to_owned(), (*svc).to_owned())),
        [svc, ns] => Some(((*ns).to_owned(), (*svc).to_owned())),
        [svc, ns, "svc", ..] => Some(((*ns).to_owned(), (*svc).to_owned())),
        _ => None,
    }
}

/// The label an EndpointSlice names its Service by.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every address and port an EndpointSlice lists: the pods behind a Service, which an agent can
/// dial directly instead of the Service's name. Ready or not: a pod that is not ready yet still
/// accepts connections. Every TCP port of the slice, as which of them carries MCP is the
/// Service's business: a Service's other ports are decided as MCP too (closed, not open).
pub fn slice_addresses(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Vec<SocketAddr> {
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| p.port.and_then(|n| u16::try_from(n).ok()))
        .collect();
    let ips = slice.endpoints.iter().flat_map(|e| e.addresses.iter()).filter_map(|a| a.parse::<IpAddr>().ok());
    ips.flat_map(|ip| ports.iter().map(move |p| SocketAddr::new(ip, *p))).collect()
}

/// The pod addresses of the MCP servers that are cluster Services: for each `(server, url)`,
/// every address of the slices (of any namespace) that name its Service.
pub fn service_targets(servers: &[(String, String)], namespace: &str, slices: &[&k8s_openapi::api::discovery::v1::EndpointSlice]) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    for (name, url) in servers {
        let Some((ns, svc)) = cluster_service(url, namespace) else { continue };
        let theirs = slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str()) && s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&svc)
        });
        out.extend(theirs.flat_map(|s| slice_addresses(s)).map(|a| (a, name.clone())));
    }
    out
}

/// The path part of a URL (`/` when it has none).
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].split(['?', '#']).next().unwrap_or("/"),
        None => "/",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect { port: 15006, proxy_uid: 65532, exclude_cidrs: vec!["10.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()], exclude_ports: vec![53] }
    }

    #[test]
    fn rules_exempt_the_sidecar_loopback_and_exclusions_then_redirect() {
        let v4: Vec<String> = redirect().rules(Family::V4).iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            v4,
            [
                "-m owner --uid-owner 65532 -j RETURN",
                "-d 127.0.0.0/8 -j RETURN",
                "-d 10.96.0.0/12 -j RETURN",
                "-p tcp --dport 53 -j RETURN",
                "-p tcp -j REDIRECT --to-ports 15006",
            ]
        );
        let v6: Vec<String> = redirect().rules(Family::V6).iter().map(|r| r.join(" ")).collect();
        assert_eq!(v6[1], "-d ::1/128 -j RETURN");
        assert_eq!(v6[2], "-d fd00::/8 -j RETURN");
        assert_eq!(v6.len(), 5);
    }

    #[test]
    fn cidrs_parse_or_say_why_not() {
        assert_eq!("192.0.2.0/24".parse::<Cidr>().unwrap().to_string(), "192.0.2.0/24");
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Length(_))));
        assert!(matches!("ten/8".parse::<Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::Syntax(_))));
    }

    #[test]
    fn connections_route_by_the_destination_dialled() {
        let servers = vec![("192.0.2.10:8080".parse().unwrap(), "files".to_owned()), ("192.0.2.10:8080".parse().unwrap(), "wiki".to_owned())];
        let own: Vec<SocketAddr> = vec!["127.0.0.1:15006".parse().unwrap(), "127.0.0.1:15001".parse().unwrap()];
        assert_eq!(route(Some("192.0.2.10:8080".parse().unwrap()), Some(&servers), &own, false), Route::Mcp(vec!["files", "wiki"]));
        // Another port of the same host is another service.
        assert_eq!(route(Some("192.0.2.10:9090".parse().unwrap()), Some(&servers), &own, false), Route::PassThrough);
        assert!(matches!(route(Some("192.0.2.99:443".parse().unwrap()), Some(&servers), &own, true), Route::Refuse(_)));
        assert!(matches!(route(None, Some(&servers), &own, false), Route::Refuse(ConnectionRefusal::NotRedirected)));
        // Before the servers are resolved, a connection might be to one of them.
        assert!(matches!(route(Some("192.0.2.99:443".parse().unwrap()), None, &own, false), Route::Refuse(ConnectionRefusal::NotReady)));
        assert!(matches!(route(Some("127.0.0.1:15006".parse().unwrap()), Some(&servers), &own, false), Route::Refuse(ConnectionRefusal::Loop(_))));
    }

    #[test]
    fn tls_is_told_from_plain_http() {
        assert!(is_tls_handshake(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_tls_handshake(b"POST /mcp HTTP/1.1\r\n"));
        assert!(!is_tls_handshake(b""));
    }

    #[test]
    fn a_url_names_the_cluster_service_its_host_resolves_to() {
        let svc = |url: &str| cluster_service(url, "team");
        assert_eq!(svc("http://files:8080/mcp"), Some(("team".into(), "files".into())));
        assert_eq!(svc("http://files.tools/mcp"), Some(("tools".into(), "files".into())));
        assert_eq!(svc("http://files.tools.svc:80/mcp"), Some(("tools".into(), "files".into())));
        assert_eq!(svc("https://files.tools.svc.cluster.local./mcp"), Some(("tools".into(), "files".into())));
        assert_eq!(svc("http://192.0.2.10:8080/mcp"), None);
        assert_eq!(svc("http://[fd00::1]:81/mcp"), None);
        assert_eq!(svc("https://mcp.example.co.uk/mcp"), None);
    }

    #[test]
    fn a_services_pods_are_its_mcp_servers_addresses_at_every_tcp_port() {
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "files-x1", "namespace": "team", "labels": {"kubernetes.io/service-name": "files"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": false}}, {"addresses": ["10.1.0.6", "not-an-ip"]}],
            "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": 9090}]
        }))
        .unwrap();
        let other_ns: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "files-y", "namespace": "elsewhere", "labels": {"kubernetes.io/service-name": "files"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.9.9.9"]}], "ports": [{"port": 8080}]
        }))
        .unwrap();
        let servers = vec![("files".to_owned(), "http://files:80/mcp".to_owned()), ("web".to_owned(), "https://mcp.example.com/mcp".to_owned())];
        let targets = service_targets(&servers, "team", &[&slice, &other_ns]);
        let got: Vec<String> = targets.iter().map(|(a, n)| format!("{a} {n}")).collect();
        assert_eq!(got, ["10.1.0.5:8080 files", "10.1.0.5:9090 files", "10.1.0.6:8080 files", "10.1.0.6:9090 files"]);
    }

    #[test]
    fn urls_name_their_host_port_and_path() {
        assert_eq!(url_host_port("http://192.0.2.10:8080/mcp"), Some(("192.0.2.10".into(), 8080)));
        assert_eq!(url_host_port("https://mcp.example.com/mcp"), Some(("mcp.example.com".into(), 443)));
        assert_eq!(url_host_port("http://files.tools.svc"), Some(("files.tools.svc".into(), 80)));
        assert_eq!(url_host_port("http://[fd00::1]:81/x"), Some(("fd00::1".into(), 81)));
        assert_eq!(url_host_port("ftp://x/"), None);
        assert_eq!(url_host_port("http://x:notaport/"), None);
        assert_eq!(url_path("http://a:1/mcp?x=1"), "/mcp");
        assert_eq!(url_path("http://a:1"), "/");
    }
}
