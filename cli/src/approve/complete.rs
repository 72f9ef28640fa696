//! Completion inside kubectl's own: for `kubectl approve <TAB>`, kubectl runs
//! `kubectl_complete-approve` (found on `PATH`; a link to `kubectl-approve`, which answers to
//! that name) with the words typed after `kubectl approve`, the last being the one completed,
//! and reads one candidate per line (`word<TAB>description`), then Cobra's `:<directive>`.
//! What to offer is decided here from clap's own description of the command line; only request
//! names need the cluster.

use clap::CommandFactory;

use super::args::{Cli, normalize};

/// Cobra's ShellCompDirectiveNoFileComp: nothing to complete from the file system.
pub const NO_FILE_COMP: u8 = 4;

/// What the word being completed can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// These words (with a description), filtered by the prefix typed.
    Words(Vec<(String, String)>),
    /// Names of requests: pending ones unless `all`, in the namespace the line names.
    Requests { all: bool },
    /// Nothing we know (a free value: a reason, a path).
    Nothing,
}

/// The subcommand of the words typed so far, as the plugin would parse them.
fn subcommand(done: &[String]) -> Option<String> {
    let mut argv = vec![std::ffi::OsString::from("kubectl-approve")];
    argv.extend(done.iter().map(std::ffi::OsString::from));
    let argv = normalize(argv);
    let cmd = Cli::command();
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    argv.iter().skip(1).filter_map(|a| a.to_str()).find(|a| names.iter().any(|n| n == a)).map(str::to_owned)
}

fn flags(cmd: &clap::Command) -> Vec<(String, String)> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| (format!("--{l}"), a.get_help().map(|h| h.to_string()).unwrap_or_default())))
        .collect()
}

/// Whether the previous word is a flag whose value is the word being completed.
fn after_value_flag(done: &[String], cmd: &clap::Command) -> bool {
    let Some(prev) = done.last() else {
        return false;
    };
    if !prev.starts_with('-') || prev.contains('=') {
        return false;
    }
    let root = Cli::command();
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let matches = |a: &clap::Arg| a.get_long().is_some_and(|l| *prev == format!("--{l}")) || a.get_short().is_some_and(|s| *prev == format!("-{s}"));
    cmd.get_arguments().chain(root.get_arguments()).any(|a| matches(a) && takes_value(a))
}

/// What to offer for `partial`, after the words `done`.
pub fn offer(done: &[String], partial: &str) -> Offer {
    let root = Cli::command();
    let sub = subcommand(done);
    let cmd = sub.as_deref().and_then(|s| root.find_subcommand(s)).unwrap_or(&root);
    if after_value_flag(done, cmd) {
        return match done.last().map(String::as_str) {
            Some("-o" | "--output") => Offer::Words(["table", "wide", "json", "yaml", "name"].map(|w| (w.to_owned(), String::new())).to_vec()),
            _ => Offer::Nothing,
        };
    }
    if partial.starts_with('-') {
        let mut all = flags(cmd);
        if sub.is_some() {
            all.extend(flags(&root));
        }
        return Offer::Words(all);
    }
    match sub.as_deref() {
        None => {
            // `kubectl approve NAME` approves: request names are as good as subcommands here.
            let words = root
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .map(|s| (s.get_name().to_owned(), s.get_about().map(|a| a.to_string()).unwrap_or_default()))
                .collect();
            Offer::Words(words)
        }
        Some("approve" | "deny") if positionals(done) == 0 => Offer::Requests { all: false },
        Some("show") if positionals(done) == 0 => Offer::Requests { all: true },
        Some("completion") if positionals(done) == 0 => {
            Offer::Words(["bash", "zsh", "fish", "elvish", "powershell"].map(|w| (w.to_owned(), String::new())).to_vec())
        }
        _ => Offer::Nothing,
    }
}

/// Positional words after the subcommand (flags and their values skipped).
fn positionals(done: &[String]) -> usize {
    let root = Cli::command();
    let sub = subcommand(done);
    let Some(pos) = done.iter().position(|w| Some(w) == sub.as_ref()) else {
        return 0;
    };
    let cmd = sub.as_deref().and_then(|s| root.find_subcommand(s)).unwrap_or(&root);
    let mut count = 0;
    let mut i = pos + 1;
    while i < done.len() {
        if done[i].starts_with('-') {
            i += if after_value_flag(&done[..=i], cmd) { 2 } else { 1 };
            continue;
        }
        count += 1;
        i += 1;
    }
    count
}

/// The connection flags among the words typed (`-n`, `--context`, `--kubeconfig`, `--as`), to
/// list requests where the finished line would act.
pub fn connection(done: &[String]) -> super::args::Connection {
    let mut conn = super::args::Connection::default();
    let mut i = 0;
    while i < done.len() {
        let (flag, inline) = match done[i].split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (done[i].as_str(), None),
        };
        let value = inline.clone().or_else(|| done.get(i + 1).cloned());
        let slot = match flag {
            "-n" | "--namespace" => Some(&mut conn.namespace),
            "--context" => Some(&mut conn.context),
            "--as" => Some(&mut conn.as_user),
            "--kubeconfig" => {
                conn.kubeconfig = value.clone().map(std::path::PathBuf::from);
                None
            }
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = value;
        }
        let takes = matches!(flag, "-n" | "--namespace" | "--context" | "--as" | "--kubeconfig");
        i += if takes && inline.is_none() { 2 } else { 1 };
    }
    conn
}

/// The lines kubectl reads: the candidates starting with `partial`, then the directive.
pub fn lines(words: &[(String, String)], partial: &str) -> String {
    let mut out = String::new();
    for (word, about) in words.iter().filter(|(w, _)| w.starts_with(partial)) {
        if about.is_empty() {
            out.push_str(&format!("{word}\n"));
        } else {
            out.push_str(&format!("{word}\t{about}\n"));
        }
    }
    out.push_str(&format!(":{NO_FILE_COMP}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    fn offered(line: &str) -> Offer {
        let mut w = words(line);
        let partial = w.pop().unwrap_or_default();
        offer(&w, &partial)
    }

    fn names(o: &Offer) -> Vec<&str> {
        match o {
            Offer::Words(w) => w.iter().map(|(n, _)| n.as_str()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn subcommands_first() {
        let o = offered("");
        assert!(["list", "show", "approve", "deny", "watch", "ui", "completion"].iter().all(|s| names(&o).contains(s)), "{o:?}");
        assert_eq!(lines(&[("ui".into(), "Decide in a browser".into()), ("list".into(), String::new())], "u"), "ui\tDecide in a browser\n:4\n");
    }

    #[test]
    fn flags_of_the_subcommand_and_the_connection() {
        let o = offered("ui --");
        assert!(names(&o).contains(&"--port") && names(&o).contains(&"--no-browser") && names(&o).contains(&"--namespace"), "{o:?}");
        assert!(names(&offered("deny x --")).contains(&"--reason"));
    }

    #[test]
    fn request_names_where_a_name_goes() {
        assert_eq!(offered("approve "), Offer::Requests { all: false });
        assert_eq!(offered("-n team deny d"), Offer::Requests { all: false });
        assert_eq!(offered("show "), Offer::Requests { all: true });
        assert_eq!(offered("approve x7k2 "), Offer::Nothing);
        assert_eq!(offered("deny --reason "), Offer::Nothing);
        assert_eq!(offered("deny --reason why "), Offer::Requests { all: false });
    }

    #[test]
    fn the_connection_the_line_names() {
        let c = connection(&words("-n team --context=prod approve --kubeconfig /k"));
        assert_eq!((c.namespace.as_deref(), c.context.as_deref()), (Some("team"), Some("prod")));
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
    }

    #[test]
    fn values_of_flags() {
        assert_eq!(names(&offered("list -o ")), ["table", "wide", "json", "yaml", "name"]);
        assert_eq!(offered("ui --port "), Offer::Nothing);
        assert!(names(&offered("completion ")).contains(&"zsh"));
    }
}
