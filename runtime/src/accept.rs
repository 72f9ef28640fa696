//! Taking connections so that no client can stop a server by how it connects. A connection that
//! failed before it was taken (reset, aborted) is skipped. Running out of file descriptors or
//! memory, which any client can bring about by opening connections and holding them, waits and
//! tries again, with backoff: a listener that returned the error would end the server and, with
//! it, the process: every agent's model calls, for what one agent did.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The next connection `listener` can take.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if of_one_connection(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, local = ?listener.local_addr().ok(), retry_ms = backoff.as_millis(), "cannot take connections for now; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn of_one_connection(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::Interrupted)
}
