//! The listener agents' SDKs call. On `stop` it takes no more connections and gives the calls in
//! progress (a stream included) up to `drain` to finish, so a rolling update settles them rather
//! than cutting them off.

use crate::state::GatewayState;
use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Builder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// Serves on `addr`, HTTPS when `tls` is given.
pub async fn serve(
    addr: SocketAddr,
    gw: Arc<GatewayState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, tls = tls.is_some(), "model gateway listening");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // HTTP/1 only, as the SDKs and Slack speak it: working out the version of a connection that
    // sends nothing has no deadline (it held the connection for ever), and HTTP/2 would let one
    // connection carry hundreds of request bodies at once.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(gw.config.header_read_timeout_seconds.max(1)));
    let builder: Arc<Builder> = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = tollgate_runtime::accept(&listener) => accepted,
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let (gw, builder, watcher, acceptor) = (gw.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        let write_deadline = Duration::from_secs(gw.config.client_write_seconds.max(1));
        let handshake_deadline = Duration::from_secs(gw.config.header_read_timeout_seconds.max(1));
        tokio::spawn(async move {
            // A client that stops reading (a stream, say) is cut off and its call settled.
            let stream = tollgate_runtime::write_deadline::WriteDeadline::new(stream, write_deadline);
            match acceptor {
                None => serve_one(stream, gw, &builder, watcher).await,
                // A handshake that never finishes holds nothing past the header deadline.
                Some(acceptor) => match tokio::time::timeout(handshake_deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_one(tls, gw, &builder, watcher).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "stopping: draining the calls in progress");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(seconds = drain.as_secs(), "calls still in progress after the drain period are cut off; they are settled as interrupted");
    }
    Ok(())
}

async fn serve_one<IO>(io: IO, gw: Arc<GatewayState>, builder: &Builder, watcher: hyper_util::server::graceful::Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, Infallible>(crate::forward::handle(req, gw).await) }
    });
    let _ = watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await;
}
