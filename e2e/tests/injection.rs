//! Sidecar injection (DESIGN §3.6): a pod applied with plain `kubectl apply` in a namespace
//! labelled `tollgate.dev/injection=enabled` is stored with the firewall beside it, through the
//! mutating webhook the chart installs and the operator serves; pods that are no agent pass
//! unchanged, pods that claim an identity they may not have are refused with the reason, and a
//! pod that opts out is left alone with an Event saying so.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_e2e::{ControlPlane, User, wait_until};

mod common;
use common::operator;

fn pod_yaml(name: &str, app: &str, service_account: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}}}\n  annotations: {{{annotations}}}\nspec:\n  serviceAccountName: {service_account}\n  containers:\n    - name: agent\n      image: python:3.12\n      command: [python, agent.py]\n"
    )
}

fn stored(cp: &ControlPlane, ns: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "pod", name, "-n", ns, "-o", "json"])?)?)
}

const AGENT: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: github-token}
stringData: {token: not-a-real-token}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: github}
spec:
  url: http://127.0.0.1:9/mcp
  headers: [{name: Authorization, prefix: "Bearer ", secretKeyRef: {name: github-token, key: token}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: payroll}
spec:
  url: http://127.0.0.1:9/payroll
  headers: [{name: X-Key, secretKeyRef: {name: payroll-key, key: k}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ManagedAgent
metadata: {name: coder}
spec: {selector: {matchLabels: {app: coder}}, serviceAccountName: coder, mcpServers: [github]}
"#;

#[test]
fn a_pod_applied_with_kubectl_is_injected_and_only_as_its_agent() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("inject")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    let out = cp.apply_output(User::Admin, &ns, AGENT)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("coder-1", "coder", "coder", ""))?;
    ensure!(out.status.success(), "the agent's pod is admitted: {}", String::from_utf8_lossy(&out.stderr));
    let pod = stored(cp, &ns, "coder-1")?;
    let spec = &pod["spec"];
    let sidecar = &spec["initContainers"][0];
    assert_eq!((sidecar["name"].as_str(), sidecar["restartPolicy"].as_str()), (Some("tollgate-sidecar"), Some("Always")), "{pod}");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    let env = |c: &Value, name: &str| c["env"].as_array().into_iter().flatten().find(|e| e["name"] == name).cloned();
    assert_eq!(env(sidecar, "TOLLGATE_AGENT").map(|e| e["value"].clone()), Some("coder".into()));
    assert_eq!(env(sidecar, "TOLLGATE_POD").map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone()), Some("metadata.name".into()));
    let mounts: Vec<&str> = sidecar["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
    assert!(mounts.contains(&"/var/run/tollgate/credentials/github-token"), "the agent's server credentials: {mounts:?}");
    assert!(!mounts.iter().any(|m| m.contains("payroll")), "not a server the agent may not use: {mounts:?}");
    assert!(mounts.contains(&"/var/run/secrets/kubernetes.io/serviceaccount"), "{mounts:?}");
    // Only the sidecar speaks for the agent: the app container has neither token nor secrets.
    assert_eq!(spec["automountServiceAccountToken"], false);
    let app = &spec["containers"][0];
    assert_eq!(env(app, "TOLLGATE_MCP_URL").map(|e| e["value"].clone()), Some("http://127.0.0.1:15001/mcp".into()));
    assert!(app["volumeMounts"].as_array().is_none_or(|m| m.is_empty()), "{app}");
    assert_eq!(pod["metadata"]["annotations"]["tollgate.dev/injected"], "coder");
    // The agent counts its injected pods (none runs: there is no kubelet here).
    wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), || {
        let said = cp.kubectl_ok(User::Admin, ["get", "ma", "coder", "-n", &ns, "-o", r#"jsonpath={.status.conditions[?(@.type=="Injected")].message}"#])?;
        Ok((said.trim() == "1 pods injected with the sidecar, 0 running").then_some(()))
    })
    .context("the agent's Injected condition")?;
    // Only the sidecar holds the agent's identity, and the agent's status says so.
    let isolated = cp.kubectl_ok(User::Admin, ["get", "ma", "coder", "-n", &ns, "-o", r#"jsonpath={.status.conditions[?(@.type=="Isolated")].reason}"#])?;
    ensure!(isolated.trim() == "SidecarOnly", "the Isolated condition: {isolated:?}");

    // A pod that is no agent passes as it came.
    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("web", "web", "default", ""))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stored(cp, &ns, "web")?["spec"].get("initContainers").is_none());

    // The agent's labels under another service account: refused, saying which.
    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("impostor", "coder", "deployer", ""))?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("ManagedAgent coder") && err.contains("\"deployer\""), "{err}");

    // Opted out, as a pod that does not run as the agent: created bare, and the skip is an Event
    // on the agent.
    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("bare", "coder", "helper", "tollgate.dev/inject: \"false\""))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stored(cp, &ns, "bare")?["spec"].get("initContainers").is_none());
    wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), || {
        let events = cp.kubectl_ok(User::Admin, ["get", "events", "-n", &ns, "--field-selector", "reason=InjectionSkipped", "-o", "json"])?;
        Ok((events.contains("pod bare opted out") && events.contains("\"name\": \"coder\"")).then_some(()))
    })
    .context("the InjectionSkipped Event")?;

    // Two agents select the pod: refused, naming both.
    let out = cp.apply_output(
        User::Admin,
        &ns,
        "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: any-app}\nspec: {selector: {matchExpressions: [{key: app, operator: Exists}]}, serviceAccountName: coder}\n",
    )?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("coder-2", "coder", "coder", ""))?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("several ManagedAgents (any-app, coder)"), "{err}");

    // A namespace without the label is not injected.
    let plain = cp.create_namespace("inject-off")?;
    let out = cp.apply_output(User::Admin, &plain, AGENT)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cp.apply_output(User::Admin, &plain, &pod_yaml("coder-1", "coder", "coder", ""))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stored(cp, &plain, "coder-1")?["spec"].get("initContainers").is_none());
    Ok(())
}

#[test]
fn a_sidecar_running_as_another_service_account_refuses_to_speak_for_the_agent() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("identity")?;
    let out = cp.apply_output(User::Admin, &ns, AGENT)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Its own service account: it starts and serves.
    let own = tollgate_e2e::Sidecar::start(cp, &ns, "coder", "coder", "coder-own")?;
    // Another service account with the same rights: it refuses to start, saying why.
    let err = match tollgate_e2e::Sidecar::start(cp, &ns, "coder", "deployer", "coder-borrowed") {
        Ok(_) => anyhow::bail!("a sidecar running as deployer started for agent coder"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&format!("runs as system:serviceaccount:{ns}:deployer")) && err.contains("\"coder\""), "{err}");
    // An edit that gives the agent another service account stops the running one.
    cp.kubectl_ok(User::Admin, ["patch", "ma", "coder", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"serviceAccountName":"someone-else"}}"#])?;
    wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(50), || Ok(own.process.exited().map(|_| ())))
        .context("the sidecar stops once its agent runs as another service account")?;
    Ok(())
}

#[test]
fn a_transparent_agent_pod_that_could_undo_its_redirect_is_refused() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("inject-escape")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    let agent = "apiVersion: tollgate.dev/v1alpha1\nkind: ManagedAgent\nmetadata: {name: coder}\nspec: {selector: {matchLabels: {app: coder}}, serviceAccountName: coder, injection: {transparent: true}}\n";
    let out = cp.apply_output(User::Admin, &ns, agent)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let with = |name: &str, security: &str| format!("{}      securityContext: {security}\n", pod_yaml(name, "coder", "coder", ""));
    for (name, security, says) in [
        ("admin", "{capabilities: {add: [NET_ADMIN]}}", "adds capability NET_ADMIN"),
        ("privileged", "{privileged: true}", "is privileged"),
        ("as-sidecar", "{runAsUser: 1337}", "runs as UID 1337"),
    ] {
        let out = cp.apply_output(User::Admin, &ns, &with(name, security))?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(says) && err.contains("redirect"), "{name}: {err}");
    }
    // The same agent's ordinary pod is injected, redirect first.
    let out = cp.apply_output(User::Admin, &ns, &pod_yaml("ordinary", "coder", "coder", ""))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let init: Vec<String> =
        stored(cp, &ns, "ordinary")?["spec"]["initContainers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(init, ["tollgate-redirect", "tollgate-sidecar"]);
    Ok(())
}

/// `name` with its own pod spec lines (under `spec:`), as the namespace's admin writes it.
fn pod_with(name: &str, labels: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{spec}")
}

/// Lets `user` do anything with pods in `ns` (what `edit` grants on them; the aggregated roles
/// stay empty here, with no controller manager to aggregate them): whoever may create and edit
/// pods there.
fn namespace_admin(cp: &ControlPlane, ns: &str, user: User) -> Result<()> {
    let resources = "--resource=pods,pods/ephemeralcontainers,pods/attach,pods/exec";
    cp.kubectl_ok(User::Admin, ["create", "role", "pod-editor", "-n", ns, "--verb=*", resources])?;
    cp.kubectl_ok(User::Admin, ["create", "rolebinding", "pod-editor", "-n", ns, "--role=pod-editor", &format!("--user={}", user.name())])?;
    Ok(())
}

/// Every pod that runs as the agent's service account carries the sidecar or is refused, and no
/// other container of an agent pod gets the agent's identity: each refusal is the webhook's own,
/// and nothing refused was stored.
#[test]
fn no_pod_borrows_the_agents_identity_around_its_sidecar() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("identity-doors")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    let out = cp.apply_output(User::Admin, &ns, AGENT)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let editor = User::Outsider;
    namespace_admin(cp, &ns, editor)?;
    let app = "  containers:\n    - name: agent\n      image: python:3.12\n      command: [python, agent.py]\n";
    let cases = [
        ("unmatched", "app: helper", format!("  serviceAccountName: coder\n{app}"), "matches no agent's selector"),
        ("opted-out", "app: coder", format!("  serviceAccountName: coder\n{app}"), "only a pod that does not run as an agent may opt out"),
        ("shared-pids", "app: coder", format!("  serviceAccountName: coder\n  shareProcessNamespace: true\n{app}"), "shareProcessNamespace"),
        ("host-pids", "app: coder", format!("  serviceAccountName: coder\n  hostPID: true\n{app}"), "hostPID"),
        (
            "own-token",
            "app: coder",
            format!(
                "  serviceAccountName: coder\n{app}      volumeMounts: [{{name: vault-token, mountPath: /var/run/vault}}]\n  volumes:\n    - {{name: vault-token, projected: {{sources: [{{serviceAccountToken: {{path: token, audience: vault}}}}]}}}}\n"
            ),
            "declares its own service-account token in volume vault-token",
        ),
        (
            "borrowed-volume",
            "app: coder",
            format!("  serviceAccountName: coder\n{app}      volumeMounts: [{{name: tollgate-service-account, mountPath: /t}}]\n"),
            "mounts tollgate-service-account",
        ),
        (
            "borrowed-credentials",
            "app: coder",
            format!("  serviceAccountName: coder\n{app}      volumeMounts: [{{name: tollgate-cred-github-token, mountPath: /c}}]\n"),
            "mounts tollgate-cred-github-token",
        ),
    ];
    for (name, labels, spec, says) in &cases {
        let mut yaml = pod_with(name, labels, spec);
        if *name == "opted-out" {
            yaml = yaml.replace("metadata:\n", "metadata:\n  annotations: {tollgate.dev/inject: \"false\"}\n");
        }
        let out = cp.apply_output(editor, &ns, &yaml)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{name} was admitted");
        ensure!(err.contains("admission webhook \"inject.tollgate.dev\" denied the request") && err.contains(says), "{name}: {err}");
        ensure!(!cp.kubectl(User::Admin, ["get", "pod", name, "-n", &ns])?.status.success(), "{name} was stored");
    }
    // A pod that claims to be injected, with a sidecar of its own: it gets the real one.
    let claimed = pod_with(
        "claimed",
        "app: coder",
        &format!(
            "  serviceAccountName: coder\n  initContainers:\n    - {{name: tollgate-sidecar, image: evil.example/sidecar:1, restartPolicy: Always}}\n{app}"
        ),
    )
    .replace("metadata:\n", "metadata:\n  annotations: {tollgate.dev/injected: coder}\n");
    let out = cp.apply_output(editor, &ns, &claimed)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod = stored(cp, &ns, "claimed")?;
    let images: Vec<&str> = pod["spec"]["initContainers"].as_array().into_iter().flatten().filter_map(|c| c["image"].as_str()).collect();
    ensure!(images.len() == 1 && !images[0].contains("evil"), "the pod kept the sidecar it brought: {images:?}");
    ensure!(pod["spec"]["automountServiceAccountToken"] == false, "{pod}");
    Ok(())
}

/// An injected pod cannot be changed afterwards to undo its injection: its sidecar's image, its
/// marks, or an ephemeral container (`kubectl debug`) that shares the sidecar's processes, mounts
/// its token or runs as its UID; each refused by the webhook as the namespace's admin tries it.
#[test]
fn an_injected_pod_cannot_be_changed_to_undo_its_injection() -> Result<()> {
    operator();
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace("pod-edits")?;
    cp.kubectl_ok(User::Admin, ["label", "namespace", &ns, "tollgate.dev/injection=enabled"])?;
    let out = cp.apply_output(User::Admin, &ns, AGENT)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let editor = User::Outsider;
    namespace_admin(cp, &ns, editor)?;
    let out = cp.apply_output(editor, &ns, &pod_yaml("coder-1", "coder", "coder", ""))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = stored(cp, &ns, "coder-1")?["spec"].clone();
    let webhook = "admission webhook \"pods.tollgate.dev\" denied the request";
    let refused = |what: &str, out: std::process::Output, says: &str| -> Result<()> {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains(webhook) && err.contains(says), "{what}: {err}");
        Ok(())
    };
    refused(
        "a new sidecar image",
        cp.kubectl(editor, ["set", "image", "pod/coder-1", "-n", &ns, "tollgate-sidecar=evil.example/sidecar:1"])?,
        "cannot be changed once injected",
    )?;
    refused("the agent label removed", cp.kubectl(editor, ["label", "pod", "coder-1", "-n", &ns, "tollgate.dev/agent-"])?, "cannot be changed")?;
    let debug = |args: &[&str]| -> Result<std::process::Output> {
        let mut all = vec!["debug", "coder-1", "-n", &ns, "--image=busybox", "--attach=false"];
        all.extend_from_slice(args);
        cp.kubectl(editor, all)
    };
    refused("a debugger in the sidecar's processes", debug(&["--target=tollgate-sidecar", "-c", "d1"])?, "targets tollgate-sidecar")?;
    let as_sidecar = r#"{"spec":{"ephemeralContainers":[{"name":"d2","image":"busybox","securityContext":{"runAsUser":1337}}]}}"#;
    refused(
        "a debugger as the sidecar's UID",
        cp.kubectl(editor, ["patch", "pod", "coder-1", "-n", &ns, "--subresource=ephemeralcontainers", "--type=strategic", "-p", as_sidecar])?,
        "runs as UID 1337",
    )?;
    let token = r#"{"spec":{"ephemeralContainers":[{"name":"d3","image":"busybox","volumeMounts":[{"name":"tollgate-service-account","mountPath":"/t"}]}]}}"#;
    refused(
        "a debugger with the sidecar's token",
        cp.kubectl(editor, ["patch", "pod", "coder-1", "-n", &ns, "--subresource=ephemeralcontainers", "--type=strategic", "-p", token])?,
        "mounts tollgate-service-account",
    )?;
    let after = stored(cp, &ns, "coder-1")?["spec"].clone();
    ensure!(before == after, "a refused change was stored:\nbefore {before}\nafter {after}");
    // Debugging the app itself is still allowed.
    let out = debug(&["--target=agent", "-c", "d4"])?;
    ensure!(out.status.success(), "kubectl debug of the app: {}", String::from_utf8_lossy(&out.stderr));
    let debuggers: Vec<String> = stored(cp, &ns, "coder-1")?["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(debuggers == ["d4"], "{debuggers:?}");
    Ok(())
}
