//! HTTP as a hostile client speaks it, for what no HTTP library will send.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A POST to `path` that announces a 1 KiB JSON body and sends 16 bytes of it, then nothing;
/// the status line of whatever answer comes within `wait` (empty when the server only closed).
pub fn dribble(port: u16, path: &str, headers: &[(&str, &str)], wait: Duration) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(wait))?;
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1024\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n{\"model\": \"fast\",");
    s.write_all(head.as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).with_context(|| format!("POST {path}: no answer within {wait:?} to a body that never ends"))?;
    Ok(line.trim_end().to_owned())
}

/// Connects and sends nothing; how long until the server closes the connection (`None` when it
/// is still open after `wait`).
pub fn silent(port: u16, wait: Duration) -> Result<Option<Duration>> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(wait))?;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    Ok(match s.read(&mut buf) {
        Ok(_) => Some(started.elapsed()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
        Err(_) => Some(started.elapsed()),
    })
}
