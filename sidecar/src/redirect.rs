//! `tollgate-sidecar redirect`: transparent mode's init step. Run once per pod, before any other
//! container, with `NET_ADMIN`: installs the rules of [`tollgate_core::k8s::transparent::Redirect`]
//! with `iptables` and `ip6tables` in the pod's network namespace. Idempotent (a restarted init
//! container replaces its rules), and the jump from `OUTPUT` comes last, so the rules never take
//! effect half-installed. Any failure fails the pod: an agent must not start unredirected.

use anyhow::{Context, Result, bail};
use std::process::Command;
use tollgate_core::k8s::transparent::{CHAIN, Cidr, Family, Redirect};

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "tollgate-sidecar redirect", about = "Install transparent mode's iptables rules (init container, NET_ADMIN)")]
pub struct RedirectArgs {
    /// The sidecar's redirect port (its `TOLLGATE_TRANSPARENT_LISTEN`).
    #[arg(long, env = "TOLLGATE_REDIRECT_PORT", default_value_t = 15006)]
    pub port: u16,
    /// The sidecar's UID: its own connections are never redirected.
    #[arg(long, env = "TOLLGATE_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Destinations never redirected (comma-separated CIDRs).
    #[arg(long, env = "TOLLGATE_EXCLUDE_CIDRS", value_delimiter = ',')]
    pub exclude_cidrs: Vec<String>,
    /// Destination ports never redirected (comma-separated).
    #[arg(long, env = "TOLLGATE_EXCLUDE_PORTS", value_delimiter = ',')]
    pub exclude_ports: Vec<u16>,
    /// Skip IPv6 (only where the pod has no IPv6 at all: otherwise it is a way around the sidecar).
    #[arg(long, env = "TOLLGATE_REDIRECT_NO_IPV6")]
    pub no_ipv6: bool,
}

impl RedirectArgs {
    fn plan(&self) -> Result<Redirect> {
        let exclude_cidrs =
            self.exclude_cidrs.iter().filter(|c| !c.trim().is_empty()).map(|c| c.parse::<Cidr>()).collect::<Result<Vec<_>, _>>().context("--exclude-cidrs")?;
        Ok(Redirect { port: self.port, proxy_uid: self.proxy_uid, exclude_cidrs, exclude_ports: self.exclude_ports.clone() })
    }
}

pub fn run(args: &RedirectArgs) -> Result<()> {
    let plan = args.plan()?;
    install("iptables", &plan, Family::V4)?;
    if !args.no_ipv6 {
        install("ip6tables", &plan, Family::V6)?;
    }
    println!("transparent mode: outbound TCP redirected to port {} (except UID {})", plan.port, plan.proxy_uid);
    Ok(())
}

fn install(tool: &str, plan: &Redirect, family: Family) -> Result<()> {
    let nat = |args: &[&str]| -> Result<std::process::Output> {
        let out = Command::new(tool)
            .args(["-w", "5", "-t", "nat"])
            .args(args)
            .output()
            .with_context(|| format!("running {tool} (is it installed in the sidecar image?)"))?;
        Ok(out)
    };
    let must = |args: &[&str]| -> Result<()> {
        let out = nat(args)?;
        println!("{tool} -t nat {}", args.join(" "));
        if !out.status.success() {
            bail!("{tool} -t nat {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    // A rerun finds the chain: it is emptied and filled again.
    if !nat(&["-N", CHAIN])?.status.success() {
        must(&["-F", CHAIN])?;
    }
    for rule in plan.rules(family) {
        let mut args = vec!["-A", CHAIN];
        args.extend(rule.iter().map(String::as_str));
        must(&args)?;
    }
    let jump = ["OUTPUT", "-p", "tcp", "-j", CHAIN];
    let mut check = vec!["-C"];
    check.extend(jump);
    if !nat(&check)?.status.success() {
        let mut add = vec!["-A"];
        add.extend(jump);
        must(&add)?;
    }
    Ok(())
}
