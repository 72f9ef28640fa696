//! `tollgate-gateway`: the model gateway.

use clap::Parser;
use std::process::ExitCode;

// Every call parses and writes JSON and allocates for its ledger row and audit record; glibc's
// malloc and free were a seventh of the gateway's CPU in its profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = tollgate_gateway::Config::parse();
    let telemetry = tollgate_runtime::telemetry::init(config.log_json, "tollgate-gateway");
    // One thread per CPU; on one CPU, a single thread (tollgate_runtime::run_on_threads).
    let threads = match config.worker_threads {
        0 => tollgate_runtime::cpus(),
        n => n,
    };
    let code = tollgate_runtime::run_on_threads(threads, "gateway failed", tollgate_gateway::run(config));
    telemetry.shutdown();
    code
}
