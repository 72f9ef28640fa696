//! `tollgate validate` and `tollgate eval` as a user runs them, on the shipped examples.

use std::process::Command;

fn tollgate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run tollgate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `tollgate eval` of a call by the quickstart's agent to its platform tools.
fn eval_quickstart(tool: &str, args: &str) -> (bool, String) {
    tollgate(&["eval", "-f", "examples/quickstart", "-n", "tollgate-demo", "--agent", "coder", "--server", "platform-tools", "--tool", tool, "--args", args])
}

#[test]
fn every_example_policy_compiles() {
    let (ok, out) = tollgate(&["validate", "-f", "examples/quickstart", "-f", "examples/policies"]);
    assert!(ok, "{out}");
    for want in ["ok     ToolPolicy/platform-tools (5 rules)", "ok     ToolPolicy/database (3 rules)", "ok     ClusterToolPolicy/production-defaults"] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn validate_reports_field_paths_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: tollgate.dev/v1alpha1\nkind: ToolPolicy\nmetadata: {name: bad}\nspec:\n  tools:\n  - name: x\n    rules:\n    - action: Deny\n      when: \"args.x ==\"\n").expect("write");
    let (ok, out) = tollgate(&["validate", "-f", file.to_str().expect("path")]);
    assert!(!ok, "{out}");
    assert!(out.contains("error  ToolPolicy/bad: spec.tools[0].rules[0].when:"), "{out}");
}

#[test]
fn quickstart_decisions() {
    let cases = [
        ("read_file", "{}", "Allow"),
        ("delete_repository", "{}", "Deny: Access denied: deleting repositories is not allowed for agents"),
        ("deploy", r#"{"environment":"production","justification":"release 4.2"}"#, "RequireApproval by workflow prod-deploy"),
        ("deploy", r#"{"environment":"staging","justification":"smoke test"}"#, "Allow"),
        ("deploy", r#"{"environment":"production"}"#, "requires a justification"),
        ("read_file", r#"{"path":"/home/me/.env"}"#, "blocked cluster-wide"),
    ];
    for (tool, args, want) in cases {
        let (ok, out) = eval_quickstart(tool, args);
        assert!(ok, "{out}");
        assert!(out.contains(want), "{tool} {args}: expected {want:?} in\n{out}");
    }
}

#[test]
fn arguments_the_sidecar_would_refuse_are_refused() {
    for (args, why) in [(r#"{"path":"/tmp/a","path":"/home/me/.env"}"#, "duplicate key \"path\""), (r#"{"path":"#, "EOF while parsing")] {
        let (ok, out) = eval_quickstart("read_file", args);
        assert!(!ok, "{args}: {out}");
        assert!(out.contains("--args is not valid JSON") && out.contains(why), "{args}: expected {why:?} in\n{out}");
    }
}
