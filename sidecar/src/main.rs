//! `tollgate-sidecar`: the MCP firewall beside an agent.

use clap::Parser;
use std::process::ExitCode;

// The CEL interpreter and JSON handling allocate per call; glibc malloc costs a third of a decision.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = tollgate_sidecar::Config::parse();
    tollgate_runtime::telemetry::init(config.log_json);
    match tollgate_sidecar::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sidecar failed");
            ExitCode::FAILURE
        }
    }
}
