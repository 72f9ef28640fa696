//! `tollgate-operator`: controllers for approvals and policies, and the validating webhook.

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // kube uses ring; install it once for the process before any TLS is set up.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = tollgate_operator::Config::parse();
    let telemetry = tollgate_runtime::telemetry::init(config.log_json, "tollgate-operator");
    let code = match tollgate_operator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
