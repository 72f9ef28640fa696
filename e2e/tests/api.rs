//! The Tollgate API against the real API server: examples are accepted, bad objects are refused
//! with the message a user needs, and `kubectl get` tells the story.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tollgate_e2e::{ControlPlane, User};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Writes `yaml` into the control plane's directory and applies it as `user` in `ns`.
fn apply(cp: &ControlPlane, user: User, ns: &str, name: &str, yaml: &str) -> Result<std::process::Output> {
    let path = cp.dir().join(format!("{ns}-{name}.yaml"));
    std::fs::write(&path, yaml)?;
    cp.kubectl(user, ["apply", "--server-side", "-n", ns, "-f", path.to_str().context("path")?])
}

#[test]
fn every_example_applies_server_side() -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("examples")?;
    let mut files = Vec::new();
    yaml_files(&repo().join("examples"), &mut files)?;
    assert!(files.len() >= 6, "examples found: {files:?}");
    for file in &files {
        let out = cp.kubectl(User::Admin, ["apply", "--server-side", "-n", &ns, "-f", file.to_str().context("path")?])?;
        assert!(out.status.success(), "{} was refused: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    }
    // Defaults from the schema were filled in by the API server.
    let timeout = cp.kubectl_ok(User::Admin, ["get", "mcpserver", "platform-tools", "-n", &ns, "-o", "jsonpath={.spec.timeoutSeconds} {.spec.transport}"])?;
    assert_eq!(timeout.trim(), "30 streamable-http");
    let quorum = cp.kubectl_ok(User::Admin, ["get", "approvalworkflow", "prod-deploy", "-n", &ns, "-o", "jsonpath={.spec.requiredApprovals}"])?;
    assert_eq!(quorum.trim(), "1");
    Ok(())
}

#[test]
fn invalid_objects_are_refused_with_a_useful_message() -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("invalid")?;
    let cases = [
        (
            "bad-enum",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{"name":"bad-enum"},
               "spec":{"tools":[{"name":"x","rules":[{"action":"Maybe"}]}]}}"#,
            r#"spec.tools[0].rules[0].action: Unsupported value: "Maybe""#,
        ),
        (
            "quorum-zero",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"quorum-zero"},
               "spec":{"approvers":{"users":["a"]},"requiredApprovals":0}}"#,
            "spec.requiredApprovals: Invalid value: 0: spec.requiredApprovals in body should be greater than or equal to 1",
        ),
        (
            "quorum-eleven",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"quorum-eleven"},
               "spec":{"approvers":{"groups":["sre"]},"requiredApprovals":11}}"#,
            "should be less than or equal to 10",
        ),
        (
            "unreachable-quorum",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"unreachable-quorum"},
               "spec":{"approvers":{"users":["a"]},"requiredApprovals":2}}"#,
            "fewer approvers than requiredApprovals",
        ),
        (
            "short-timeout",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalWorkflow","metadata":{"name":"short-timeout"},
               "spec":{"approvers":{"users":["a"]},"timeoutSeconds":10}}"#,
            "spec.timeoutSeconds in body should be greater than or equal to 30",
        ),
        (
            "soft-over-hard",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"Budget","metadata":{"name":"soft-over-hard"},
               "spec":{"period":"Monthly","softLimitUSD":150,"hardLimitUSD":100}}"#,
            "softLimitUSD must not exceed hardLimitUSD",
        ),
        (
            "url-and-service",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"MCPServer","metadata":{"name":"url-and-service"},
               "spec":{"url":"http://x:1/mcp","service":{"name":"x","port":1}}}"#,
            "set exactly one of url or service",
        ),
        (
            "neither-url-nor-service",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"MCPServer","metadata":{"name":"neither"},"spec":{}}"#,
            "set exactly one of url or service",
        ),
        (
            "bad-provider-type",
            r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ModelProvider","metadata":{"name":"bad-type"},
               "spec":{"type":"azure","baseURL":"https://x","models":[{"name":"m"}]}}"#,
            r#"spec.type: Unsupported value: "azure""#,
        ),
        (
            "too-long-when",
            &format!(
                r#"{{"apiVersion":"tollgate.dev/v1alpha1","kind":"ToolPolicy","metadata":{{"name":"long"}},
                   "spec":{{"tools":[{{"name":"x","rules":[{{"action":"Deny","when":"{}"}}]}}]}}}}"#,
                "a".repeat(5000)
            ),
            "spec.tools[0].rules[0].when: Too long: may not be more than 4096 bytes",
        ),
    ];
    for (name, yaml, want) in cases {
        let out = apply(cp, User::Admin, &ns, name, yaml)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(want), "{name}: expected {want:?} in:\n{stderr}");
    }
    // Nothing of the refused objects was stored.
    // (ClusterToolPolicies of other tests show in any namespace; they are cluster-scoped.)
    let listed = cp.kubectl_ok(User::Admin, ["get", "tollgate", "-n", &ns, "-o", "name"])?;
    let stored: Vec<&str> = listed.lines().filter(|l| !l.starts_with("clustertoolpolicy.")).collect();
    assert!(stored.is_empty(), "refused objects were stored: {stored:?}");
    Ok(())
}

const REQUEST: &str = r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"ApprovalRequest","metadata":{"name":"deploy-1"},
  "spec":{"agent":"coder","serviceAccount":"coder","server":"platform-tools","tool":"deploy",
          "arguments":{"environment":"production","service":"checkout","replicas":3},
          "argumentsDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000",
          "justification":"release 4.2","workflow":"prod-deploy","requestedAt":"2026-11-22T12:00:00Z",
          "policy":{"kind":"ToolPolicy","name":"platform-tools","namespace":"x"},"rule":"spec.tools[3].rules[0]"}}"#;

#[test]
fn approval_request_spec_is_immutable() -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("immutable")?;
    let out = apply(cp, User::Admin, &ns, "request", REQUEST)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let edits =
        [r#"{"spec":{"tool":"delete_repository"}}"#, r#"{"spec":{"arguments":{"environment":"staging"}}}"#, r#"{"spec":{"justification":"something else"}}"#];
    for patch in edits {
        let out = cp.kubectl(User::Admin, ["patch", "approvalrequest", "deploy-1", "-n", &ns, "--type", "merge", "-p", patch])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "edit {patch} was accepted");
        assert!(stderr.contains("spec is immutable"), "{patch}: {stderr}");
    }
    let tool = cp.kubectl_ok(User::Admin, ["get", "ar", "deploy-1", "-n", &ns, "-o", "jsonpath={.spec.tool} {.spec.arguments.environment}"])?;
    assert_eq!(tool.trim(), "deploy production");
    // Metadata stays editable (labels, for instance).
    cp.kubectl_ok(User::Admin, ["label", "ar", "deploy-1", "-n", &ns, "reviewed=yes"])?;

    // Decisions are a list-map keyed by user: a second decision by the same person is refused
    // by the API server itself.
    let status = r#"{"status":{"phase":"Pending","approvals":"0/1","decisions":[
        {"user":"approver-a","decision":"Approve","time":"2026-11-22T12:00:01Z","via":"kubectl"},
        {"user":"approver-a","decision":"Deny","time":"2026-11-22T12:00:02Z","via":"kubectl"}]}}"#;
    let out = cp.kubectl(User::Admin, ["patch", "ar", "deploy-1", "-n", &ns, "--subresource=status", "--type", "merge", "-p", status])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Duplicate value"), "{stderr}");
    Ok(())
}

#[test]
fn kubectl_get_tells_the_story() -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("columns")?;
    for file in ["10-mcp-server.yaml", "20-approval-workflow.yaml", "30-managed-agent.yaml", "40-tool-policy.yaml"] {
        let path = repo().join("examples/quickstart").join(file);
        cp.kubectl_ok(User::Admin, ["apply", "--server-side", "-n", &ns, "-f", path.to_str().context("path")?])?;
    }
    apply(cp, User::Admin, &ns, "request", REQUEST)?;
    let status = r#"{"status":{"phase":"Pending","approvals":"0/1","expiresAt":"2030-01-01T00:00:00Z"}}"#;
    cp.kubectl_ok(User::Admin, ["patch", "ar", "deploy-1", "-n", &ns, "--subresource=status", "--type", "merge", "-p", status])?;
    let policy_status = r#"{"status":{"rules":5,"matchedAgents":1,"conditions":[{"type":"Ready","status":"True","reason":"Compiled","message":"5 rules compiled","lastTransitionTime":"2026-11-22T12:00:00Z"}]}}"#;
    cp.kubectl_ok(User::Admin, ["patch", "tp", "platform-tools", "-n", &ns, "--subresource=status", "--type", "merge", "-p", policy_status])?;

    let all = cp.kubectl_ok(User::Admin, ["get", "tollgate", "-n", &ns])?;
    for want in [
        "mcpserver.tollgate.dev/platform-tools",
        "approvalworkflow.tollgate.dev/prod-deploy",
        "managedagent.tollgate.dev/coder",
        "toolpolicy.tollgate.dev/platform-tools",
        "approvalrequest.tollgate.dev/deploy-1",
    ] {
        assert!(all.contains(want), "`kubectl get tollgate` lacks {want}:\n{all}");
    }

    let requests = cp.kubectl_ok(User::Admin, ["get", "approvalrequests", "-n", &ns])?;
    let mut lines = requests.lines();
    let header: Vec<&str> = lines.next().context("no header")?.split_whitespace().collect();
    assert_eq!(header, ["NAME", "TOOL", "AGENT", "PHASE", "APPROVALS", "EXPIRES", "AGE"], "{requests}");
    let row: Vec<&str> = lines.next().context("no row")?.split_whitespace().collect();
    assert_eq!(&row[..5], ["deploy-1", "deploy", "coder", "Pending", "0/1"], "{requests}");

    let policies = cp.kubectl_ok(User::Admin, ["get", "toolpolicies", "-n", &ns])?;
    let header: Vec<&str> = policies.lines().next().context("no header")?.split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "MODE", "FALLBACK", "RULES", "AGENTS", "WOULD-DENY", "WOULD-HOLD", "AGE"], "{policies}");
    let row: Vec<&str> = policies.lines().nth(1).context("no row")?.split_whitespace().collect();
    assert_eq!(&row[..5], ["platform-tools", "True", "false", "5", "1"], "{policies}");

    // Short names and the category work for the kinds people type most.
    for short in ["ar", "tp", "ctp", "awf", "ma", "mcps", "bud", "mp", "tgw"] {
        cp.kubectl_ok(User::Admin, ["get", short, "-n", &ns])?;
    }
    Ok(())
}

#[test]
fn budgets_show_spent_limit_and_state() -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("budgets")?;
    let budget = r#"{"apiVersion":"tollgate.dev/v1alpha1","kind":"Budget","metadata":{"name":"monthly"},
        "spec":{"period":"Monthly","softLimitUSD":80,"hardLimitUSD":100}}"#;
    let out = apply(cp, User::Admin, &ns, "budget", budget)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cp.kubectl_ok(
        User::Admin,
        [
            "patch",
            "budget",
            "monthly",
            "-n",
            &ns,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"spentUSD":85.5,"remainingUSD":14.5,"state":"SoftExceeded"}}"#,
        ],
    )?;
    let out = cp.kubectl_ok(User::Admin, ["get", "budgets", "-n", &ns])?;
    let header: Vec<&str> = out.lines().next().context("no header")?.split_whitespace().collect();
    assert_eq!(header, ["NAME", "PERIOD", "SPENT", "LIMIT", "STATE", "MODE", "WOULD-DENY", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).context("no row")?.split_whitespace().collect();
    assert_eq!(&row[..5], ["monthly", "Monthly", "85.5", "100", "SoftExceeded"], "{out}");
    Ok(())
}
