//! The API server client every Tollgate process uses: kube's own stack (base URI, retries of
//! 429/503/504, credentials, impersonation headers, timeouts, rustls), over a hyper client whose HTTP/1.1 read buffer is
//! bounded. hyper grows a connection's read buffer to about 400 KiB while a burst of watch
//! events arrives and keeps it for the connection's life; a process holds one connection per
//! watch (the operator 13, each sidecar 6), so those buffers were a large part of what it kept.
//! A bounded buffer only means more reads per burst: a body passes through it in pieces. Few
//! idle connections are kept, for the same reason.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// hyper's smallest allowed is 8 KiB; 64 KiB holds a typical watch event whole.
const READ_BUFFER: usize = 64 * 1024;
/// Idle connections kept for the next request. hyper keeps every connection a burst opened
/// (one per request in flight) for 90 s, each with its buffers; the operator's first
/// reconcile of 2,000 objects left 60 and more. A watch holds its own connection, not counted here.
const IDLE: usize = 2;

/// The client for the credentials the environment gives (in-cluster, or `KUBECONFIG`).
pub async fn infer() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    build(config)
}

/// The client for `config`. A proxy or an exec credential plugin in it gets kube's own client:
/// it knows how to reach a proxy, and when an exec plugin's client certificate expires (kube
/// keeps that to its own builder).
pub fn build(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return Client::try_from(config);
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(tcp)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = hyper_util::client::legacy::Builder::new(TokioExecutor::new()).http1_max_buf_size(READ_BUFFER).pool_max_idle_per_host(IDLE).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
