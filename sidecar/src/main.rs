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
    // One thread by default, as a sidecar has a fraction of a core: a multi-threaded runtime on
    // one CPU spends its time waking threads that then wait for the same CPU.
    let runtime = match config.worker_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(tollgate_sidecar::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sidecar failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
