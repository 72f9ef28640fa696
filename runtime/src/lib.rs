//! What every Tollgate process shares: the admin port, logging, and how it is asked to stop.

pub mod admin;
pub mod telemetry;

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends before it kills a container).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
