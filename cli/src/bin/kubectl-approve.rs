//! `kubectl-approve`: found on PATH by kubectl, so `kubectl approve ...` runs it. The logic is in
//! `tollgate_cli::approve`.

fn main() {
    // One process-wide TLS provider; Err only means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::process::exit(tollgate_cli::approve::main(std::env::args_os().collect()));
}
