//! `kubectl approve` (the plugin, `cli/`) run through the real `kubectl` against the real API
//! server, as each of the people of DESIGN §4. There is no operator and no Tollgate webhook here: RBAC
//! (the chart's `tollgate-approver` ClusterRole bound to `tollgate:approvers`) is all that guards status,
//! and the admin stands in for the operator when a phase has to move.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_e2e::requests::Request;
use tollgate_e2e::{ControlPlane, User, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

fn plugin(cp: &ControlPlane, user: User, args: &[&str]) -> Command {
    match cp.kubectl_approve_command(user, args) {
        Ok(cmd) => cmd,
        Err(e) => panic!("preparing kubectl approve: {e:#}"),
    }
}

fn approve(cp: &ControlPlane, user: User, args: &[&str]) -> Result<Output> {
    plugin(cp, user, args).output().context("running kubectl approve")
}

fn approve_ok(cp: &ControlPlane, user: User, args: &[&str]) -> Result<String> {
    let out = approve(cp, user, args)?;
    ensure!(out.status.success(), "kubectl approve {} as {user} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The plugin's stderr, after checking it failed the way a person should see: non-zero, one
/// `error:` line, no panic or debug dump.
fn approve_err(cp: &ControlPlane, user: User, args: &[&str]) -> Result<String> {
    let out = approve(cp, user, args)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(!out.status.success(), "kubectl approve {} as {user} succeeded", args.join(" "));
    ensure!(stderr.starts_with("error: "), "stderr: {stderr}");
    ensure!(!stderr.contains("panicked") && !stderr.contains("Api(") && stderr.lines().count() == 1, "stderr: {stderr}");
    Ok(stderr.trim_end().to_owned())
}

fn apply_json(cp: &ControlPlane, ns: &str, json: &Value) -> Result<()> {
    let path = cp.dir().join(format!("{ns}-{}.json", tollgate_e2e::random_hex(4)?));
    std::fs::write(&path, serde_json::to_vec(json)?)?;
    cp.kubectl_ok(User::Admin, ["apply", "--server-side", "-n", ns, "-f", path.to_str().context("path")?])?;
    Ok(())
}

/// A namespace whose `tollgate:approvers` may read requests and write their status.
fn setup(prefix: &str) -> Result<(&'static ControlPlane, String)> {
    static ROLE: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    if ROLE.get().is_none() {
        // The chart's own approver role, as Helm renders it (not a copy that could drift); the
        // rest of the chart stays out, as there is no operator to answer its webhooks here.
        let rendered = tollgate_e2e::render_chart(&["--namespace", "tollgate-system"])?;
        let role = rendered
            .split("\n---")
            .find(|doc| doc.contains("kind: ClusterRole\n") && doc.contains("\n  name: tollgate-approver\n"))
            .context("the chart renders no tollgate-approver ClusterRole")?;
        let path = cp.dir().join("approver-role.yaml");
        std::fs::write(&path, role)?;
        cp.kubectl_ok(User::Admin, ["apply", "--server-side", "-f", path.to_str().context("path")?])?;
        let _ = ROLE.set(());
    }
    let ns = cp.create_namespace(prefix)?;
    apply_json(
        cp,
        &ns,
        &serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tollgate-approvers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tollgate-approver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "tollgate:approvers"}],
        }),
    )?;
    Ok((cp, ns))
}

/// RFC 3339 (UTC, seconds) of now + `secs`, without a date crate (civil-from-days, H. Hinnant).
fn rfc3339_from_now(secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + secs;
    let (days, rem) = (now.div_euclid(86400), now.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Creates a request as the sidecar would and, unless `status` is null, gives it the status the
/// operator would (the admin may write status; nobody else here may).
fn request(cp: &ControlPlane, ns: &str, name: &str, status: Value) -> Result<()> {
    let request = Request::new(name, "prod-deploy")
        .agent("release-bot", "release-bot")
        .call("platform-tools", "deploy", serde_json::json!({"service": "checkout", "environment": "production", "replicas": 3}))
        .spec("pod", serde_json::json!("release-bot-7d9f"))
        .spec("justification", serde_json::json!("ship 1.4.2: fixes the checkout timeout"))
        .spec("policy", serde_json::json!({"kind": "ToolPolicy", "name": "prod-guardrails", "namespace": ns}))
        .spec("rule", serde_json::json!("spec.tools[0].rules[1]"))
        .spec("message", serde_json::json!("production deploys need a human"))
        .spec("requestedAt", serde_json::json!(rfc3339_from_now(0)));
    apply_json(cp, ns, request.json())?;
    if !status.is_null() {
        set_status(cp, ns, name, &status)?;
    }
    Ok(())
}

fn pending(quorum: u32) -> Value {
    serde_json::json!({"phase": "Pending", "approvals": format!("0/{quorum}"), "expiresAt": rfc3339_from_now(600)})
}

fn set_status(cp: &ControlPlane, ns: &str, name: &str, status: &Value) -> Result<()> {
    let patch = serde_json::json!({"status": status}).to_string();
    cp.kubectl_ok(User::Admin, ["patch", "ar", name, "-n", ns, "--subresource=status", "--type=merge", "-p", &patch])?;
    Ok(())
}

fn get(cp: &ControlPlane, ns: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", ns, "-o", "json"])?)?)
}

fn decisions(cp: &ControlPlane, ns: &str, name: &str) -> Result<Vec<Value>> {
    let ar = get(cp, ns, name)?;
    Ok(ar["status"]["decisions"].as_array().cloned().unwrap_or_default())
}

#[test]
fn list_shows_pending_requests_in_every_format() -> Result<()> {
    let (cp, ns) = setup("approve-list")?;
    request(cp, &ns, "deploy-1", pending(1))?;
    request(cp, &ns, "deploy-old", serde_json::json!({"phase": "Approved", "approvals": "1/1"}))?;

    let table = approve_ok(cp, User::ApproverA, &["list", "-n", &ns])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "TOOL", "AGENT", "PHASE", "APPROVALS", "EXPIRES", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..6], ["deploy-1", "deploy", "release-bot", "Pending", "0/1", "in"], "{table}");
    assert!(row[6].starts_with("9m") || row[6] == "10m0s", "{table}");

    let all = approve_ok(cp, User::ApproverA, &["list", "--all", "-n", &ns])?;
    assert!(all.contains("deploy-old") && all.contains("Approved"), "{all}");

    let wide = approve_ok(cp, User::ApproverA, &["list", "-o", "wide", "-n", &ns])?;
    assert!(wide.lines().next().unwrap().ends_with("SERVER           WORKFLOW      JUSTIFICATION"), "{wide}");
    assert!(wide.contains("platform-tools   prod-deploy   ship 1.4.2: fixes the checkout timeout"), "{wide}");

    let json: Value = serde_json::from_str(&approve_ok(cp, User::ApproverA, &["list", "-o", "json", "-n", &ns])?)?;
    assert_eq!(json["kind"], "List");
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "deploy-1");
    assert_eq!(items[0]["spec"]["arguments"]["replicas"], 3);

    let yaml: Value = serde_yaml::from_str(&approve_ok(cp, User::ApproverA, &["list", "-o", "yaml", "-n", &ns])?)?;
    assert_eq!(yaml["items"][0]["status"]["approvals"], "0/1");
    let names = approve_ok(cp, User::ApproverA, &["list", "--all", "-o", "name", "-n", &ns])?;
    assert_eq!(names, "approvalrequest.tollgate.dev/deploy-1\napprovalrequest.tollgate.dev/deploy-old\n");

    // -A as the admin: a NAMESPACE column; KUBECONFIG is honoured when --kubeconfig is absent.
    let out = Command::new("kubectl")
        .args(["approve", "list", "-A"])
        .env("PATH", tollgate_e2e::plugin_path()?)
        .env("KUBECONFIG", cp.kubeconfig(User::Admin))
        .stdin(Stdio::null())
        .output()?;
    let every = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(every.starts_with("NAMESPACE "), "{every}");
    assert!(every.lines().any(|l| l.split_whitespace().take(2).eq([ns.as_str(), "deploy-1"])), "{every}");
    Ok(())
}

#[test]
fn approvers_decide_and_show_tells_the_story() -> Result<()> {
    let (cp, ns) = setup("approve-decide")?;
    request(cp, &ns, "deploy-2", pending(1))?;

    let out = approve_ok(cp, User::ApproverA, &["deploy-2", "--reason", "ok", "-n", &ns, "--wait", "0"])?;
    assert_eq!(out, format!("approved {ns}/deploy-2 (1/1 approvals)\n"));
    let d = decisions(cp, &ns, "deploy-2")?;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["user"], "approver-a");
    assert_eq!(d[0]["decision"], "Approve");
    assert_eq!(d[0]["reason"], "ok");
    assert_eq!(d[0]["via"], "kubectl");
    assert!(d[0]["time"].as_str().unwrap().ends_with('Z'), "{d:?}");

    let err = approve_err(cp, User::ApproverB, &["deny", "deploy-2", "-n", &ns])?;
    assert_eq!(err, "error: a reason is required to deny: kubectl approve deny deploy-2 --reason \"why\"");
    let err = approve_err(cp, User::ApproverA, &["deploy-2", "-n", &ns])?;
    assert!(err.starts_with("error: you (approver-a) already decided on"), "{err}");

    let out = approve_ok(cp, User::ApproverB, &["deny", "deploy-2", "--reason", "not during the freeze", "-n", &ns, "--wait", "0"])?;
    assert_eq!(out, format!("denied {ns}/deploy-2\n"));
    let d = decisions(cp, &ns, "deploy-2")?;
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[1]["user"].as_str(), d[1]["decision"].as_str()), (Some("approver-b"), Some("Deny")));

    let show = approve_ok(cp, User::ApproverA, &["show", "deploy-2", "-n", &ns])?;
    for want in [
        format!("Name:            {ns}/deploy-2\n"),
        "Phase:           Pending\n".into(),
        "Tool:            deploy\n".into(),
        "Server:          platform-tools\n".into(),
        "Pod:             release-bot-7d9f\n".into(),
        "Workflow:        prod-deploy\n".into(),
        format!("Policy:          ToolPolicy {ns}/prod-guardrails, rule spec.tools[0].rules[1]\n"),
        "Justification:   ship 1.4.2: fixes the checkout timeout\n".into(),
        "    \"environment\": \"production\",\n".into(),
        "    \"replicas\": 3,\n".into(),
    ] {
        assert!(show.contains(&want), "missing {want:?} in:\n{show}");
    }
    let rows: Vec<Vec<&str>> = show.lines().skip_while(|l| !l.starts_with("Decisions:")).skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{show}");
    assert_eq!(rows[0][..3], ["approver-a", "Approve", "kubectl"], "{show}");
    assert_eq!(rows[0].last(), Some(&"ok"), "{show}");
    assert_eq!(rows[1][..3], ["approver-b", "Deny", "kubectl"], "{show}");
    assert!(show.trim_end().ends_with("not during the freeze"), "{show}");

    let json: Value = serde_json::from_str(&approve_ok(cp, User::ApproverA, &["show", "deploy-2", "-o", "json", "-n", &ns])?)?;
    assert_eq!(json["status"]["decisions"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[test]
fn a_request_without_status_gets_one() -> Result<()> {
    let (cp, ns) = setup("approve-nostatus")?;
    request(cp, &ns, "fresh", Value::Null)?;
    let listed = approve_ok(cp, User::ApproverA, &["list", "-n", &ns])?;
    assert!(listed.contains("fresh ") && listed.contains("Pending   <none>"), "{listed}");
    let out = approve_ok(cp, User::ApproverA, &["fresh", "-n", &ns, "--wait", "0"])?;
    assert_eq!(out, format!("approved {ns}/fresh (1 approvals)\n"));
    let d = decisions(cp, &ns, "fresh")?;
    assert_eq!((d.len(), d[0]["user"].as_str(), d[0].get("reason")), (1, Some("approver-a"), None));
    Ok(())
}

/// Two approvers decide at once, and the API server is made to see their writes at once: a
/// webhook of the test's own holds the first two reviews of the namespace's request status until
/// both arrived, so both were applied to the same version of the request. One commits; the
/// other's guarded add fails and the plugin writes it again, saying so. Both decisions are kept.
#[test]
fn concurrent_decisions_are_both_kept() -> Result<()> {
    let (cp, ns) = setup("approve-race")?;
    let [port] = tollgate_e2e::free_ports::<1>()?;
    let pki = tollgate_e2e::certs::server_pki(&["127.0.0.1"])?;
    let (cert, key) = (cp.dir().join(format!("{ns}-barrier.crt")), cp.dir().join(format!("{ns}-barrier.key")));
    std::fs::write(&cert, &pki.cert_pem)?;
    std::fs::write(&key, &pki.key_pem)?;
    let mut cmd = Command::new("python3");
    cmd.arg(tollgate_e2e::repo_file("e2e/servers/barrier_webhook.py")).arg(port.to_string()).arg(&cert).arg(&key);
    let barrier = tollgate_e2e::Process::spawn(cmd, cp.dir().join(format!("{ns}-barrier.log")))?;
    wait_until(WAIT, POLL, || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(())))?;
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pki.ca_pem);
    let config = format!("barrier-{ns}");
    apply_json(
        cp,
        "default",
        &serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": config},
            "webhooks": [{
                "name": "barrier.e2e.tollgate.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 15,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/"), "caBundle": ca},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "rules": [{"apiGroups": ["tollgate.dev"], "apiVersions": ["v1alpha1"], "operations": ["UPDATE"], "resources": ["approvalrequests/status"]}],
            }],
        }),
    )?;
    let raced = (|| -> Result<(usize, String)> {
        request(cp, &ns, "race", pending(2))?;
        let a = plugin(cp, User::ApproverA, &["race", "-n", &ns, "--wait", "0"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let b =
            plugin(cp, User::ApproverB, &["deny", "race", "--reason", "no", "-n", &ns, "--wait", "0"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut retries = 0;
        for child in [a, b] {
            let out = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.success(), "{stderr}");
            retries += stderr.matches("changed while your decision was being written; writing it again").count();
        }
        let met = std::process::Command::new("curl").args(["-sk", &format!("https://127.0.0.1:{port}/held")]).output()?;
        Ok((retries, String::from_utf8_lossy(&met.stdout).into_owned()))
    })();
    cp.kubectl_ok(User::Admin, ["delete", "validatingwebhookconfiguration", &config])?;
    drop(barrier);
    let (retries, met) = raced?;
    let met: Value = serde_json::from_str(&met)?;
    assert_eq!(met["met"], 2, "the two writes did not meet at the barrier: {met}");
    assert_eq!(retries, 1, "one write must have been redone, and said so");
    let mut users: Vec<String> = decisions(cp, &ns, "race")?.iter().map(|d| d["user"].as_str().unwrap_or_default().to_owned()).collect();
    users.sort();
    assert_eq!(users, ["approver-a", "approver-b"]);
    Ok(())
}

#[test]
fn refusals_are_in_plain_words() -> Result<()> {
    let (cp, ns) = setup("approve-refused")?;
    request(cp, &ns, "deploy-3", pending(1))?;

    let err = approve_err(cp, User::Outsider, &["deploy-3", "--reason", "me too", "-n", &ns])?;
    assert_eq!(err, format!("error: you (outsider) may not decide approval requests in namespace {ns}: ask for the tollgate-approver role"));
    let err = approve_err(cp, User::Outsider, &["list", "-n", &ns])?;
    assert_eq!(err, format!("error: you (outsider) may not list approval requests in namespace {ns}: ask for the tollgate-approver role"));
    let err = approve_err(cp, User::Outsider, &["deploy-3", "-n", &ns, "--as", "approver-a"])?;
    assert_eq!(err, "error: you (outsider) may not act as another user (--as): impersonation is not granted to you");
    let err = approve_err(cp, User::ApproverA, &["nope", "-n", &ns])?;
    assert_eq!(err, format!("error: approval request \"nope\" not found in namespace \"{ns}\""));
    let err = approve_err(cp, User::ApproverA, &["show", "nope", "-n", &ns])?;
    assert_eq!(err, format!("error: approval request \"nope\" not found in namespace \"{ns}\""));

    set_status(cp, &ns, "deploy-3", &serde_json::json!({"phase": "Expired"}))?;
    let err = approve_err(cp, User::ApproverA, &["deploy-3", "-n", &ns])?;
    assert_eq!(err, format!("error: {ns}/deploy-3 is already Expired; decisions change nothing now"));
    assert!(decisions(cp, &ns, "deploy-3")?.is_empty());
    Ok(())
}

#[test]
fn the_admin_can_decide_as_an_approver() -> Result<()> {
    let (cp, ns) = setup("approve-as")?;
    request(cp, &ns, "deploy-4", pending(2))?;
    // Impersonating only the user leaves out its groups, so RBAC refuses approver-b: the
    // message names the impersonated user, which shows --as took effect.
    let err = approve_err(cp, User::Admin, &["deploy-4", "-n", &ns, "--as", "approver-b"])?;
    assert_eq!(err, format!("error: you (approver-b) may not decide approval requests in namespace {ns}: ask for the tollgate-approver role"));
    let out = approve_ok(cp, User::Admin, &["deploy-4", "-n", &ns, "--as", "approver-b", "--as-group", "tollgate:approvers", "--reason", "for b"])?;
    assert_eq!(out, format!("approved {ns}/deploy-4 (1/2 approvals)\n"));
    let d = decisions(cp, &ns, "deploy-4")?;
    assert_eq!((d[0]["user"].as_str(), d[0]["reason"].as_str()), (Some("approver-b"), Some("for b")));
    Ok(())
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("stdout not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn next_line_with(rx: &mpsc::Receiver<String>, want: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).with_context(|| format!("no line with {want:?} within {WAIT:?}"))?;
        if line.contains(want) {
            return Ok(line);
        }
    }
}

/// Kills a child this test started, on every path out of the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deciding_waits_for_the_operator_to_move_the_phase() -> Result<()> {
    let (cp, ns) = setup("approve-wait")?;
    request(cp, &ns, "deploy-5", pending(1))?;
    let mut child = plugin(cp, User::ApproverA, &["deploy-5", "-n", &ns, "--wait", "30"]).stdout(Stdio::piped()).spawn()?;
    let rx = lines_of(&mut child)?;
    let mut child = Killed(child);
    next_line_with(&rx, &format!("approved {ns}/deploy-5 (1/1 approvals)"))?;
    // Standing in for the operator, once the decision is stored.
    wait_until(WAIT, POLL, || Ok((decisions(cp, &ns, "deploy-5")?.len() == 1).then_some(())))?;
    set_status(cp, &ns, "deploy-5", &serde_json::json!({"phase": "Approved", "approvals": "1/1"}))?;
    next_line_with(&rx, &format!("{ns}/deploy-5 is now Approved"))?;
    let status = wait_until(WAIT, POLL, || Ok(child.0.try_wait()?))?;
    assert!(status.success());
    Ok(())
}

#[test]
fn watch_prints_requests_as_they_arrive() -> Result<()> {
    let (cp, ns) = setup("approve-watch")?;
    let mut child = plugin(cp, User::ApproverA, &["watch", "-n", &ns]).stdout(Stdio::piped()).spawn()?;
    let rx = lines_of(&mut child)?;
    let _child = Killed(child);
    request(cp, &ns, "deploy-6", pending(1))?;
    let line = next_line_with(&rx, &format!("pending {ns}/deploy-6"))?;
    assert!(line.contains("tool=deploy") && line.contains("agent=release-bot"), "{line}");
    assert!(line.contains("justification=\"ship 1.4.2: fixes the checkout timeout\""), "{line}");
    assert!(line.ends_with(&format!("kubectl approve deploy-6 -n {ns}")), "{line}");
    set_status(cp, &ns, "deploy-6", &serde_json::json!({"phase": "Denied"}))?;
    next_line_with(&rx, &format!("denied {ns}/deploy-6"))?;
    Ok(())
}

#[test]
fn what_the_agent_wrote_cannot_drive_the_approvers_terminal() -> Result<()> {
    let (cp, ns) = setup("approve-escapes")?;
    // The agent's text, with an escape that would hide what follows (SGR 8, "concealed").
    let hidden = Request::new("deploy-hidden", "prod-deploy")
        .agent("release-bot", "release-bot")
        .call("platform-tools", "deploy\u{1b}[8m", serde_json::json!({"service": "checkout\u{1b}[8m", "drop": "every table"}))
        .spec("argumentsDigest", serde_json::json!(format!("sha256:{}", "2".repeat(64))))
        .spec("justification", serde_json::json!("routine\u{1b}[8m and nothing else\r\u{202e}"))
        .spec("message", serde_json::json!("ok\u{1b}]0;owned\u{7}"))
        .spec("requestedAt", serde_json::json!(rfc3339_from_now(0)));
    apply_json(cp, &ns, hidden.json())?;
    set_status(cp, &ns, "deploy-hidden", &pending(1))?;
    for args in [
        vec!["show", "deploy-hidden", "-n", &ns],
        vec!["list", "-n", &ns, "-o", "wide"],
        vec!["show", "deploy-hidden", "-n", &ns, "-o", "yaml"],
        vec!["show", "deploy-hidden", "-n", &ns, "-o", "json"],
    ] {
        let out = approve_ok(cp, User::ApproverA, &args)?;
        for raw in ['\u{1b}', '\r', '\u{7}', '\u{202e}'] {
            assert!(!out.contains(raw), "kubectl approve {} prints {raw:?} raw:\n{out}", args.join(" "));
        }
    }
    let show = approve_ok(cp, User::ApproverA, &["show", "deploy-hidden", "-n", &ns])?;
    assert!(show.contains("routine\\u{1b}[8m and nothing else"), "{show}");
    assert!(show.contains("every table"), "{show}");
    Ok(())
}
