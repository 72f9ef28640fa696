//! `tollgate`: offline tools. `validate` compiles policies as the admission webhook does; `eval`
//! decides one call as the sidecar would; `audit verify` checks an audit export's hash chain
//! (and, given them, the gateway's signed checkpoints); `audit shadow` lists what audited rules
//! and budgets would have done.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate_cli::offline;
use tollgate_core::policy::Action;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "Tollgate's offline policy tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile every ToolPolicy and ClusterToolPolicy in the files; report field paths of errors.
    Validate {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Decide one tool call against the policies, agents and workflows in the files.
    Eval {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        server: String,
        #[arg(long)]
        tool: String,
        /// The tool's arguments as a JSON object (a `justification` key is treated as DESIGN §3.1 rule 7 says).
        #[arg(long, default_value = "{}")]
        args: String,
        /// The cluster default for calls no policy decides.
        #[arg(long, default_value = "Allow", value_parser = tollgate_core::policy::parse_action)]
        cluster_default: Action,
    },
    /// The audit store's exports.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an export (`GET /audit/v1/export`, one JSON line per record):
    /// exit 0 when whole, 1 naming the first record that was changed, removed or reordered.
    /// With `--checkpoints` and `--key`, also against the gateway's signed checkpoints: a tail
    /// cut off or a chain recomputed is named too.
    Verify {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The checkpoints' ConfigMaps, as `kubectl get configmap -n tollgate-system -l
        /// tollgate.dev/audit-checkpoint -o json` writes them.
        #[arg(long, requires = "key")]
        checkpoints: Option<PathBuf>,
        /// The gateway's public key (base64), as its `Gateway`'s `status.auditPublicKey` says.
        #[arg(long, requires = "checkpoints")]
        key: Option<String>,
    },
    /// What audited rules and budgets would have done, grouped by rule, agent and tool: from an
    /// export, an answer of `GET /audit/v1/records?shadow=true`, or a sidecar's log (`-` reads
    /// standard input).
    Shadow {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

/// Records from an export or a sidecar's log (one JSON value per line), or a `records` answer.
fn records(file: &std::path::Path) -> Result<Vec<serde_json::Value>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    if let Ok(serde_json::Value::Object(mut answer)) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(serde_json::Value::Array(records)) = answer.remove("records")
    {
        return Ok(records);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with('{')) {
        out.push(serde_json::from_str(line).with_context(|| format!("{} line {}: not a JSON record", file.display(), i + 1))?);
    }
    Ok(out)
}

/// The checkpoints in a `kubectl get configmap -o json` listing.
fn checkpoints(file: &std::path::Path) -> Result<Vec<tollgate_core::audit::checkpoint::Checkpoint>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let list: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    let items = list["items"].as_array().with_context(|| format!("{}: not a list of ConfigMaps", file.display()))?;
    items
        .iter()
        .map(|m| {
            let name = m["metadata"]["name"].as_str().unwrap_or("?");
            let cp = m["data"]["checkpoint"].as_str().with_context(|| format!("ConfigMap {name} holds no checkpoint"))?;
            serde_json::from_str(cp).with_context(|| format!("ConfigMap {name}: not a checkpoint"))
        })
        .collect()
}

fn main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Validate { files } => {
            let bundle = offline::load(&files, "default")?;
            for (id, r) in &bundle.report {
                match r {
                    Ok(summary) => println!("ok     {id} ({summary})"),
                    Err(e) => println!("error  {id}: {e}"),
                }
            }
            Ok(if bundle.has_errors() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Eval { files, namespace, agent, server, tool, args, cluster_default } => {
            let bundle = offline::load(&files, &namespace)?;
            let call = offline::Call { agent: &agent, server: &server, tool: &tool, arguments: &args, cluster_default };
            let decision = offline::eval(&bundle, &call)?;
            println!("{}", offline::describe(&decision));
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Shadow { file } } => {
            let rows = tollgate_core::audit::shadow::report(&records(&file)?);
            println!("{:>6}  {:<17} {:<40} {:<24} {:<28} {:<20} LAST", "CALLS", "WOULD", "POLICY OR BUDGET", "RULE", "AGENT", "TOOL");
            for r in &rows {
                println!("{:>6}  {:<17} {:<40} {:<24} {:<28} {:<20} {}", r.calls, r.would, r.object, r.rule, r.agent, r.tool, r.last);
            }
            if rows.is_empty() {
                println!("no call would have been decided otherwise");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify { file, checkpoints: listing, key } } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut links = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let link: tollgate_core::audit::chain::Link =
                    serde_json::from_str(line).with_context(|| format!("{} line {}: not an exported record", file.display(), i + 1))?;
                links.push(link);
            }
            let verdict = match (listing, key) {
                (Some(listing), Some(key)) => tollgate_core::audit::checkpoint::verify(&links, &checkpoints(&listing)?, &key)
                    .map(|v| format!("{} records, the chain is whole and matches {} signed checkpoints", v.records, v.checkpoints))
                    .map_err(|e| e.to_string()),
                _ => tollgate_core::audit::chain::verify(&links).map(|n| format!("{n} records, the chain is whole")).map_err(|b| b.to_string()),
            };
            match verdict {
                Ok(said) => {
                    println!("ok: {said}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    println!("broken: {b}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
