//! Command line of `kubectl approve`, and the rewrite that lets `kubectl approve NAME` mean
//! `kubectl approve approve NAME` (clap has no "default subcommand with arguments").

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl approve",
    bin_name = "kubectl approve",
    version,
    about = "Decide Tollgate approval requests (ApprovalRequest objects) from the command line",
    after_help = "Examples:\n  kubectl approve list -A\n  kubectl approve show deploy-x7k2 -n tollgate-demo\n  kubectl approve deploy-x7k2 --reason \"checked the diff\"\n  kubectl approve deny deploy-x7k2 --reason \"not during the freeze\"\n  kubectl approve watch -A\n  kubectl approve ui\n\nA request named like a command (e.g. \"list\") is approved with `kubectl approve approve list`."
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect and as whom; the same flags kubectl has, accepted anywhere on the line.
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// User to impersonate.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List approval requests (pending ones unless --all).
    List(ListArgs),
    /// Show one approval request: the call, the policy that held it, and every decision.
    Show(ShowArgs),
    /// Approve a request (the default: `kubectl approve NAME`).
    Approve(DecideArgs),
    /// Deny a request; a reason is required.
    Deny(DecideArgs),
    /// Print pending requests as they arrive, until Ctrl-C.
    Watch(WatchArgs),
    /// Decide in a browser: a page on loopback that acts with your kubeconfig's credentials.
    Ui(UiArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(CompletionArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Include requests that are no longer pending.
    #[arg(long)]
    pub all: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The ApprovalRequest's name.
    pub name: String,
    /// `table` (the default) is the human view.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The ApprovalRequest's name.
    pub name: String,
    /// Why; recorded in the request's status and the audit trail.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Seconds to wait for the operator to resolve the request once it could (0: do not wait).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "The page lists pending requests across the namespaces you may list (or -n's), live; \
every read and every decision goes to the API server as you, through the same admission rules as \
`kubectl approve`. The printed link carries a one-time secret: it opens once, in one browser.")]
pub struct UiArgs {
    /// Port on 127.0.0.1 to serve on (0: any free port). The page's address is a random
    /// `<name>.localhost` on that port, which browsers send to 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,
    /// Only print the link; do not open a browser.
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
}

const SUBCOMMANDS: [&str; 8] = ["list", "show", "approve", "deny", "watch", "ui", "completion", "help"];

/// Flags whose value is the next argument, unless written `--flag=value` (or `-nvalue`).
const VALUE_FLAGS: [&str; 11] = ["--kubeconfig", "--context", "-n", "--namespace", "--as", "--as-group", "-o", "--output", "--reason", "--wait", "--port"];

/// Inserts `approve` before the first positional argument when it is not a subcommand, so that
/// `kubectl approve NAME --reason x` parses as `approve NAME --reason x`.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1; // args[0] is the program
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            break; // a non-UTF-8 name: clap will reject or accept it as it is
        };
        if arg == "--" {
            i += 1;
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            i += if VALUE_FLAGS.contains(&arg) { 2 } else { 1 };
            continue;
        }
        if SUBCOMMANDS.contains(&arg) {
            return args;
        }
        break;
    }
    if i >= args.len() {
        return args; // no positional at all: let clap print help or its error
    }
    let mut out = args;
    out.insert(i, OsString::from("approve"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn norm(line: &str) -> Vec<String> {
        let args = line.split_whitespace().map(OsString::from).collect();
        normalize(args).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_bare_name_means_approve() {
        assert_eq!(norm("k x7k2 --reason ok"), ["k", "approve", "x7k2", "--reason", "ok"]);
        assert_eq!(norm("k -n ns --kubeconfig /k x7k2"), ["k", "-n", "ns", "--kubeconfig", "/k", "approve", "x7k2"]);
        assert_eq!(norm("k --namespace=ns x7k2"), ["k", "--namespace=ns", "approve", "x7k2"]);
        assert_eq!(norm("k --reason list x7k2"), ["k", "--reason", "list", "approve", "x7k2"]);
    }

    #[test]
    fn subcommands_and_flag_only_lines_are_left_alone() {
        assert_eq!(norm("k list -A"), ["k", "list", "-A"]);
        assert_eq!(norm("k -n ns deny x --reason no"), ["k", "-n", "ns", "deny", "x", "--reason", "no"]);
        assert_eq!(norm("k approve list"), ["k", "approve", "list"]);
        assert_eq!(norm("k --help"), ["k", "--help"]);
        assert_eq!(norm("k"), ["k"]);
    }

    #[test]
    fn the_rewritten_line_parses() {
        let cli = Cli::try_parse_from(normalize(["k", "x7k2", "-n", "ns", "--as", "bob", "--reason", "fine"].map(OsString::from).to_vec())).unwrap();
        assert_eq!(cli.conn.namespace.as_deref(), Some("ns"));
        assert_eq!(cli.conn.as_user.as_deref(), Some("bob"));
        match cli.command {
            Command::Approve(d) => {
                assert_eq!(d.name, "x7k2");
                assert_eq!(d.reason.as_deref(), Some("fine"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
