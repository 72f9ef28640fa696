//! What every Tollgate process shares: the admin port, logging, how it is asked to stop, and who
//! it is to the API server.

pub mod accept;
pub mod admin;
pub mod events;
pub mod kube_client;
pub mod otel;
pub mod telemetry;
pub mod watch;
pub mod write_deadline;

pub use accept::accept;

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

/// Who this process is, as the API server sees its credentials (a SelfSubjectReview).
pub async fn whoami(client: &kube::Client) -> anyhow::Result<String> {
    use anyhow::Context;
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    let review =
        api.create(&Default::default(), &SelfSubjectReview::default()).await.context("asking the API server who this process is (SelfSubjectReview)")?;
    review.status.and_then(|s| s.user_info).and_then(|u| u.username).context("the SelfSubjectReview has no user name")
}
