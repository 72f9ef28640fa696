//! A TCP round-robin balancer on loopback: what a Service does for the replicas behind it. New
//! connections go to the next backend that accepts one (a dead replica is skipped, as its
//! endpoint would be dropped); [`Balancer::rotate`] closes every open connection, so a client
//! that keeps its connections (the API server does, to webhooks) dials again and meets the next
//! replica.

use anyhow::Result;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Balancer {
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl Balancer {
    /// Listens on `port`, in front of the `backends` (ports on loopback).
    pub fn start(port: u16, backends: Vec<u16>) -> Result<Balancer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let open = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (open2, stopped2) = (open.clone(), stopped.clone());
        std::thread::spawn(move || {
            let mut next = 0usize;
            for client in listener.incoming() {
                if stopped2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let picked = (0..backends.len()).find_map(|k| {
                    let i = (next + k) % backends.len();
                    TcpStream::connect(("127.0.0.1", backends[i])).ok().map(|s| (i, s))
                });
                let Some((i, upstream)) = picked else { continue };
                next = i + 1;
                if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
                    open2.lock().unwrap_or_else(|e| e.into_inner()).extend([c, u]);
                }
                pipe(client, upstream);
            }
        });
        Ok(Balancer { port, open, stopped })
    }

    /// Closes every open connection; the next ones go to the following backends.
    pub fn rotate(&self) {
        for s in self.open.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.rotate();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    std::thread::spawn(move || copy(a, b2));
    std::thread::spawn(move || copy(b, a2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
