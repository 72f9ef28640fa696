//! A network namespace of the test's own (`unshare -n`), as a pod has: processes run in it
//! through `nsenter`, documentation-range addresses (192.0.2.0/24) go on its `lo`, and portals
//! join single loopback ports across it: the API server brought in (a sidecar inside must reach
//! it), a port inside exposed to the host (the test reads a sidecar's `/readyz` and `/metrics`).
//!
//! A portal is a listener created by a thread that entered the other namespace: a socket stays in
//! the namespace it was created in, whichever thread later uses it.

use crate::child::Process;
use anyhow::{Context, Result, bail, ensure};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

pub struct NetNs {
    /// Holds the namespace open; it goes when this process is stopped.
    holder: Process,
    path: PathBuf,
}

impl NetNs {
    /// A new namespace with `lo` up, its holder logging under `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<NetNs> {
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sleep", "86400"]);
        let holder = Process::spawn(cmd, dir.join(format!("netns-{name}.log")))?;
        let pid = holder.pid().context("the namespace holder has no pid")?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let own = std::fs::read_link("/proc/self/ns/net")?;
        crate::basics::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            if let Some(s) = holder.exited() {
                bail!("unshare -n exited ({s}): {}", holder.log_tail());
            }
            Ok(std::fs::read_link(&path).ok().filter(|l| *l != own).map(|_| ()))
        })?;
        let ns = NetNs { holder, path };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display())).arg("--").arg(program);
        cmd
    }

    /// Runs a command inside the namespace; it must succeed. Its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("no command")?;
        let out = self.command(program).args(rest).output().with_context(|| format!("running {args:?} in the namespace"))?;
        ensure!(out.status.success(), "{args:?} in the namespace failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread inside the namespace.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let file = std::fs::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("entering the network namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }

    /// The host's `127.0.0.1:port` reachable at `127.0.0.1:port` inside.
    pub fn bring_in(&self, port: u16) -> Result<()> {
        self.bring_in_at(std::net::Ipv4Addr::LOCALHOST.into(), port)
    }

    /// The host's `127.0.0.1:port` reachable at `ip:port` inside (`ip` is added to `lo`), as a
    /// cluster network makes another pod's address reachable.
    pub fn bring_in_at(&self, ip: std::net::IpAddr, port: u16) -> Result<()> {
        self.bring_in_as(ip, port, port)
    }

    /// The host's `127.0.0.1:host_port` reachable at `ip:port` inside, as a Service's port
    /// reaches a pod's.
    pub fn bring_in_as(&self, ip: std::net::IpAddr, port: u16, host_port: u16) -> Result<()> {
        if !ip.is_loopback() {
            let cidr = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
            let addrs = self.run(&["ip", "-o", "addr", "show", "dev", "lo"])?;
            if !addrs.contains(&format!(" {cidr} ")) {
                self.run(&["ip", "addr", "add", &cidr, "dev", "lo"])?;
            }
        }
        let listener = self.inside(move || TcpListener::bind((ip, port)).with_context(|| format!("binding {ip}:{port} inside")))?;
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(out) = TcpStream::connect(("127.0.0.1", host_port)) {
                    splice(conn, out);
                }
            }
        });
        Ok(())
    }

    /// `127.0.0.1:port` inside reachable from the host; the host port.
    pub fn expose(&self, port: u16) -> Result<u16> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let host_port = listener.local_addr()?.port();
        // A thread that stays inside makes the connections, on request.
        let (dial, requests) = mpsc::channel::<mpsc::Sender<std::io::Result<TcpStream>>>();
        let file = std::fs::File::open(&self.path)?;
        std::thread::spawn(move || {
            if nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            for answer in requests {
                let _ = answer.send(TcpStream::connect(("127.0.0.1", port)));
            }
        });
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (tx, rx) = mpsc::channel();
                if dial.send(tx).is_err() {
                    return;
                }
                if let Ok(Ok(inner)) = rx.recv() {
                    splice(conn, inner);
                }
            }
        });
        Ok(host_port)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.holder.stop();
    }
}

/// Copies both ways between two connections until each side has finished.
fn splice(a: TcpStream, b: TcpStream) {
    let one_way = |from: TcpStream, to: TcpStream| {
        std::thread::spawn(move || {
            let (mut from, mut to) = (from, to);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        one_way(a, b2);
        one_way(b, a2);
    }
}
