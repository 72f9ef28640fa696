//! Transparent mode with real iptables (Debian's, nf_tables) in a network namespace of the test's
//! own, as a pod has: `tollgate-sidecar redirect` installs the rules, the sidecar runs inside, an
//! MCP server listens on a documentation-range address of the namespace's `lo`, and the agent is
//! `curl` running as another user (65534) that dials the MCP server's address directly, knowing
//! nothing of the sidecar. It is decided all the same.

mod common;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use tollgate_e2e::netns::NetNs;
use tollgate_e2e::raw_mcp::RawSession;
use tollgate_e2e::tools_dir;
use tollgate_e2e::{ControlPlane, Launch, Process, Sidecar, User, binary, wait_until};

const SERVER: &str = "192.0.2.10";
const MCP_URL: &str = "http://192.0.2.10:8080/mcp";

/// `curl` as user 65534 inside `ns`: the agent's container.
fn agent(ns: &NetNs) -> Vec<String> {
    ["nsenter", &format!("--net={}", ns.path().display()), "--", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The agent's `curl` on `url`: its HTTP status, or None when the connection failed.
fn agent_get(ns: &NetNs, args: &[&str]) -> Result<Option<u16>> {
    let runner = agent(ns);
    let out =
        Command::new(&runner[0]).args(&runner[1..]).args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]).args(args).output()?;
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    Ok((out.status.success() && code != 0).then_some(code))
}

/// A redirect counter of the sidecar: 0 only when the sidecar answered and has no such series
/// yet; an unreachable admin port or an unreadable value is an error, never a zero.
fn metric(admin: u16, route: &str) -> Result<u64> {
    let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/metrics")]).output()?;
    ensure!(out.status.success(), "the sidecar's /metrics did not answer: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("# EOF"), "not a complete metrics page: {text}");
    let line = format!("tollgate_redirected_connections_total{{route=\"{route}\"}} ");
    match text.lines().find_map(|l| l.strip_prefix(&line)) {
        Some(v) => v.trim().parse().with_context(|| format!("{line}{v}")),
        None => Ok(0),
    }
}

fn wait_metric(admin: u16, route: &str, at_least: u64) -> Result<()> {
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || Ok((metric(admin, route)? >= at_least).then_some(())))
        .with_context(|| format!("metric route={route} never reached {at_least}"))
}

/// Starts `cmd` inside `ns` and waits until `port` of the server's address accepts connections
/// there (as root: not redirected).
fn start_inside(ns: &NetNs, cp: &ControlPlane, name: &str, cmd: Command, port: u16) -> Result<Process> {
    start_at(ns, cp, name, cmd, SERVER, port)
}

fn start_at(ns: &NetNs, cp: &ControlPlane, name: &str, cmd: Command, addr: &str, port: u16) -> Result<Process> {
    let process = Process::spawn(cmd, cp.dir().join(format!("{name}.log")))?;
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        if let Some(s) = process.exited() {
            anyhow::bail!("{name} exited ({s}): {}", process.log_tail());
        }
        Ok(ns.run(&["bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")]).is_ok().then_some(()))
    })?;
    Ok(process)
}

/// A namespace and a network namespace of its own, with `address` on its `lo`.
fn world(prefix: &str, address: &str) -> Result<(&'static ControlPlane, String, NetNs)> {
    let cp = ControlPlane::shared();
    common::operator();
    tollgate_e2e::iptables()?;
    let ns = cp.create_namespace(prefix)?;
    let net = NetNs::new(cp.dir(), &ns)?;
    net.run(&["ip", "addr", "add", &format!("{address}/32"), "dev", "lo"])?;
    Ok((cp, ns, net))
}

/// The init step, as the injected init container runs it (`redirect` with `extra` flags; the
/// sidecar runs as root here, so root's traffic is the sidecar's own), then the sidecar inside.
fn redirect_and_start(cp: &'static ControlPlane, ns: &str, net: &NetNs, extra: &[&str]) -> Result<Sidecar> {
    let sidecar_bin = binary("tollgate-sidecar", "tollgate-sidecar")?;
    let out = net.command(&sidecar_bin).args(["redirect", "--proxy-uid", "0"]).args(extra).output()?;
    ensure!(out.status.success(), "redirect failed: {}", String::from_utf8_lossy(&out.stderr));
    let rules = net.run(&["iptables", "-t", "nat", "-S", "TOLLGATE_OUTPUT"])?;
    ensure!(rules.contains("--uid-owner 0 -j RETURN") && rules.contains("REDIRECT --to-ports 15006"), "{rules}");
    let env = [("TOLLGATE_TRANSPARENT_LISTEN", "127.0.0.1:15006")];
    Sidecar::start_binary(cp, ns, "coder", "coder", "coder-pod", &sidecar_bin, Launch::In(net), &[], &env)
}

#[test]
fn an_agent_that_dials_an_mcp_server_directly_is_still_decided() -> Result<()> {
    let (cp, ns, net) = world("transparent", SERVER)?;

    let mut server = net.command(tools_dir()?.join("venv/bin/python"));
    server.arg(tollgate_e2e::repo_file("e2e/servers/modern.py")).args(["8080", SERVER]);
    let _server = start_inside(&net, cp, &format!("{ns}-modern"), server, 8080)?;
    // Two plain web servers: another destination (9090), and one the redirect excludes (9091).
    let mut other = Vec::new();
    for port in [9090, 9091] {
        let mut web = net.command("python3");
        web.args(["-m", "http.server", &port.to_string(), "--bind", SERVER]).current_dir(cp.dir());
        other.push(start_inside(&net, cp, &format!("{ns}-web-{port}"), web, port)?);
    }

    cp.apply(
        User::Admin,
        &ns,
        &format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {{name: files}}
spec: {{url: "{MCP_URL}", timeoutSeconds: 10}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {{name: coder}}
spec:
  selector: {{matchLabels: {{app: coder}}}}
  serviceAccountName: coder
  mcpServers: [files]
  injection: {{transparent: true}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {{name: files}}
spec:
  tools:
    - {{server: files, name: delete_everything, rules: [{{action: Deny, message: nothing is deleted here}}]}}
    - {{server: files, name: "*", rules: [{{action: Allow}}]}}
"#
        ),
    )?;

    // Without the redirect, nothing stands between the agent and the server: the hole this closes.
    let unguarded = RawSession::open_via(&agent(&net), MCP_URL, "2025-06-18")?;
    let ran = unguarded.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}}))?;
    assert_eq!(ran.tool_text(&json!(1))?.0, "everything deleted", "{ran:?}");

    let sidecar = redirect_and_start(cp, &ns, &net, &["--exclude-ports", "9091"])?;
    let admin = sidecar.admin_port;

    // The agent dials the server itself: allowed calls run, denied ones stay denied.
    let session = RawSession::open_via(&agent(&net), MCP_URL, "2025-06-18")?;
    let echo = session.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}))?;
    assert_eq!(echo.tool_text(&json!(1))?, ("Echo: hi".to_owned(), false), "{echo:?}");
    let delete = session.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}}))?;
    let refusal = delete.refusal(&json!(2))?;
    assert!(refusal.contains("nothing is deleted here"), "{delete:?}");
    let audit = sidecar.wait_audit(|r| r.iter().any(|a| a["tool"] == "delete_everything"))?;
    let record = audit.iter().find(|a| a["tool"] == "delete_everything").context("no audit record")?;
    assert_eq!(record["decision"], "deny", "{record}");
    wait_metric(admin, "mcp", 1)?;
    // The sidecar's own upstream connections went out unredirected (a loop would be refused).
    assert_eq!(metric(admin, "refused_loop")?, 0);

    // A path of the server other than its MCP endpoint is not a way around the decision.
    assert_eq!(agent_get(&net, &["-X", "POST", &format!("http://{SERVER}:8080/other")])?, Some(404));
    // Encrypted traffic to the server's address cannot be read: refused.
    assert_eq!(agent_get(&net, &["-k", &format!("https://{SERVER}:8080/mcp")])?, None);
    wait_metric(admin, "refused_encrypted", 1)?;
    // Dialling the redirect port itself leads nowhere: its "original destination" is itself.
    assert_eq!(agent_get(&net, &["http://127.0.0.1:15006/mcp"])?, None);
    wait_metric(admin, "refused_loop", 1)?;

    // Other destinations pass through untouched, until the agent says they may not.
    assert_eq!(agent_get(&net, &[&format!("http://{SERVER}:9090/")])?, Some(200));
    wait_metric(admin, "passthrough", 1)?;
    cp.kubectl_ok(
        User::Admin,
        ["-n", &ns, "patch", "managedagent", "coder", "--type=merge", "-p", r#"{"spec":{"injection":{"otherDestinations":"Refuse"}}}"#],
    )?;
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || Ok(agent_get(&net, &[&format!("http://{SERVER}:9090/")])?.is_none().then_some(())))
        .context("the other destination stayed reachable")?;
    wait_metric(admin, "refused_other_destination", 1)?;
    // What the chart's values exclude never reaches the sidecar.
    assert_eq!(agent_get(&net, &[&format!("http://{SERVER}:9091/")])?, Some(200));
    // The MCP server is still served.
    let again = session.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "still"}}}))?;
    assert_eq!(again.tool_text(&json!(3))?, ("Echo: still".to_owned(), false), "{again:?}");
    drop(other);
    Ok(())
}

/// A Service's name is one address of its MCP server; its pods' addresses are others, and an
/// agent that dials a pod directly is decided as if it had dialled the Service. The control plane
/// has no endpoint controller: the test writes the EndpointSlice one would. The Service is named
/// `localhost` so that the sidecar reaches it by name without cluster DNS; its pod listens on
/// 192.0.2.11 (and on loopback, where the sidecar's upstream calls arrive).
#[test]
fn an_agent_that_dials_the_pod_behind_an_mcp_servers_service_is_still_decided() -> Result<()> {
    const POD: &str = "192.0.2.11";
    let (cp, ns, net) = world("transparent-pods", POD)?;
    let mut server = net.command(tools_dir()?.join("venv/bin/python"));
    server.arg(tollgate_e2e::repo_file("e2e/servers/modern.py")).args(["8081", "0.0.0.0"]);
    let _server = start_at(&net, cp, &format!("{ns}-pod"), server, POD, 8081)?;
    cp.apply(
        User::Admin,
        &ns,
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: files}
spec: {url: "http://localhost:8081/mcp", timeoutSeconds: 10}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: localhost-pods, labels: {kubernetes.io/service-name: localhost}}
addressType: IPv4
endpoints: [{addresses: ["192.0.2.11"]}]
ports: [{port: 8081, protocol: TCP}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {name: coder}
spec:
  selector: {matchLabels: {app: coder}}
  serviceAccountName: coder
  mcpServers: [files]
  injection: {transparent: true}
---
apiVersion: tollgate.dev/v1alpha1
kind: ToolPolicy
metadata: {name: files}
spec:
  tools:
    - {server: files, name: delete_everything, rules: [{action: Deny, message: nothing is deleted here}]}
    - {server: files, name: "*", rules: [{action: Allow}]}
"#,
    )?;
    let sidecar = redirect_and_start(cp, &ns, &net, &[])?;

    // The pod's address, not the Service's: served and decided as the server `files`.
    let pod_url = format!("http://{POD}:8081/mcp");
    let session = RawSession::open_via(&agent(&net), &pod_url, "2025-06-18")?;
    let echo = session.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "pod"}}}))?;
    assert_eq!(echo.tool_text(&json!(1))?, ("Echo: pod".to_owned(), false), "{echo:?}");
    let delete = session.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}}))?;
    let refusal = delete.refusal(&json!(2))?;
    assert!(refusal.contains("nothing is deleted here"), "the denied tool ran at the pod's address: {delete:?}");
    let audit = sidecar.wait_audit(|r| r.iter().any(|a| a["tool"] == "delete_everything"))?;
    let record = audit.iter().find(|a| a["tool"] == "delete_everything").context("no audit record")?;
    assert_eq!((record["server"].as_str(), record["decision"].as_str()), (Some("files"), Some("deny")), "{record}");
    wait_metric(sidecar.admin_port, "mcp", 1)?;
    assert_eq!(metric(sidecar.admin_port, "passthrough")?, 0, "a connection to the pod was relayed undecided");
    Ok(())
}
