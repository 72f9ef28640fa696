//! Transparent mode's listener: connections the pod's iptables redirect sent here, routed by the
//! destination the agent dialled (`SO_ORIGINAL_DST`). An MCP server's address is served exactly
//! as `/mcp/<server>` ([`crate::server::handle_redirected`]); other destinations are relayed
//! untouched or refused, as the agent says; TLS to an MCP address is refused (it cannot be read).

use crate::state::Sidecar;
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tollgate_core::k8s::transparent::{self, ConnectionRefusal, Route};
use tracing::Instrument;

/// The MCP servers' addresses (names resolved, and the pods of those that are Services), found
/// again on every snapshot swap, every slice change and every [`RESOLVE_EVERY`] (a name may come
/// to point elsewhere). None until the policies have loaded and the addresses were found once.
pub type Targets = ArcSwap<Option<Vec<(SocketAddr, String)>>>;

const RESOLVE_EVERY: Duration = Duration::from_secs(30);

pub async fn serve(addr: SocketAddr, sc: Arc<Sidecar>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the redirect port {addr}"))?;
    tracing::info!(%addr, "transparent mode: redirected connections accepted");
    let targets = Arc::new(Targets::from_pointee(None));
    tokio::spawn(resolve_targets(sc.clone(), targets.clone()));
    let mut own = vec![addr, sc.config.listen, sc.config.admin_addr];
    own.dedup();
    let own: Arc<[SocketAddr]> = own.into();
    loop {
        let (stream, peer) = tollgate_runtime::accept(&listener).await;
        let _ = stream.set_nodelay(true);
        let original = original_destination(&stream);
        let span = tracing::info_span!("redirected", %peer, original = ?original);
        let targets = targets.load_full();
        let refuse_others = sc.snapshot.load().refuse_other_destinations;
        let route = match transparent::route(original, targets.as_deref(), &own, refuse_others) {
            Route::Mcp(servers) => Ok(Some(servers.into_iter().map(str::to_owned).collect::<Vec<_>>())),
            Route::PassThrough => Ok(None),
            Route::Refuse(r) => Err(r),
        };
        let sc = sc.clone();
        tokio::spawn(
            async move {
                match route {
                    Ok(Some(servers)) => serve_mcp(stream, sc, servers).await,
                    Ok(None) => relay(stream, original, &sc).await,
                    Err(r) => refuse(&sc, &r),
                }
            }
            .instrument(span),
        );
    }
}

fn refuse(sc: &Sidecar, refusal: &ConnectionRefusal) {
    tracing::warn!(refusal = %refusal, "redirected connection refused");
    sc.metrics.redirected(refusal.label());
}

async fn serve_mcp(stream: TcpStream, sc: Arc<Sidecar>, servers: Vec<String>) {
    // A client speaks first in HTTP; one that says nothing is dropped like a slow header.
    let mut first = [0u8; 1];
    let wait = Duration::from_secs(sc.config.header_read_timeout_seconds.max(1));
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    if transparent::is_tls_handshake(&first) {
        return refuse(&sc, &ConnectionRefusal::Encrypted(servers.join(", ")));
    }
    sc.metrics.redirected("mcp");
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(wait);
    let servers: Arc<[String]> = servers.into();
    let service = hyper::service::service_fn(move |req| crate::server::handle_redirected(req, sc.clone(), servers.clone()));
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

async fn relay(mut stream: TcpStream, original: Option<SocketAddr>, sc: &Sidecar) {
    let Some(original) = original else { return };
    // The sidecar's own connections are exempt from the redirect (its UID), so this cannot loop.
    match TcpStream::connect(original).await {
        Ok(mut upstream) => {
            sc.metrics.redirected("passthrough");
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        }
        Err(e) => {
            tracing::info!(%original, error = %e, "redirected connection: destination unreachable");
            sc.metrics.redirected("unreachable");
        }
    }
}

/// Where the agent meant to connect, as the redirect recorded it; none for a connection that was
/// not redirected.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => {
            let a = getsockopt(stream, sockopt::OriginalDst).ok()?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        SocketAddr::V6(_) => {
            let a = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
    }
}

/// Keeps the MCP servers' addresses current: what their names resolve to, and the pods behind
/// those that are cluster Services (an agent may dial a pod's address instead of the Service's).
/// Names are resolved, and the slices of Services in other namespaces listed, on every swap and
/// every [`RESOLVE_EVERY`]; a change of the agent's namespace's slices (watched) only merges again.
async fn resolve_targets(sc: Arc<Sidecar>, targets: Arc<Targets>) {
    let mut swaps = sc.snapshot_swapped.subscribe();
    let (slice_changed, mut slice_changes) = tokio::sync::mpsc::channel::<()>(1);
    let local = Api::<EndpointSlice>::namespaced(sc.client.clone(), &sc.config.namespace);
    let slices = tollgate_runtime::watch::reflect(local, watcher::Config::default(), &slice_changed);
    let mut found: Option<Found> = None;
    let mut full = true;
    loop {
        let snapshot = sc.snapshot.load_full();
        if snapshot.loaded && slices.wait_until_ready().await.is_ok() {
            if full || found.is_none() {
                let servers: Vec<(String, String)> = snapshot.servers.values().map(|s| (s.name.clone(), s.url.clone())).collect();
                let named = resolve_names(&servers).await;
                let remote = other_namespaces_slices(&sc, &servers).await;
                found = Some(Found { servers, named, remote });
            }
            if let Some(Found { servers, named, remote }) = &found {
                let local = slices.state();
                let known: Vec<&EndpointSlice> = local.iter().map(AsRef::as_ref).chain(remote).collect();
                let mut resolved = named.clone();
                resolved.extend(transparent::service_targets(servers, &sc.config.namespace, &known));
                targets.store(Arc::new(Some(resolved)));
            }
        }
        full = tokio::select! {
            r = swaps.changed() => if r.is_err() { return } else { true },
            Some(()) = slice_changes.recv() => false,
            () = tokio::time::sleep(RESOLVE_EVERY) => true,
        };
    }
}

/// What the last full pass found: the servers `(name, url)`, their names' addresses, and the
/// slices of their Services in other namespaces.
struct Found {
    servers: Vec<(String, String)>,
    named: Vec<(SocketAddr, String)>,
    remote: Vec<EndpointSlice>,
}

async fn resolve_names(servers: &[(String, String)]) -> Vec<(SocketAddr, String)> {
    let mut resolved = Vec::new();
    for (name, url) in servers {
        let Some((host, port)) = transparent::url_host_port(url) else { continue };
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addrs) => resolved.extend(addrs.map(|a| (a, name.clone()))),
            Err(e) => tracing::warn!(server = name, host, error = %e, "transparent mode: cannot resolve an MCP server's address"),
        }
    }
    resolved
}

/// The slices of Services in other namespaces that servers' URLs name. One that cannot be
/// listed is said in the log: its pods' addresses are then not known to be MCP servers.
async fn other_namespaces_slices(sc: &Sidecar, servers: &[(String, String)]) -> Vec<EndpointSlice> {
    let mut wanted: Vec<(String, String)> =
        servers.iter().filter_map(|(_, url)| transparent::cluster_service(url, &sc.config.namespace)).filter(|(ns, _)| *ns != sc.config.namespace).collect();
    wanted.sort();
    wanted.dedup();
    let mut out = Vec::new();
    for (ns, svc) in wanted {
        let api = Api::<EndpointSlice>::namespaced(sc.client.clone(), &ns);
        match api.list(&ListParams::default().labels(&format!("{}={svc}", transparent::SERVICE_NAME_LABEL))).await {
            Ok(list) => out.extend(list.items),
            Err(e) => tracing::warn!(namespace = ns, service = svc, error = %e, "transparent mode: cannot list an MCP server's endpoints"),
        }
    }
    out
}
