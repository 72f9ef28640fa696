//! `kubectl approve ui` against the real API server, the operator's admission webhook and a
//! sidecar holding real calls, driven in headless Debian Chromium (Selenium over ChromeDriver).
//! Screenshots of the inbox and of a request go to `docs/images/` with
//! `TOLLGATE_UPDATE_SCREENSHOTS=1`, else to the test's directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Env, pending_request, setup};
use serde_json::{Value, json};
use tollgate_e2e::browser::{ApproveUi, drive};
use tollgate_e2e::requests::Request;
use tollgate_e2e::{ControlPlane, User, py_client, random_hex, repo_file, tool_text, wait_until};

fn shots(cp: &ControlPlane) -> PathBuf {
    if std::env::var_os("TOLLGATE_UPDATE_SCREENSHOTS").is_some() { repo_file("docs/images") } else { cp.dir().to_path_buf() }
}

/// A held call (the policy's `trigger-long-running-operation`) made on a thread; its steps.
fn held_call(env: &Env, arguments: Value) -> std::thread::JoinHandle<Result<Vec<Value>>> {
    let url = env.sidecar.url("everything");
    std::thread::spawn(move || py_client(&url, &json!([{"op": "call_tool", "name": "trigger-long-running-operation", "arguments": arguments}])))
}

fn join(call: std::thread::JoinHandle<Result<Vec<Value>>>) -> Result<Vec<Value>> {
    call.join().map_err(|_| anyhow::anyhow!("the held call's client panicked"))?
}

fn decisions(cp: &ControlPlane, ns: &str, name: &str) -> Result<Vec<Value>> {
    let out = cp.kubectl_ok(User::Admin, ["get", "ar", name, "-n", ns, "-o", "json"])?;
    let ar: Value = serde_json::from_str(&out)?;
    Ok(ar["status"]["decisions"].as_array().cloned().unwrap_or_default())
}

/// Waits until the browser says its page is up.
fn wait_mark(path: &std::path::Path) -> Result<()> {
    wait_until(Duration::from_secs(60), Duration::from_millis(50), || Ok(path.exists().then_some(())))
}

#[test]
fn an_approver_sees_a_held_call_appear_approves_it_and_the_call_runs() -> Result<()> {
    let env = setup("ui-approve", false)?;
    let ui = ApproveUi::start(env.cp, User::ApproverA, &["-n", &env.ns])?;
    let (dir, mark) = (shots(env.cp), env.cp.dir().join(format!("ui-up-{}", random_hex(4)?)));
    let row = format!("#to-decide tr[data-request^='{}/']", env.ns);
    let scenario = json!([
        {"op": "open", "url": ui.url},
        {"op": "wait", "css": "#nothing-to-decide"},
        {"op": "url"},
        {"op": "mark", "path": mark},
        // The held call appears without a reload: the page follows a watch.
        {"op": "wait", "css": row, "timeout": 40},
        {"op": "screenshot", "path": dir.join("approve-ui-inbox.png")},
        {"op": "click", "css": format!("{row} a")},
        {"op": "wait", "css": "#decide"},
        {"op": "text", "css": "#tool"},
        {"op": "text", "css": "#approvals"},
        {"op": "text", "css": "#time-left"},
        {"op": "screenshot", "path": dir.join("approve-ui-request.png")},
        {"op": "type", "css": "#reason", "text": "checked in the browser"},
        {"op": "click", "css": "#approve"},
        {"op": "wait", "css": "#flash", "contains": "approved"},
        {"op": "wait", "css": "#phase", "contains": "Approved"},
        {"op": "wait", "css": "#decide", "gone": true},
        {"op": "console"},
    ]);
    let browser = std::thread::spawn(move || drive(&scenario));
    wait_mark(&mark)?;
    let call = held_call(&env, json!({"duration": 0.1, "steps": 1}));
    let steps = browser.join().map_err(|_| anyhow::anyhow!("the browser driver panicked"))??;
    // The secret left the address bar with the first request.
    ensure!(steps[2] == json!(format!("{}/", ui.base)), "address after opening: {}", steps[2]);
    ensure!(steps[8] == json!("trigger-long-running-operation"), "tool shown: {}", steps[8]);
    ensure!(steps[9].as_str().is_some_and(|a| a.starts_with("0/1")), "approvals shown: {}", steps[9]);
    ensure!(steps[10].as_str().is_some_and(|t| t.starts_with("in ")), "time left: {}", steps[10]);
    let console: Vec<String> = serde_json::from_value(steps[17].clone())?;
    ensure!(!console.iter().any(|m| m.contains("Content Security Policy") || m.contains("Refused to")), "the page broke its own CSP: {console:?}");

    let out = join(call)?;
    ensure!(out[0]["ok"] == true, "the approved call did not run: {out:?}");
    let name = pending_request(env.cp, &env.ns)?;
    let d = decisions(env.cp, &env.ns, &name)?;
    ensure!(d.len() == 1 && d[0]["user"] == "approver-a" && d[0]["via"] == "browser" && d[0]["reason"] == "checked in the browser", "{d:?}");
    Ok(())
}

#[test]
fn two_approvers_each_add_their_decision_in_their_own_browser() -> Result<()> {
    let env = setup("ui-quorum", false)?;
    env.cp.kubectl_ok(User::Admin, ["patch", "approvalworkflow", "ops", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"requiredApprovals":2}}"#])?;
    let call = held_call(&env, json!({"duration": 0.1, "steps": 1}));
    let name = pending_request(env.cp, &env.ns)?;
    env.cp.wait_phase(&env.ns, &name, "Pending", Duration::from_secs(20))?;
    let page = |ui: &ApproveUi| format!("{}/r/{}/{name}", ui.base, env.ns);

    let a = ApproveUi::start(env.cp, User::ApproverA, &[])?;
    drive(&json!([
        {"op": "open", "url": a.url},
        {"op": "open", "url": page(&a)},
        {"op": "wait", "css": "#approvals", "contains": "0/2"},
        {"op": "click", "css": "#approve"},
        {"op": "wait", "css": "#flash", "contains": "(1/2 approvals)"},
        // Still open for others, but not for approver-a again.
        {"op": "wait", "css": "#closed", "contains": "you (approver-a) already decided"},
    ]))?;
    ensure!(env.cp.phase(&env.ns, &name)? == "Pending", "one approval of two resolved the request");

    let b = ApproveUi::start(env.cp, User::ApproverB, &[])?;
    let steps = drive(&json!([
        {"op": "open", "url": b.url},
        {"op": "wait", "css": format!("#to-decide tr[data-request='{}/{name}']", env.ns)},
        {"op": "open", "url": page(&b)},
        {"op": "text", "css": "#decisions"},
        {"op": "type", "css": "#reason", "text": "second pair of eyes"},
        {"op": "click", "css": "#approve"},
        {"op": "wait", "css": "#phase", "contains": "Approved"},
    ]))?;
    let table = steps[3].as_str().unwrap_or_default();
    ensure!(table.contains("approver-a") && table.contains("Approve") && table.contains("browser"), "approver-b saw: {table}");
    let out = join(call)?;
    ensure!(out[0]["ok"] == true, "the call did not run after two approvals: {out:?}");
    let users: Vec<Value> = decisions(env.cp, &env.ns, &name)?.iter().map(|d| d["user"].clone()).collect();
    ensure!(users == [json!("approver-a"), json!("approver-b")], "{users:?}");
    Ok(())
}

#[test]
fn an_outsider_sees_nothing_to_decide_and_cannot_read_a_request() -> Result<()> {
    let env = setup("ui-outsider", false)?;
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops"))?;
    env.cp.wait_phase(&env.ns, "deploy-1", "Pending", Duration::from_secs(20))?;
    let ui = ApproveUi::start(env.cp, User::Outsider, &[])?;
    let steps = drive(&json!([
        {"op": "open", "url": ui.url},
        {"op": "wait", "css": "#nothing-to-decide"},
        {"op": "text", "css": "#list-error"},
        {"op": "open", "url": format!("{}/r/{}/deploy-1", ui.base, env.ns)},
        {"op": "text", "css": "#refusal"},
        {"op": "count", "css": "#decide"},
    ]))?;
    let error = steps[2].as_str().unwrap_or_default();
    ensure!(error.starts_with("you (outsider) may not list approval requests"), "{error}");
    let refusal = steps[4].as_str().unwrap_or_default();
    ensure!(refusal.contains("you (outsider) may not read approval requests"), "{refusal}");
    ensure!(steps[5] == json!(0), "an outsider got a decision form");
    Ok(())
}

#[test]
fn hostile_arguments_render_inertly_and_a_deny_needs_a_reason() -> Result<()> {
    let env = setup("ui-hostile", false)?;
    let hostile = json!({
        "duration": 0.1, "steps": 1,
        "note": "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">",
        "link": "javascript:window.__pwned=3",
        "html": "<a href=\"javascript:window.__pwned=4\">click me</a>",
        "target": "d\u{435}ploy \u{202e}txt.exe",
    });
    let call = held_call(&env, hostile);
    let name = pending_request(env.cp, &env.ns)?;
    env.cp.wait_phase(&env.ns, &name, "Pending", Duration::from_secs(20))?;
    // A request the agent's own account wrote directly, with a look-alike tool name.
    env.cp.create_request(&env.ns, &Request::new("lookalike", "ops").call("everything", "d\u{435}ploy", json!({})))?;
    let ui = ApproveUi::start(env.cp, User::ApproverA, &["-n", &env.ns])?;
    let steps = drive(&json!([
        {"op": "open", "url": ui.url},
        {"op": "wait", "css": format!("tr[data-request='{}/lookalike'] .warn", env.ns), "contains": "look-alike"},
        {"op": "text", "css": format!("tr[data-request='{}/lookalike'] .name", env.ns)},
        {"op": "open", "url": format!("{}/r/{}/{name}", ui.base, env.ns)},
        {"op": "text", "css": "#arguments"},
        {"op": "js", "script": "return typeof window.__pwned"},
        {"op": "count", "css": "#arguments *, a[href^='javascript'], img"},
        {"op": "click", "css": "#deny"},
        {"op": "wait", "css": "#flash", "contains": "reason"},
        {"op": "js", "script": "return typeof window.__pwned"},
        {"op": "type", "css": "#reason", "text": "arguments look like an attack"},
        {"op": "click", "css": "#deny"},
        {"op": "wait", "css": "#phase", "contains": "Denied"},
    ]))?;
    ensure!(steps[2] == json!("d\\u{435}ploy"), "look-alike name shown as {}", steps[2]);
    let args = steps[4].as_str().unwrap_or_default();
    for shown in ["<script>window.__pwned = 1</script>", "javascript:window.__pwned=3", "d\u{435}ploy \\u{202e}txt.exe"] {
        ensure!(args.contains(shown), "the page does not show {shown:?} as text: {args}");
    }
    ensure!(steps[5] == json!("undefined") && steps[9] == json!("undefined"), "the agent's script ran");
    ensure!(steps[6] == json!(0), "the arguments made elements: {}", steps[6]);
    let out = join(call)?;
    let (text, is_error) = tool_text(&out[0])?;
    ensure!(is_error && text.contains("arguments look like an attack"), "the denied call: {out:?}");
    Ok(())
}

#[test]
fn an_expired_request_cannot_be_approved() -> Result<()> {
    let env = setup("ui-expired", false)?;
    env.cp.kubectl_ok(User::Admin, ["patch", "approvalworkflow", "ops", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"timeoutSeconds":30}}"#])?;
    // Requested 15 s ago under a 30 s timeout: it expires while the page is open.
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops").aged(15))?;
    env.cp.wait_phase(&env.ns, "deploy-1", "Pending", Duration::from_secs(20))?;
    let ui = ApproveUi::start(env.cp, User::ApproverA, &["-n", &env.ns])?;
    let steps = drive(&json!([
        {"op": "open", "url": ui.url},
        {"op": "open", "url": format!("{}/r/{}/deploy-1", ui.base, env.ns)},
        {"op": "count", "css": "#decide"},
        {"op": "wait", "css": "#phase", "contains": "Expired", "timeout": 40},
        {"op": "wait", "css": "#decide", "gone": true},
        // A page left open from before: its form, shown again and sent.
        {"op": "js", "script": "document.getElementById('decide').hidden = false; return true"},
        {"op": "click", "css": "#approve"},
        {"op": "wait", "css": "#flash", "contains": "Expired"},
        // The history has it under its phase, and not under another.
        {"op": "open", "url": format!("{}/history?phase=Expired&namespace={}", ui.base, env.ns)},
        {"op": "text", "css": format!("tr[data-request='{}/deploy-1']", env.ns)},
        {"op": "open", "url": format!("{}/history?phase=Approved&namespace={}", ui.base, env.ns)},
        {"op": "wait", "css": "#no-history"},
    ]))?;
    ensure!(steps[2] == json!(1), "the form was not there while the request was pending");
    ensure!(steps[9].as_str().is_some_and(|row| row.contains("Expired") && row.contains("deploy")), "history row: {}", steps[9]);
    ensure!(decisions(env.cp, &env.ns, "deploy-1")?.is_empty(), "a decision was recorded on an expired request");
    Ok(())
}

/// One HTTP/1.1 exchange with the ui's server: status, head, body.
fn http(port: u16, request: &str) -> Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no head")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, head.to_lowercase(), body.to_owned()))
}

#[test]
fn the_server_answers_only_its_own_pages() -> Result<()> {
    let env = setup("ui-gate", false)?;
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops"))?;
    let ui = ApproveUi::start(env.cp, User::ApproverA, &["-n", &env.ns])?;
    let port = ui.port;
    let host = ui.base.strip_prefix("http://").context("an http link")?.to_owned();
    ensure!(host.ends_with(&format!(".localhost:{port}")) && host.len() > 20, "the page's name: {host}");
    let get = |path: &str, extra: &str| http(port, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"));
    let (status, _, body) = get("/", "")?;
    ensure!(status == 403 && body.contains("one-time secret"), "{status} {body}");
    let token = ui.url.split("token=").nth(1).context("token")?;
    // A page elsewhere cannot use the link for the person.
    let (status, ..) = http(port, &format!("GET /?token={token} HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"))?;
    ensure!(status == 421, "a rebound Host got {status}");
    // Nor another name for loopback: the cookie is scoped to the page's own name, so no other
    // server on 127.0.0.1 (whatever its port) is ever sent it.
    for other in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, ..) = http(port, &format!("GET /?token={token} HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"))?;
        ensure!(status == 421, "Host {other} got {status}");
    }
    // Opened with a path of someone's choosing, it still lands on the inbox (no open redirect).
    let (status, head, body) = get(&format!("//evil.example/?token={token}"), "Sec-Fetch-Site: none\r\n")?;
    ensure!(!head.contains("\r\nlocation:") && body.contains("content=\"0;url=/\""), "{head}\n{body}");
    ensure!(
        status == 200 && head.contains(&format!("set-cookie: tollgate-ui-{port}=")) && head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    ensure!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
    let session = head.split(&format!("tollgate-ui-{port}=")).nth(1).and_then(|s| s.split(';').next()).context("cookie")?.to_owned();
    let (status, _, body) = get(&format!("/?token={token}"), "")?;
    ensure!(status == 403 && body.contains("already used"), "the link opened twice: {status} {body}");
    let cookie = format!("Cookie: tollgate-ui-{port}={session}\r\n");
    let (status, head, body) = get("/", &cookie)?;
    ensure!(status == 200 && body.contains(&format!("{}/deploy-1", env.ns)), "{status} {body}");
    for header in ["x-frame-options: deny", "x-content-type-options: nosniff", "referrer-policy: same-origin", "cache-control: no-store"] {
        ensure!(head.contains(header), "no {header}: {head}");
    }
    // Another origin on the same machine (another port: the same site) cannot decide or read.
    let form = "verdict=approve&reason=&csrf=x";
    let post = |origin: &str| {
        http(
            port,
            &format!(
                "POST /r/{}/deploy-1/decide HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                env.ns,
                form.len()
            ),
        )
    };
    let (status, ..) = post("http://127.0.0.1:1")?;
    ensure!(status == 403, "a cross-origin post got {status}");
    let (status, _, body) = post(&format!("http://{host}"))?;
    ensure!(status == 403 && body.contains("did not come from this page"), "a post without the form's token got {status}: {body}");
    let (status, ..) = get("/", &format!("{cookie}Sec-Fetch-Site: same-site\r\n"))?;
    ensure!(status == 403, "a same-site page got {status}");
    // The form's own token, and a path whose decoded name holds a line break: refused plainly,
    // and the server still answers.
    let (_, _, page) = get(&format!("/r/{}/deploy-1", env.ns), &cookie)?;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).context("no form token")?.to_owned();
    let form = format!("verdict=approve&reason=&csrf={csrf}");
    let crlf = http(
        port,
        &format!(
            "POST /r/a%0d%0aSet-Cookie:x/deploy-1/decide HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    ensure!(crlf.as_ref().is_ok_and(|(status, head, _)| *status == 404 && !head.contains("set-cookie: x")), "a name with a line break: {crlf:?}");
    let (status, ..) = get("/", &cookie)?;
    ensure!(status == 200, "the server stopped answering: {status}");
    // A sibling `*.localhost` page's cookie of the same name, sent first, does not lock us out.
    let (status, ..) = get("/", &format!("Cookie: tollgate-ui-{port}=tossed; tollgate-ui-{port}={session}\r\n"))?;
    ensure!(status == 200, "a tossed cookie shadowed the session: {status}");
    ensure!(decisions(env.cp, &env.ns, "deploy-1")?.is_empty(), "a refused post decided");
    // The request the page showed is deleted and another made under its name: the page's form
    // names the old one, so the click decides nothing.
    let uid = page.split("name=\"uid\" value=\"").nth(1).and_then(|s| s.split('"').next()).context("no uid in the form")?.to_owned();
    env.cp.kubectl_ok(User::Admin, ["delete", "approvalrequest", "deploy-1", "-n", &env.ns])?;
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops"))?;
    let form = format!("verdict=approve&reason=&csrf={csrf}&uid={uid}");
    let (status, ..) = http(
        port,
        &format!(
            "POST /r/{}/deploy-1/decide HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            env.ns,
            form.len()
        ),
    )?;
    ensure!(status == 303, "the decision post answered {status}");
    let (_, _, page) = get(&format!("/r/{}/deploy-1", env.ns), &cookie)?;
    ensure!(page.contains("a new request under the same name"), "no word of the replaced request: {page}");
    ensure!(decisions(env.cp, &env.ns, "deploy-1")?.is_empty(), "a click on the old request decided the new one");
    Ok(())
}

#[test]
fn the_webhooks_refusal_reads_in_plain_words() -> Result<()> {
    let env = setup("ui-refused", false)?;
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops"))?;
    env.cp.wait_phase(&env.ns, "deploy-1", "Pending", Duration::from_secs(20))?;
    // The link is opened by the browser `$BROWSER` names, as on a person's desktop.
    let opened = env.cp.dir().join(format!("opened-{}", random_hex(4)?));
    let opener = env.cp.dir().join(format!("opener-{}.sh", random_hex(4)?));
    std::fs::write(&opener, format!("#!/bin/sh\necho \"$1\" > {}\n", opened.display()))?;
    std::process::Command::new("chmod").arg("+x").arg(&opener).status()?;
    let ui = ApproveUi::start_with(env.cp, User::ApproverA, &["-n", &env.ns], &[("BROWSER", opener.to_str().context("path")?)])?;
    // It is given a private file that leads to the link, never the link (a command line is
    // everyone's to read).
    let launcher =
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || Ok(std::fs::read_to_string(&opened).ok().filter(|u| !u.trim().is_empty())))?;
    let launcher = launcher.trim().to_owned();
    ensure!(!launcher.contains("token="), "the opener's command line carries the secret: {launcher}");
    let file = std::path::PathBuf::from(launcher.strip_prefix("file://").context("a file: URL")?);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file)?.permissions());
    ensure!(mode & 0o077 == 0, "the launcher file is readable by others: {mode:o}");
    ensure!(std::fs::read_to_string(&file)?.contains(&ui.url), "the launcher does not lead to the link");

    let (up, changed) = (env.cp.dir().join(format!("ui-form-{}", random_hex(4)?)), env.cp.dir().join(format!("ui-changed-{}", random_hex(4)?)));
    let scenario = json!([
        {"op": "open", "url": launcher},
        {"op": "open", "url": format!("{}/r/{}/deploy-1", ui.base, env.ns)},
        {"op": "wait", "css": "#decide"},
        {"op": "mark", "path": up},
        // Meanwhile approver-a stops being an approver: the open page still has its form, and
        // the API server's webhook has the last word.
        {"op": "wait_file", "path": changed},
        {"op": "click", "css": "#approve"},
        {"op": "wait", "css": "#flash", "contains": "not an approver"},
    ]);
    let browser = std::thread::spawn(move || drive(&scenario));
    wait_mark(&up)?;
    env.cp.kubectl_ok(
        User::Admin,
        ["patch", "approvalworkflow", "ops", "-n", &env.ns, "--type=merge", "-p", r#"{"spec":{"approvers":{"users":["approver-b"]}}}"#],
    )?;
    // Until the webhook knows (a dry run goes through admission and stores nothing).
    let d = json!([{"op": "add", "path": "/status/decisions", "value": [
        {"user": "approver-a", "decision": "Approve", "time": jiff::Timestamp::now().to_string(), "via": "kubectl"}]}])
    .to_string();
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let out =
            env.cp.kubectl(User::ApproverA, ["patch", "ar", "deploy-1", "-n", &env.ns, "--subresource=status", "--type=json", "--dry-run=server", "-p", &d])?;
        Ok((!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not an approver")).then_some(()))
    })?;
    std::fs::write(&changed, "")?;
    let steps = browser.join().map_err(|_| anyhow::anyhow!("the browser driver panicked"))??;
    let flash = steps[6].as_str().unwrap_or_default();
    ensure!(flash.starts_with("you (approver-a) are not an approver of workflow ops"), "{flash}");
    ensure!(decisions(env.cp, &env.ns, "deploy-1")?.is_empty(), "a refused decision was stored");
    Ok(())
}

#[test]
fn kubectl_completes_pending_request_names() -> Result<()> {
    let env = setup("ui-complete", false)?;
    env.cp.create_request(&env.ns, &Request::new("deploy-1", "ops"))?;
    env.cp.wait_phase(&env.ns, "deploy-1", "Pending", Duration::from_secs(20))?;
    let dir = env.cp.dir().join(format!("complete-{}", random_hex(4)?));
    std::fs::create_dir_all(&dir)?;
    let path = tollgate_e2e::plugin_path_with_completion(&dir)?;
    let kubeconfig = env.cp.kubeconfig(User::ApproverA);
    let complete = |words: &[&str]| -> Result<String> {
        let out = std::process::Command::new("kubectl")
            .args(["__complete", "approve", "-n", &env.ns, "--kubeconfig", kubeconfig.to_str().context("path")?])
            .args(words)
            .env("PATH", &path)
            .env_remove("KUBECONFIG")
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    };
    let names = complete(&["deny", "dep"])?;
    ensure!(names.lines().any(|l| l == "deploy-1\tdeploy by coder"), "{names}");
    // A prefix nothing matches: no candidates, only the directive.
    let none = complete(&["deny", "zzz"])?;
    ensure!(none.trim() == ":4", "{none}");
    Ok(())
}
