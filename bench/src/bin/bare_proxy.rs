//! A bare hyper reverse proxy: reads the body, forwards it, streams the answer back. The baseline
//! the sidecar's and the gateway's costs are compared with (docs/design.md §5).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Single-threaded, as the sidecar runs by default: both are pinned to one CPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let upstream = args.next().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("{}", listener.local_addr()?);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let mut up = Request::post(&upstream).body(Full::new(body)).unwrap_or_default();
                    for name in ["content-type", "accept"] {
                        if let Some(v) = parts.headers.get(name) {
                            up.headers_mut().insert(name, v.clone());
                        }
                    }
                    // Streamed as it comes, as a proxy in front of a model's stream must.
                    Ok::<_, Infallible>(match client.request(up).await {
                        Ok(r) => r.map(BodyExt::boxed),
                        Err(_) => Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()),
                    })
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
