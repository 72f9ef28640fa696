//! A real PostgreSQL (the machine's, e.g. /usr/lib/postgresql/15) for the gateway's ledger:
//! a fresh cluster per use, run as the `postgres` user (it refuses root), on a loopback port,
//! trust authentication, gone when dropped.

use crate::child::Process;
use crate::components::free_ports;
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Postgres {
    _process: Process,
    dir: PathBuf,
    pub port: u16,
}

/// The directory of `initdb` and `postgres`: `TOLLGATE_POSTGRES_BIN`, else the newest under
/// /usr/lib/postgresql.
fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("TOLLGATE_POSTGRES_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql); set TOLLGATE_POSTGRES_BIN")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().context("no initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

impl Postgres {
    pub fn start(log_dir: &Path) -> Result<Postgres> {
        let bin = bin_dir()?;
        // Not under the control plane's directory: the postgres user must be able to reach it.
        let dir = PathBuf::from(format!("/tmp/tollgate-pg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir)?;
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status()?;
        ensure!(chown.success(), "chown of {} to postgres failed", dir.display());
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb")).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"]).arg(&data).output()?;
        ensure!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let [port] = free_ports::<1>()?;
        let mut cmd = as_postgres(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100", "-c", "fsync=off", "-k"])
            .arg(&dir);
        let process = Process::spawn(cmd, log_dir.join(format!("postgres-{port}.log")))?;
        crate::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            if let Some(s) = process.exited() {
                bail!("postgres exited ({s}): {}", process.log_tail());
            }
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(()))
        })?;
        Ok(Postgres { _process: process, dir, port })
    }

    /// What `sql` selects, as `psql -At` prints it (a line per row, `|` between columns).
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = Command::new(bin_dir()?.join("psql"))
            .args(["-At", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .output()?;
        ensure!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The process goes first (its field is dropped after this), then its files.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{nanos:08x}")
}
