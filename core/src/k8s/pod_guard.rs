//! What an agent pod may not do to its sidecar (DESIGN §3.6), at creation and afterwards: the
//! sidecar is the only container that speaks for the agent, so no other container may hold the
//! agent's token or Tollgate's volumes, see the sidecar's processes, become the sidecar's UID (in
//! transparent mode, whose redirect exempts it), or replace the sidecar once it is injected.
//! Pure functions of pod specs; the operator's webhooks call them.

use k8s_openapi::api::core::v1::{Capabilities, Container, EphemeralContainer, Pod, PodSpec, SecurityContext, VolumeMount};

pub const SIDECAR_NAME: &str = "tollgate-sidecar";
/// Transparent mode's init container: installs the redirect before anything else runs.
pub const REDIRECT_NAME: &str = "tollgate-redirect";
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const TOKEN_VOLUME: &str = "tollgate-service-account";
/// Every volume injection adds is named with this prefix; only Tollgate's containers mount one.
pub const VOLUME_PREFIX: &str = "tollgate-";
/// Set on an injected pod, naming its agent.
pub const INJECTED_ANNOTATION: &str = "tollgate.dev/injected";
/// The label an injected pod carries with its agent's name.
pub const AGENT_LABEL: &str = "tollgate.dev/agent";
/// The sidecar's UID: transparent mode exempts its traffic from the redirect, so no other
/// container of an agent pod may run as it. Not 65532, which distroless `nonroot` images use.
pub const SIDECAR_UID: i64 = 1337;
/// Capabilities with which a container could undo the redirect (or read others' traffic).
const ESCAPING_CAPABILITIES: &[&str] = &["ALL", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "BPF"];
/// Capabilities with which a process changes its UID or GID: a root app container holding them
/// could become the sidecar's UID at run time and leave transparent mode's redirect.
pub const UID_CAPABILITIES: [&str; 2] = ["SETUID", "SETGID"];

/// Whether `name` is one of the containers injection adds.
pub fn is_tollgate_container(name: &str) -> bool {
    name == SIDECAR_NAME || name == REDIRECT_NAME
}

/// Whether a pod carries an injection (it names its agent, or has the sidecar).
pub fn injected(pod: &Pod) -> bool {
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    annotated || pod.spec.as_ref().is_some_and(|s| s.init_containers.iter().flatten().any(|c| is_tollgate_container(&c.name)))
}

/// `pod` without what an injection adds (Tollgate's containers and volumes): injecting this again
/// gives the same pod, and a pod that claims to be injected gets the real sidecar, not its own.
pub fn without_injection(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(INJECTED_ANNOTATION);
    }
    if let Some(spec) = pod.spec.as_mut() {
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| !is_tollgate_container(&c.name));
        }
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| !v.name.starts_with(VOLUME_PREFIX));
        }
    }
    pod
}

/// The capabilities a container adds, as written.
fn adds(sc: Option<&SecurityContext>) -> impl Iterator<Item = &String> {
    sc.and_then(|s| s.capabilities.as_ref()).and_then(|c| c.add.as_ref()).into_iter().flatten()
}

/// A capability's name as the kernel knows it: `cap_net_raw` is `NET_RAW`.
fn capability(name: &str) -> String {
    name.to_ascii_uppercase().trim_start_matches("CAP_").to_owned()
}

/// The certificates the app containers trust, which injection mounts into them read-only.
pub const TRUST_VOLUME: &str = "tollgate-trust";

fn mounts_tollgate_volume(mounts: Option<&Vec<VolumeMount>>) -> Option<&str> {
    let shared = |m: &VolumeMount| m.name == TRUST_VOLUME && m.read_only == Some(true);
    mounts.into_iter().flatten().filter(|m| !shared(m)).map(|m| m.name.as_str()).find(|n| n.starts_with(VOLUME_PREFIX))
}

/// How a pod, as it would run after injection, would let another container speak for the agent:
/// a process namespace shared with the sidecar (its token and credentials are readable through
/// `/proc`), a service-account token of its own (only the sidecar's is allowed; with
/// `keepServiceAccountToken`, the API token the kubelet mounts too), or Tollgate's volumes mounted
/// into another container.
pub fn identity_leak(spec: &PodSpec, keep_token: bool) -> Option<String> {
    if spec.share_process_namespace == Some(true) {
        return Some(
            "shares its process namespace (shareProcessNamespace): every container could read the sidecar's token and credentials through /proc; remove it"
                .into(),
        );
    }
    if spec.host_pid == Some(true) || spec.host_ipc == Some(true) {
        return Some("uses the host's PID or IPC namespace (hostPID, hostIPC): the sidecar's processes would be visible to other containers; remove it".into());
    }
    for v in spec.volumes.iter().flatten().filter(|v| v.name != TOKEN_VOLUME) {
        let tokens = v.projected.as_ref().and_then(|p| p.sources.as_ref()).into_iter().flatten().filter_map(|s| s.service_account_token.as_ref());
        for t in tokens {
            let audience = t.audience.as_deref().unwrap_or_default();
            if keep_token && audience.is_empty() {
                continue;
            }
            let aud = if audience.is_empty() { String::new() } else { format!(" (audience {audience:?})") };
            return Some(format!(
                "declares its own service-account token in volume {}{aud}: only the sidecar holds the agent's identity; remove the volume{}",
                v.name,
                if keep_token { "" } else { ", or set the ManagedAgent's injection.keepServiceAccountToken for the API token" }
            ));
        }
    }
    // Only the init containers injection adds are Tollgate's: an app container that takes one of
    // their names is an app container all the same.
    let init = spec.init_containers.iter().flatten().filter(|c| !is_tollgate_container(&c.name));
    for c in spec.containers.iter().chain(init) {
        if let Some(v) = mounts_tollgate_volume(c.volume_mounts.as_ref()) {
            return Some(format!("container {} mounts {v}, a volume of Tollgate's: only the sidecar may read it", c.name));
        }
    }
    None
}

/// How a container could leave transparent mode's redirect, if it could: run as the sidecar's
/// UID, be privileged, hold a capability that edits the network or changes its UID, or be allowed
/// to gain privileges.
fn container_escape(name: &str, sc: Option<&SecurityContext>, pod_uid: Option<i64>) -> Option<String> {
    if sc.and_then(|s| s.run_as_user).or(pod_uid) == Some(SIDECAR_UID) {
        return Some(format!("container {name} runs as UID {SIDECAR_UID}, the sidecar's: its traffic would skip transparent mode's redirect"));
    }
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Some(format!("container {name} is privileged: it could remove transparent mode's redirect"));
    }
    if let Some(cap) = adds(sc).find(|c| {
        let c = capability(c);
        ESCAPING_CAPABILITIES.contains(&c.as_str()) || UID_CAPABILITIES.contains(&c.as_str())
    }) {
        return Some(format!("container {name} adds capability {cap}: it could remove transparent mode's redirect or become the sidecar's UID"));
    }
    if sc.and_then(|s| s.allow_privilege_escalation) == Some(true) {
        return Some(format!("container {name} sets allowPrivilegeEscalation: a setuid program could make it the sidecar's UID and skip the redirect"));
    }
    None
}

/// How the pod could get around its sidecar, if it could. On the host's network the sidecar
/// would serve (and redirect) the node itself; in transparent mode see [`container_escape`].
pub fn escape_route(spec: &PodSpec, transparent: bool) -> Option<String> {
    if spec.host_network == Some(true) {
        return Some("uses the host's network: its sidecar would listen on the node, not in the pod".into());
    }
    if !transparent {
        return None;
    }
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find_map(|c| container_escape(&c.name, c.security_context.as_ref(), pod_uid))
}

/// Makes `c` unable to change its UID (transparent mode: a root app could otherwise become the
/// sidecar's UID): no privilege escalation, and `SETUID`/`SETGID` dropped.
pub fn lock_uid(c: &mut Container) {
    let sc = c.security_context.get_or_insert_with(Default::default);
    sc.allow_privilege_escalation = Some(false);
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    let drop = caps.drop.get_or_insert_with(Vec::new);
    if !drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        for cap in UID_CAPABILITIES {
            if !drop.iter().any(|d| capability(d) == cap) {
                drop.push(cap.to_owned());
            }
        }
    }
}

/// Whether a container's security context keeps it from changing UID, as [`lock_uid`] makes it.
fn uid_locked(sc: Option<&SecurityContext>) -> bool {
    let Some(sc) = sc else { return false };
    let dropped = |cap: &str| {
        sc.capabilities.as_ref().and_then(|c| c.drop.as_ref()).into_iter().flatten().any(|d| {
            let d = capability(d);
            d == "ALL" || d == cap
        })
    };
    sc.allow_privilege_escalation == Some(false) && UID_CAPABILITIES.iter().all(|c| dropped(c))
}

/// Why an ephemeral container (`kubectl debug`) may not join an injected pod, if it may not: it
/// would share the sidecar's processes, mount Tollgate's volumes, run as (or be able to become)
/// the sidecar's UID, or hold capabilities that undo the redirect.
pub fn ephemeral_refusal(c: &EphemeralContainer, transparent: bool, pod_uid: Option<i64>) -> Option<String> {
    let name = &c.name;
    if let Some(target) = c.target_container_name.as_deref().filter(|t| is_tollgate_container(t)) {
        return Some(format!("ephemeral container {name} targets {target}: it would see the sidecar's processes, token and credentials"));
    }
    if let Some(v) = mounts_tollgate_volume(c.volume_mounts.as_ref()) {
        return Some(format!("ephemeral container {name} mounts {v}, a volume of Tollgate's: only the sidecar may read it"));
    }
    let sc = c.security_context.as_ref();
    if let Some(why) = container_escape(name, sc, pod_uid) {
        return Some(format!("ephemeral {why}"));
    }
    if transparent && !uid_locked(sc) {
        return Some(format!(
            "ephemeral container {name} could change its UID to the sidecar's and leave transparent mode's redirect: set securityContext {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}} (kubectl debug --profile=restricted)"
        ));
    }
    None
}

/// Why an update of an injected pod is refused, if it is: Tollgate's containers, volumes,
/// annotation and label stay as injection made them, and ephemeral containers added since pass
/// [`ephemeral_refusal`]. A pod that was not injected is not Tollgate's to judge.
pub fn review_update(old: &Pod, new: &Pod) -> Option<String> {
    if !injected(old) {
        return None;
    }
    let empty = PodSpec::default();
    let (o, n) = (old.spec.as_ref().unwrap_or(&empty), new.spec.as_ref().unwrap_or(&empty));
    let ours = |s: &PodSpec| -> Vec<Container> { s.init_containers.iter().flatten().filter(|c| is_tollgate_container(&c.name)).cloned().collect() };
    if ours(o) != ours(n) {
        return Some(format!("{SIDECAR_NAME} and {REDIRECT_NAME} cannot be changed once injected: an agent pod keeps the sidecar it was admitted with"));
    }
    let volumes = |s: &PodSpec| -> Vec<k8s_openapi::api::core::v1::Volume> {
        s.volumes.iter().flatten().filter(|v| v.name.starts_with(VOLUME_PREFIX)).cloned().collect()
    };
    if volumes(o) != volumes(n) {
        return Some("Tollgate's volumes cannot be changed once injected".into());
    }
    let marks = |p: &Pod| {
        (
            p.metadata.annotations.as_ref().and_then(|a| a.get(INJECTED_ANNOTATION)).cloned(),
            p.metadata.labels.as_ref().and_then(|l| l.get(AGENT_LABEL)).cloned(),
        )
    };
    if marks(old) != marks(new) {
        return Some(format!("the {INJECTED_ANNOTATION} annotation and {AGENT_LABEL} label of an injected pod cannot be changed"));
    }
    let transparent = o.init_containers.iter().flatten().any(|c| c.name == REDIRECT_NAME);
    let pod_uid = n.security_context.as_ref().and_then(|s| s.run_as_user);
    let before: Vec<&str> = o.ephemeral_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    n.ephemeral_containers.iter().flatten().filter(|c| !before.contains(&c.name.as_str())).find_map(|c| ephemeral_refusal(c, transparent, pod_uid))
}

/// The agent's `Isolated` condition: whether only the sidecar holds its identity, and if not,
/// what the app containers can do with it (status, reason, message).
pub fn isolation(keep_token: bool) -> (bool, &'static str, &'static str) {
    if keep_token {
        (
            false,
            "TokenShared",
            "injection.keepServiceAccountToken: the app containers hold the agent's service-account token and can do whatever its RBAC allows (read its policies, create ApprovalRequests in its name) and log in to Vault with any role bound to its service account but not to the sidecar's audience (tollgate-sidecar); MCP credentials stay in the sidecar",
        )
    } else {
        (true, "SidecarOnly", "only the sidecar holds the agent's service-account token and its MCP servers' credentials")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn nothing_else_speaks_for_the_agent() {
        let base = json!({"containers": [{"name": "app", "image": "x"}]});
        assert_eq!(identity_leak(&spec(base), false), None);
        let shared = spec(json!({"shareProcessNamespace": true, "containers": [{"name": "app"}]}));
        assert!(identity_leak(&shared, false).unwrap().contains("shareProcessNamespace"));
        let pid = spec(json!({"hostPID": true, "containers": [{"name": "app"}]}));
        assert!(identity_leak(&pid, true).unwrap().contains("hostPID"));
        let vault = json!({"containers": [{"name": "app"}], "volumes": [{"name": "vault-token", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}]}}]});
        assert!(identity_leak(&spec(vault.clone()), false).unwrap().contains("volume vault-token (audience \"vault\")"));
        assert!(identity_leak(&spec(vault), true).is_some(), "an audience of its own is refused even to an agent that keeps its API token");
        let api = json!({"containers": [{"name": "app"}], "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]});
        assert!(identity_leak(&spec(api.clone()), false).is_some());
        assert_eq!(identity_leak(&spec(api), true), None, "keepServiceAccountToken keeps the API token");
        let ours = json!({"containers": [{"name": "app", "volumeMounts": [{"name": "tollgate-cred-github", "mountPath": "/x"}]}]});
        assert!(identity_leak(&spec(ours), false).unwrap().contains("container app mounts tollgate-cred-github"));
        let init = json!({"containers": [{"name": "app"}], "initContainers": [{"name": "prep", "volumeMounts": [{"name": "tollgate-service-account", "mountPath": "/x"}]}]});
        assert!(identity_leak(&spec(init), false).unwrap().contains("container prep"));
        let sidecar = json!({"containers": [{"name": "app"}], "initContainers": [{"name": "tollgate-sidecar", "volumeMounts": [{"name": "tollgate-service-account", "mountPath": "/x"}]}], "volumes": [{"name": "tollgate-service-account", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]});
        assert_eq!(identity_leak(&spec(sidecar), false), None, "the sidecar's own");
        // An app container named like Tollgate's is still an app container.
        let named = json!({"containers": [{"name": "tollgate-redirect", "volumeMounts": [{"name": "tollgate-service-account", "mountPath": "/x"}]}]});
        assert!(identity_leak(&spec(named), false).unwrap().contains("container tollgate-redirect mounts tollgate-service-account"));
    }

    #[test]
    fn transparent_containers_cannot_become_the_sidecar() {
        for (sc, says) in [
            (json!({"capabilities": {"add": ["SETUID"]}}), "adds capability SETUID"),
            (json!({"capabilities": {"add": ["cap_setgid"]}}), "adds capability cap_setgid"),
            (json!({"allowPrivilegeEscalation": true}), "allowPrivilegeEscalation"),
        ] {
            let s = spec(json!({"containers": [{"name": "app", "securityContext": sc}]}));
            assert!(escape_route(&s, true).unwrap().contains(says), "{says}");
            assert_eq!(escape_route(&s, false), None);
        }
        let mut c: Container =
            serde_json::from_value(json!({"name": "app", "securityContext": {"capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE"]}}})).unwrap();
        lock_uid(&mut c);
        let sc = c.security_context.as_ref().unwrap();
        assert!(uid_locked(Some(sc)));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(), &["NET_RAW", "SETUID", "SETGID"]);
        let mut all: Container = serde_json::from_value(json!({"name": "app", "securityContext": {"capabilities": {"drop": ["ALL"]}}})).unwrap();
        lock_uid(&mut all);
        assert_eq!(all.security_context.as_ref().unwrap().capabilities.as_ref().unwrap().drop.as_ref().unwrap(), &["ALL"]);
        assert!(!uid_locked(None));
    }

    fn injected_pod(transparent: bool) -> Pod {
        let mut init = vec![json!({"name": "tollgate-sidecar", "image": "tollgate:1"})];
        if transparent {
            init.insert(0, json!({"name": "tollgate-redirect", "image": "tollgate:1"}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {"tollgate.dev/injected": "coder"}, "labels": {"tollgate.dev/agent": "coder"}},
            "spec": {"initContainers": init, "containers": [{"name": "app", "image": "python"}],
                     "volumes": [{"name": "tollgate-service-account", "emptyDir": {}}]}
        }))
        .unwrap()
    }

    #[test]
    fn an_injected_pod_keeps_its_sidecar() {
        let old = injected_pod(false);
        let mut image = old.clone();
        image.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].image = Some("evil:1".into());
        assert!(review_update(&old, &image).unwrap().contains("cannot be changed"));
        let mut app = old.clone();
        app.spec.as_mut().unwrap().containers[0].image = Some("python:3.13".into());
        assert_eq!(review_update(&old, &app), None, "the app's own image may change");
        let mut unmarked = old.clone();
        unmarked.metadata.labels = None;
        assert!(review_update(&old, &unmarked).is_some());
        let mut volume = old.clone();
        volume.spec.as_mut().unwrap().volumes = Some(vec![]);
        assert!(review_update(&old, &volume).is_some());
        // Not injected: not Tollgate's to judge.
        let plain: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "app"}]}})).unwrap();
        assert_eq!(review_update(&plain, &image), None);
    }

    #[test]
    fn ephemeral_containers_stay_out_of_the_sidecar() {
        let debug = |transparent: bool, c: Value| {
            let old = injected_pod(transparent);
            let mut new = old.clone();
            new.spec.as_mut().unwrap().ephemeral_containers = Some(vec![serde_json::from_value(c).unwrap()]);
            review_update(&old, &new)
        };
        let plain = json!({"name": "debugger", "image": "busybox", "targetContainerName": "app"});
        assert_eq!(debug(false, plain.clone()), None, "kubectl debug of the app");
        assert!(debug(true, plain).unwrap().contains("--profile=restricted"), "a root debugger in a transparent pod");
        let restricted =
            json!({"name": "debugger", "image": "busybox", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
        assert_eq!(debug(true, restricted), None);
        for (c, says) in [
            (json!({"name": "d", "targetContainerName": "tollgate-sidecar"}), "targets tollgate-sidecar"),
            (json!({"name": "d", "volumeMounts": [{"name": "tollgate-service-account", "mountPath": "/t"}]}), "mounts tollgate-service-account"),
            (json!({"name": "d", "securityContext": {"runAsUser": 1337}}), "runs as UID 1337"),
            (json!({"name": "d", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}), "adds capability NET_ADMIN"),
            (json!({"name": "d", "securityContext": {"privileged": true}}), "is privileged"),
        ] {
            assert!(debug(false, c.clone()).unwrap_or_default().contains(says), "{c}");
        }
    }

    #[test]
    fn an_earlier_injection_comes_off_whole() {
        let p = injected_pod(true);
        assert!(injected(&p));
        let bare = without_injection(&p);
        assert!(!injected(&bare));
        let s = bare.spec.unwrap();
        assert!(s.init_containers.unwrap().is_empty() && s.volumes.unwrap().is_empty());
    }
}
