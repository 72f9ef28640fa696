//! `tollgate-sidecar`: the MCP firewall beside an agent.

use clap::Parser;
use std::process::ExitCode;

// The CEL interpreter and JSON handling allocate per call; glibc malloc costs a third of a decision.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Transparent mode's init step is this binary too, so the image holds one program.
    if std::env::args_os().nth(1).is_some_and(|a| a == "redirect") {
        let args = tollgate_sidecar::redirect::RedirectArgs::parse_from(std::env::args_os().skip(1));
        return match tollgate_sidecar::redirect::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate-sidecar redirect: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = tollgate_sidecar::Config::parse();
    let telemetry = tollgate_runtime::telemetry::init(config.log_json, "tollgate-sidecar");
    // One thread by default, as a sidecar has a fraction of a core.
    let threads = config.worker_threads;
    let code = tollgate_runtime::run_on_threads(threads, "sidecar failed", tollgate_sidecar::run(config));
    telemetry.shutdown();
    code
}
