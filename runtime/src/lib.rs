//! What every Tollgate process shares: the admin port, logging, how it is asked to stop, and who
//! it is to the API server.

pub mod accept;
pub mod admin;
pub mod events;
pub mod json_fields;
pub mod kube_client;
pub mod log_writer;
pub mod otel;
pub mod telemetry;
pub mod watch;
pub mod write_deadline;

pub use accept::accept;

/// Runs `serve` to its end on `threads` threads; the process's exit code, its error logged with
/// `failed`. One thread (or 0) runs everything on a single thread: on one CPU, a multi-threaded
/// runtime pays for waking a worker that then waits for that same CPU (a ninth more CPU a call
/// in the gateway's bench).
pub fn run_on_threads(threads: usize, failed: &str, serve: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{failed}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The CPUs this process may use: its affinity and its container's CPU limit, as the standard
/// library reads them.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

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
