//! `tollgate`: offline policy tools. `validate` compiles policies as the admission webhook does;
//! `eval` decides one call as the sidecar would.

use anyhow::Result;
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
    }
}
