//! `tollgate-gateway`: the model gateway.

use clap::Parser;
use std::process::ExitCode;

// Every call parses and writes JSON and allocates for its ledger row and audit record; glibc's
// malloc and free were a seventh of the gateway's CPU in its profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = tollgate_gateway::Config::parse();
    let telemetry = tollgate_runtime::telemetry::init(config.log_json, "tollgate-gateway");
    let code = match tollgate_gateway::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
