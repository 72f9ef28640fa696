//! A kubelet for the e2e suite, which has none: runs a Pod exactly as the API server stored it
//! (after every admission plugin and webhook), so what injection wrote is what runs.
//!
//! As a kubelet does: the pod gets a network namespace of its own ([`NetNs`]); its volumes are
//! materialised (Secrets, ConfigMaps, emptyDirs, claims, projected service-account tokens from the
//! TokenRequest API, the downward API) and bind-mounted at their paths in a mount namespace per
//! container; env is resolved (`fieldRef`, Secret and ConfigMap keys, `$(VAR)` in args); each
//! container runs as its `runAsUser`, with the capabilities its security context leaves it and
//! no-new-privileges when it forbids escalation; init containers run in order to completion, except native
//! sidecars (`restartPolicy: Always`), which are started and their startup probe awaited; then
//! the app containers start and the pod's status says Running. Images are not pulled: a
//! [`Programs`] table says which local program a container's command names.

use crate::child::Process;
use crate::netns::NetNs;
use crate::{ControlPlane, User, wait_until};
use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a container's `command[0]` means here: the program standing in for the image's.
#[derive(Default, Clone)]
pub struct Programs(BTreeMap<String, PathBuf>);

impl Programs {
    pub fn with(mut self, command: &str, program: impl Into<PathBuf>) -> Programs {
        self.0.insert(command.to_owned(), program.into());
        self
    }
}

pub struct RunningPod {
    pub name: String,
    pub net: NetNs,
    dir: PathBuf,
    containers: Vec<(String, Process)>,
}

impl RunningPod {
    pub fn container(&self, name: &str) -> Result<&Process> {
        self.containers.iter().find(|(n, _)| n == name).map(|(_, p)| p).with_context(|| format!("pod {} has no container {name}", self.name))
    }

    /// What a container wrote so far (stdout and stderr).
    pub fn log(&self, name: &str) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join(format!("{name}.log")))?)
    }

    /// The output of a container once it exited (successfully or not), within `timeout`.
    pub fn wait_exit(&self, name: &str, timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
        let process = self.container(name)?;
        let status = wait_until(timeout, Duration::from_millis(100), || Ok(process.exited()))
            .with_context(|| format!("container {name} still runs; its log:\n{}", process.log_tail()))?;
        Ok((status, self.log(name)?))
    }
}

/// Runs pod `name` of `namespace` as stored; each `(ip, port)` of `reachable` is the host's
/// `127.0.0.1:port` (an MCP server it calls) at `ip:port` inside its network namespace, as a
/// cluster network would make another pod reachable.
pub fn run_pod(cp: &ControlPlane, namespace: &str, name: &str, programs: &Programs, reachable: &[(std::net::IpAddr, u16)]) -> Result<RunningPod> {
    let routes: Vec<Route> = reachable.iter().map(|&(ip, port)| Route { ip, port, host_port: port }).collect();
    run_pod_routed(cp, namespace, name, programs, &routes)
}

/// The host's `127.0.0.1:host_port` as `ip:port` inside a pod (a Service's address and port).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub host_port: u16,
}

/// [`run_pod`] with routes whose port inside differs from the host's.
pub fn run_pod_routed(cp: &ControlPlane, namespace: &str, name: &str, programs: &Programs, routes: &[Route]) -> Result<RunningPod> {
    let pod: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", "pod", name, "-n", namespace, "-o", "json"])?)?;
    let dir = cp.dir().join(format!("pod-{namespace}-{name}"));
    std::fs::create_dir_all(&dir)?;
    let net = NetNs::new(cp.dir(), &format!("{namespace}-{name}"))?;
    net.bring_in(cp.server_port())?;
    for r in routes {
        net.bring_in_as(r.ip, r.port, r.host_port)?;
    }
    write_hosts(&pod, &dir)?;
    publish_root_ca(cp, namespace)?;
    let volumes = materialise_volumes(cp, &pod, &dir.join("volumes"))?;
    let mut running = RunningPod { name: name.to_owned(), net, dir, containers: Vec::new() };
    let spec = &pod["spec"];
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or_default().to_owned();
        let process = start_container(cp, &pod, c, &volumes, programs, &running)?;
        if c["restartPolicy"] == "Always" {
            await_startup(&running, c, &process).with_context(|| format!("native sidecar {cname}"))?;
            running.containers.push((cname, process));
        } else {
            let status = wait_until(Duration::from_secs(60), Duration::from_millis(50), || Ok(process.exited()))
                .with_context(|| format!("init container {cname} did not finish"))?;
            ensure!(status.success(), "init container {cname} failed ({status}):\n{}", process.log_tail());
            running.containers.push((cname, process));
        }
    }
    for c in spec["containers"].as_array().into_iter().flatten() {
        let process = start_container(cp, &pod, c, &volumes, programs, &running)?;
        running.containers.push((c["name"].as_str().unwrap_or_default().to_owned(), process));
    }
    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
    cp.kubectl_ok(User::Admin, ["patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", &status.to_string()])?;
    Ok(running)
}

/// The pod's `/etc/hosts`, as a kubelet writes it: localhost and `spec.hostAliases`. Only for pods
/// with aliases (the others see the machine's).
fn write_hosts(pod: &Value, dir: &Path) -> Result<()> {
    let aliases = pod["spec"]["hostAliases"].as_array().cloned().unwrap_or_default();
    if aliases.is_empty() {
        return Ok(());
    }
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    for a in &aliases {
        let names: Vec<&str> = a["hostnames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        text.push_str(&format!("{}\t{}\n", a["ip"].as_str().unwrap_or_default(), names.join(" ")));
    }
    std::fs::write(dir.join("hosts"), text)?;
    Ok(())
}

/// What kube-controller-manager's root-CA publisher keeps in every namespace.
fn publish_root_ca(cp: &ControlPlane, namespace: &str) -> Result<()> {
    let exists = cp.kubectl(User::Admin, ["get", "configmap", "kube-root-ca.crt", "-n", namespace])?.status.success();
    if !exists {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": cp.ca_pem()}});
        cp.apply(User::Admin, namespace, &cm.to_string())?;
    }
    Ok(())
}

fn object_data(cp: &ControlPlane, kind: &str, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let obj: Value = serde_json::from_str(&cp.kubectl_ok(User::Admin, ["get", kind, name, "-n", namespace, "-o", "json"])?)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let bytes = if kind == "secret" { base64::engine::general_purpose::STANDARD.decode(text)? } else { text.as_bytes().to_vec() };
        out.insert(k.clone(), bytes);
    }
    Ok(out)
}

/// Writes `data` (all keys, or `items` when given) into `dir`, world-readable as `defaultMode`
/// 0444 would make them.
fn write_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, items: &Value) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let pairs: Vec<(String, String)> = match items.as_array() {
        Some(items) => items.iter().map(|i| (i["key"].as_str().unwrap_or_default().to_owned(), i["path"].as_str().unwrap_or_default().to_owned())).collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, path) in pairs {
        let value = data.get(&key).with_context(|| format!("no key {key}"))?;
        let file = dir.join(&path);
        std::fs::write(&file, value)?;
        set_mode(&file, 0o444)?;
    }
    set_mode(dir, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

fn field(pod: &Value, path: &str) -> Result<String> {
    let meta = &pod["metadata"];
    let value = match path {
        "metadata.name" => meta["name"].clone(),
        "metadata.namespace" => meta["namespace"].clone(),
        "metadata.uid" => meta["uid"].clone(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].clone(),
        "spec.nodeName" => json!("e2e-node"),
        "status.podIP" | "status.hostIP" => json!("127.0.0.1"),
        other => match other.strip_prefix("metadata.labels['").or_else(|| other.strip_prefix("metadata.annotations['")) {
            Some(rest) => {
                let key = rest.trim_end_matches("']");
                let map = if other.starts_with("metadata.labels") { &meta["labels"] } else { &meta["annotations"] };
                map[key].clone()
            }
            None => bail!("the e2e kubelet has no downward API field {other}"),
        },
    };
    Ok(value.as_str().unwrap_or_default().to_owned())
}

fn materialise_volumes(cp: &ControlPlane, pod: &Value, root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default();
        let dir = root.join(name);
        if v.get("emptyDir").is_some() {
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, 0o777)?;
        } else if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            // A claim outlives the pod: one directory per claim, which the next pod finds again.
            ensure!(
                cp.kubectl(User::Admin, ["get", "persistentvolumeclaim", claim, "-n", namespace])?.status.success(),
                "volume {name}: claim {claim} does not exist"
            );
            let volume = cp.dir().join(format!("pvc-{namespace}-{claim}"));
            std::fs::create_dir_all(&volume)?;
            set_mode(&volume, 0o777)?;
            out.insert(name.to_owned(), volume);
            continue;
        } else if let Some(s) = v.get("secret") {
            write_keys(&dir, &object_data(cp, "secret", namespace, s["secretName"].as_str().unwrap_or_default())?, &s["items"])?;
        } else if let Some(c) = v.get("configMap") {
            write_keys(&dir, &object_data(cp, "configmap", namespace, c["name"].as_str().unwrap_or_default())?, &c["items"])?;
        } else if let Some(p) = v.get("projected") {
            std::fs::create_dir_all(&dir)?;
            for source in p["sources"].as_array().into_iter().flatten() {
                if let Some(t) = source.get("serviceAccountToken") {
                    let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
                    let secs = t["expirationSeconds"].as_i64().unwrap_or(3600);
                    let mut args = vec!["create".to_owned(), "token".to_owned(), account.to_owned(), "-n".to_owned(), namespace.to_owned()];
                    args.extend(["--duration".to_owned(), format!("{secs}s")]);
                    if let Some(audience) = t["audience"].as_str() {
                        args.extend(["--audience".to_owned(), audience.to_owned()]);
                    }
                    let token = cp.kubectl_ok(User::Admin, &args)?;
                    let mut data = BTreeMap::new();
                    data.insert("token".to_owned(), token.trim().as_bytes().to_vec());
                    write_keys(&dir, &data, &json!([{"key": "token", "path": t["path"].as_str().unwrap_or("token")}]))?;
                } else if let Some(c) = source.get("configMap") {
                    write_keys(&dir, &object_data(cp, "configmap", namespace, c["name"].as_str().unwrap_or_default())?, &c["items"])?;
                } else if let Some(s) = source.get("secret") {
                    write_keys(&dir, &object_data(cp, "secret", namespace, s["name"].as_str().unwrap_or_default())?, &s["items"])?;
                } else if let Some(d) = source.get("downwardAPI") {
                    for item in d["items"].as_array().into_iter().flatten() {
                        let value = field(pod, item["fieldRef"]["fieldPath"].as_str().unwrap_or_default())?;
                        let mut data = BTreeMap::new();
                        let path = item["path"].as_str().unwrap_or_default().to_owned();
                        data.insert(path.clone(), value.into_bytes());
                        write_keys(&dir, &data, &json!([{"key": path, "path": path}]))?;
                    }
                } else {
                    bail!("volume {name}: the e2e kubelet cannot project {source}");
                }
            }
        } else {
            bail!("volume {name}: the e2e kubelet cannot provide {v}");
        }
        out.insert(name.to_owned(), dir);
    }
    Ok(out)
}

fn container_env(cp: &ControlPlane, pod: &Value, c: &Value) -> Result<Vec<(String, String)>> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), cp.server_port().to_string()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field(pod, f)?
        } else if let Some(r) = e["valueFrom"].get("secretKeyRef").or_else(|| e["valueFrom"].get("configMapKeyRef")) {
            let kind = if e["valueFrom"].get("secretKeyRef").is_some() { "secret" } else { "configmap" };
            let data = object_data(cp, kind, namespace, r["name"].as_str().unwrap_or_default())?;
            String::from_utf8_lossy(data.get(r["key"].as_str().unwrap_or_default()).map(Vec::as_slice).unwrap_or_default()).into_owned()
        } else {
            bail!("env {name}: the e2e kubelet cannot resolve {e}");
        };
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    Ok(env)
}

/// `$(VAR)` replaced by its value, as the kubelet expands command, args and env.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

fn start_container(
    cp: &ControlPlane,
    pod: &Value,
    c: &Value,
    volumes: &BTreeMap<String, PathBuf>,
    programs: &Programs,
    running: &RunningPod,
) -> Result<Process> {
    let name = c["name"].as_str().unwrap_or_default();
    let env = container_env(cp, pod, c)?;
    let words = |key: &str| -> Vec<String> { c[key].as_array().into_iter().flatten().filter_map(|w| w.as_str()).map(|w| expand(w, &env)).collect() };
    let mut argv = words("command");
    argv.extend(words("args"));
    let Some((command, args)) = argv.split_first() else { bail!("container {name}: the e2e kubelet needs a command (it has no images)") };
    let program = programs.0.get(command).with_context(|| format!("container {name}: no program stands in for {command:?} of image {}", c["image"]))?;
    // The container's mounts, in a mount namespace of its own.
    let mut script = String::from("set -e\n");
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let source = volumes.get(m["name"].as_str().unwrap_or_default()).with_context(|| format!("container {name}: no volume for {m}"))?;
        let target = m["mountPath"].as_str().unwrap_or_default();
        ensure!(target.starts_with('/') && !target.contains('\'') && !source.to_string_lossy().contains('\''), "container {name}: mount path {target:?}");
        script.push_str(&format!("mkdir -p '{target}'\nmount --bind '{}' '{target}'\n", source.display()));
    }
    let hosts = running.dir.join("hosts");
    if hosts.is_file() {
        script.push_str(&format!("mount --bind '{}' /etc/hosts\n", hosts.display()));
    }
    script.push_str("exec \"$@\"\n");
    let mut cmd = running.net.command("unshare");
    cmd.args(["-m", "--propagation", "private", "--", "sh", "-c", &script, "sh"]);
    cmd.args(privileges(&c["securityContext"]));
    cmd.arg(program).args(args).env_clear().envs(env.iter().map(|(k, v)| (k, v))).env("HOME", &running.dir);
    Process::spawn(cmd, running.dir.join(format!("{name}.log")))
}

/// `setpriv` arguments that run a container as its security context says, as a container
/// runtime would: its user, its capabilities (the runtime's default set for root, minus what it
/// drops, plus what it adds) and `allowPrivilegeEscalation: false` as no-new-privileges. Empty
/// when the context asks for nothing.
fn privileges(security: &Value) -> Vec<String> {
    let caps = |key: &str| -> Vec<String> {
        security["capabilities"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .map(|c| c.to_ascii_lowercase().trim_start_matches("cap_").to_owned())
            .collect()
    };
    let (drop, add) = (caps("drop"), caps("add"));
    let mut args = Vec::new();
    if let Some(uid) = security["runAsUser"].as_i64().filter(|u| *u != 0) {
        let gid = security["runAsGroup"].as_i64().unwrap_or(uid);
        args.extend([format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".to_owned()]);
    }
    if !drop.is_empty() || !add.is_empty() {
        // The bounding set caps what any program of the container may hold; with no inheritable
        // capabilities, root's programs get exactly the bounding set.
        let mut bounding: Vec<String> = drop.iter().map(|c| format!("-{c}")).collect();
        bounding.extend(add.iter().map(|c| format!("+{c}")));
        args.push(format!("--bounding-set={}", bounding.join(",")));
        args.push("--inh-caps=-all".to_owned());
    }
    if security["allowPrivilegeEscalation"] == false {
        args.push("--no-new-privs".to_owned());
    }
    if args.is_empty() {
        return args;
    }
    let mut out = vec!["setpriv".to_owned()];
    out.extend(args);
    out.push("--".to_owned());
    out
}

fn await_startup(running: &RunningPod, c: &Value, process: &Process) -> Result<()> {
    let probe = &c["startupProbe"];
    let Some(port) = probe["httpGet"]["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
        return Ok(());
    };
    let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
    let host_port = running.net.expose(port)?;
    process.wait_http_ok(c["name"].as_str().unwrap_or("sidecar"), host_port, path)
}
