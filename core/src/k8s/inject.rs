//! Sidecar injection (DESIGN §3.6), decided as a pure function of the pod as submitted and the
//! `ManagedAgent`s of its namespace: which agent the pod is, whether it may be, and the pod as it
//! must run (the firewall as a native sidecar, the only container holding the service account's
//! token, the credential Secrets of the agent's MCP servers mounted into it alone, and the
//! endpoint the app containers call).

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tollgate_api::ManagedAgentSpec;

pub use crate::k8s::pod_guard::{AGENT_LABEL, INJECTED_ANNOTATION, REDIRECT_NAME, SIDECAR_NAME, SIDECAR_UID, TOKEN_DIR, TOKEN_VOLUME, escape_route};
use crate::k8s::pod_guard::{identity_leak, lock_uid, without_injection};

/// `"false"` on a pod leaves it alone (the skip is reported as an Event), unless it runs as an
/// agent's service account.
pub const OPT_OUT_ANNOTATION: &str = "tollgate.dev/inject";
/// Namespaces whose pods are injected carry this label with the value `enabled`.
pub const NAMESPACE_LABEL: &str = "tollgate.dev/injection";
/// What the app containers call: the aggregated MCP endpoint of the sidecar, on localhost.
pub const MCP_URL_ENV: &str = "TOLLGATE_MCP_URL";
pub const CREDENTIALS_DIR: &str = "/var/run/tollgate/credentials";
pub const CA_DIR: &str = "/var/run/tollgate/ca";
const REDIRECT_SCRATCH: &str = "/run/tollgate-redirect";
const REDIRECT_SCRATCH_VOLUME: &str = "tollgate-redirect-scratch";
/// Where the sidecar writes the certificates the app containers trust (an emptyDir: the sidecar
/// writes, the app containers read), and its files.
pub const TRUST_DIR: &str = "/var/run/tollgate/trust";
pub use crate::k8s::pod_guard::TRUST_VOLUME;
/// The gateway's CA alone, and with the public roots of the sidecar's image.
pub const TRUST_GATEWAY_CA: &str = "gateway-ca.crt";
pub const TRUST_BUNDLE: &str = "ca-bundle.crt";

/// How injected sidecars run (from the chart's values).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub image: String,
    pub listen_port: u16,
    pub admin_port: u16,
    pub resources: Option<ResourceRequirements>,
    pub cluster_default: String,
    /// Transparent mode: the sidecar's redirect port, and what is never redirected.
    pub redirect_port: u16,
    pub exclude_cidrs: Vec<String>,
    pub exclude_ports: Vec<u16>,
    /// The model gateway's base URL (`http://tollgate-gateway.tollgate-system.svc:8080`): the
    /// app containers get the SDKs' base URLs under it and the agent's key; none when absent.
    pub gateway_url: Option<String>,
    /// The CA (PEM) of the gateway's TLS certificate, when it serves TLS: the sidecar ships
    /// audit batches trusting it alone, and writes it (with the image's public roots) where the
    /// app containers' SDKs look (`SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`).
    pub gateway_ca: Option<String>,
    /// Where sidecars read headers kept in Vault, and the role they log in as by default.
    pub vault: Option<VaultEnv>,
    /// Where sidecars export traces (the operator's own OTLP settings); none: no traces.
    pub tracing: Option<TracingEnv>,
}

/// A process's trace export, as the standard `OTEL_*` variables say it (what the operator was
/// given is what its sidecars and gateways get, so one setting traces every hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingEnv {
    /// The OTLP/HTTP endpoint (`http://collector.observability:4318`).
    pub endpoint: String,
    pub sampler: Option<String>,
    pub sampler_arg: Option<String>,
}

impl TracingEnv {
    /// The variables of a process that exports as `service`.
    pub fn env(&self, service: &str) -> Vec<EnvVar> {
        let mut out = vec![env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.endpoint), env("OTEL_SERVICE_NAME", service)];
        out.extend(self.sampler.iter().map(|s| env("OTEL_TRACES_SAMPLER", s)));
        out.extend(self.sampler_arg.iter().map(|a| env("OTEL_TRACES_SAMPLER_ARG", a)));
        out
    }
}

/// A process's Vault settings, as the environment `tollgate_mcp_client::vault::VaultArgs` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEnv {
    pub address: String,
    pub auth_mount: String,
    pub role: Option<String>,
    pub cache_seconds: u64,
    pub namespace_scope: String,
}

impl VaultEnv {
    pub fn env(&self) -> Vec<EnvVar> {
        let mut out = vec![
            env("TOLLGATE_VAULT_ADDR", &self.address),
            env("TOLLGATE_VAULT_AUTH_MOUNT", &self.auth_mount),
            env("TOLLGATE_VAULT_CACHE_SECONDS", &self.cache_seconds.to_string()),
            env("TOLLGATE_VAULT_NAMESPACE_SCOPE", &self.namespace_scope),
        ];
        if let Some(role) = &self.role {
            out.push(env("TOLLGATE_VAULT_ROLE", role));
        }
        out
    }
}

/// A `ManagedAgent` of the pod's namespace, with what its MCP servers need mounted.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub spec: &'a ManagedAgentSpec,
    pub mounts: Mounts,
}

/// What the sidecar of an agent gets mounted, each once, sorted: the Secrets its MCP servers'
/// headers and CA bundles read, and the ConfigMaps holding CA bundles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub secrets: Vec<String>,
    pub config_maps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PodReview {
    /// No agent's selector matches: the pod is not an agent.
    NotAnAgent,
    /// The pod opted out with the annotation; `agent` matched it.
    OptedOut { agent: String },
    /// The pod claims an identity it may not have; the reason, for the person who applied it.
    Refused(String),
    /// The pod as it must run.
    Inject { agent: String, pod: Box<Pod> },
}

/// Whether `selector` selects `labels` (Kubernetes semantics: an empty selector selects all).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            // An operator the API server would have refused selects nothing.
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// What to do with `pod`, created in a namespace labelled for injection whose agents are
/// `agents`. Every pod that runs as an agent's service account is injected or refused: the token
/// the kubelet would mount into it is the agent's identity.
pub fn review(pod: &Pod, agents: &[Candidate<'_>], settings: &Settings) -> PodReview {
    // A pod that says it is injected is injected again from scratch: the result is the same pod
    // when the claim is true (a webhook reinvocation), and the real sidecar when it is not.
    let pod = &without_injection(pod);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let service_account = spec.service_account_name.as_deref().filter(|s| !s.is_empty()).unwrap_or("default");
    let identity_of = agents.iter().find(|a| a.spec.service_account_name == service_account);
    let matched: Vec<&Candidate<'_>> = agents.iter().filter(|a| selects(&a.spec.selector, &labels)).collect();
    let agent = match (matched.as_slice(), identity_of) {
        ([], None) => return PodReview::NotAnAgent,
        ([], Some(a)) => {
            return PodReview::Refused(format!(
                "pod runs as service account {service_account:?}, the identity of ManagedAgent {}, but matches no agent's selector: every pod that runs as an agent's service account carries its sidecar; label the pod for the agent's selector, or run it as another service account",
                a.name
            ));
        }
        ([one], _) => *one,
        (many, _) => {
            let names: Vec<&str> = many.iter().map(|a| a.name).collect();
            return PodReview::Refused(format!(
                "pod matches the selectors of several ManagedAgents ({}); a pod is one agent: narrow their selectors",
                names.join(", ")
            ));
        }
    };
    if annotations.get(OPT_OUT_ANNOTATION).map(String::as_str) == Some("false") {
        if let Some(a) = identity_of {
            return PodReview::Refused(format!(
                "pod opts out of injection ({OPT_OUT_ANNOTATION}=false) but runs as service account {service_account:?}, the identity of ManagedAgent {}: only a pod that does not run as an agent may opt out",
                a.name
            ));
        }
        return PodReview::OptedOut { agent: agent.name.to_owned() };
    }
    if service_account != agent.spec.service_account_name {
        return PodReview::Refused(format!(
            "pod matches ManagedAgent {} but runs as service account {service_account:?}, not the agent's {:?}: it would act under another identity",
            agent.name, agent.spec.service_account_name
        ));
    }
    if let Some(why) = escape_route(&spec, transparent(agent.spec)) {
        return PodReview::Refused(format!("pod matches ManagedAgent {} but {why}", agent.name));
    }
    let injected = inject(pod, agent, settings);
    let keep_token = agent.spec.injection.as_ref().is_some_and(|i| i.keep_service_account_token);
    if let Some(why) = injected.spec.as_ref().and_then(|s| identity_leak(s, keep_token)) {
        return PodReview::Refused(format!("pod matches ManagedAgent {} but {why}", agent.name));
    }
    PodReview::Inject { agent: agent.name.to_owned(), pod: Box::new(injected) }
}

/// The sidecar's allocator told to commit only the memory it touches: the sidecar idles beside
/// every agent pod, and eagerly committed arenas (backed by huge pages where the kernel allows
/// them) were two thirds of its anonymous memory (14.5 MiB → 5 MiB, no CPU cost measured).
/// mimalloc reads it as the process loads, so it is set in the container, not by the program;
/// the benchmarks start the sidecar with it too.
pub const SIDECAR_ALLOCATOR_ENV: &[(&str, &str)] = &[("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), value_from: None }
}

/// The agent's gateway key, from the Secret the operator minted it into.
fn key_env(name: &str, agent: &str) -> EnvVar {
    let source = k8s_openapi::api::core::v1::SecretKeySelector {
        name: crate::model::keys::secret_name(agent),
        key: crate::model::keys::SECRET_KEY.to_owned(),
        optional: None,
    };
    EnvVar { name: name.to_owned(), value: None, value_from: Some(EnvVarSource { secret_key_ref: Some(source), ..Default::default() }) }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource { field_ref: Some(ObjectFieldSelector { field_path: path.to_owned(), api_version: None }), ..Default::default() }),
    }
}

fn credential_volume(secret: &str) -> String {
    volume_name("tollgate-cred-", secret)
}

fn ca_volume(config_map: &str) -> String {
    volume_name("tollgate-ca-", config_map)
}

fn volume_name(prefix: &str, object: &str) -> String {
    let name = format!("{prefix}{object}");
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).replace('.', "-")
}

fn transparent(agent: &ManagedAgentSpec) -> bool {
    agent.injection.as_ref().is_some_and(|i| i.transparent)
}

/// Transparent mode's init step: the sidecar binary installing the redirect, as root with
/// `NET_ADMIN` and `NET_RAW` (what iptables needs) and nothing else; it exits before the app runs.
fn redirect(settings: &Settings) -> Container {
    let mut envs = vec![
        env("TOLLGATE_REDIRECT_PORT", &settings.redirect_port.to_string()),
        env("TOLLGATE_PROXY_UID", &SIDECAR_UID.to_string()),
        // iptables takes a lock file; the root filesystem stays read-only.
        env("XTABLES_LOCKFILE", &format!("{REDIRECT_SCRATCH}/xtables.lock")),
    ];
    if !settings.exclude_cidrs.is_empty() {
        envs.push(env("TOLLGATE_EXCLUDE_CIDRS", &settings.exclude_cidrs.join(",")));
    }
    if !settings.exclude_ports.is_empty() {
        envs.push(env("TOLLGATE_EXCLUDE_PORTS", &settings.exclude_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")));
    }
    Container {
        name: REDIRECT_NAME.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["/usr/local/bin/tollgate-sidecar".to_owned(), "redirect".to_owned()]),
        env: Some(envs),
        volume_mounts: Some(vec![VolumeMount { name: REDIRECT_SCRATCH_VOLUME.to_owned(), mount_path: REDIRECT_SCRATCH.to_owned(), ..Default::default() }]),
        resources: settings.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sidecar(agent: &Candidate<'_>, settings: &Settings) -> Container {
    let probe = |path: &str, failures: i32| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.to_owned()), port: IntOrString::Int(i32::from(settings.admin_port)), ..Default::default() }),
        period_seconds: Some(1),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let mut mounts = vec![VolumeMount { name: TOKEN_VOLUME.to_owned(), mount_path: TOKEN_DIR.to_owned(), read_only: Some(true), ..Default::default() }];
    mounts.extend(agent.mounts.secrets.iter().map(|s| VolumeMount {
        name: credential_volume(s),
        mount_path: format!("{CREDENTIALS_DIR}/{s}"),
        read_only: Some(true),
        ..Default::default()
    }));
    mounts.extend(agent.mounts.config_maps.iter().map(|c| VolumeMount {
        name: ca_volume(c),
        mount_path: format!("{CA_DIR}/{c}"),
        read_only: Some(true),
        ..Default::default()
    }));
    if settings.gateway_ca.is_some() {
        mounts.push(VolumeMount { name: TRUST_VOLUME.to_owned(), mount_path: TRUST_DIR.to_owned(), ..Default::default() });
    }
    let envs = sidecar_env(agent, settings);
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec!["/usr/local/bin/tollgate-sidecar".to_owned()]),
        // A native sidecar: started before the app containers, stopped after them.
        restart_policy: Some("Always".to_owned()),
        env: Some(envs),
        ports: Some(vec![ContainerPort { name: Some("tollgate-admin".to_owned()), container_port: i32::from(settings.admin_port), ..Default::default() }]),
        startup_probe: Some(probe("/readyz", 60)),
        readiness_probe: Some(probe("/readyz", 3)),
        liveness_probe: Some(Probe { period_seconds: Some(10), ..probe("/healthz", 3) }),
        resources: agent.spec.injection.as_ref().and_then(|i| i.resources.clone()).or_else(|| settings.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The audience of the token a sidecar ships audit batches with: the gateway's, not the API
/// server's.
pub const GATEWAY_AUDIENCE: &str = "tollgate-gateway";
/// That token's file in the sidecar's token directory.
const GATEWAY_TOKEN: &str = "gateway-token";

/// The audience of the token a sidecar logs in to Vault with. A Vault role bound to it takes no
/// other token: not the API token an app keeps with `keepServiceAccountToken`.
pub const VAULT_AUDIENCE: &str = "tollgate-sidecar";
const VAULT_TOKEN: &str = "vault-token";

/// The sidecar's configuration: its agent, pod and ports by the downward API and the settings,
/// and where its audit, Vault logins and traces go.
fn sidecar_env(agent: &Candidate<'_>, settings: &Settings) -> Vec<EnvVar> {
    let mut envs = vec![
        env("TOLLGATE_AGENT", agent.name),
        field_env("TOLLGATE_NAMESPACE", "metadata.namespace"),
        field_env("TOLLGATE_POD", "metadata.name"),
        field_env("TOLLGATE_POD_IP", "status.podIP"),
        env("TOLLGATE_LISTEN", &format!("127.0.0.1:{}", settings.listen_port)),
        env("TOLLGATE_ADMIN_ADDR", &format!("0.0.0.0:{}", settings.admin_port)),
        env("TOLLGATE_CLUSTER_DEFAULT", &settings.cluster_default),
        env("TOLLGATE_CREDENTIALS_DIR", CREDENTIALS_DIR),
        env("TOLLGATE_CA_DIR", CA_DIR),
        env("TOLLGATE_LOG_JSON", "true"),
    ];
    envs.extend(SIDECAR_ALLOCATOR_ENV.iter().map(|(name, value)| env(name, value)));
    if transparent(agent.spec) {
        envs.push(env("TOLLGATE_TRANSPARENT_LISTEN", &format!("127.0.0.1:{}", settings.redirect_port)));
    }
    if let Some(gateway) = &settings.gateway_url {
        envs.push(env("TOLLGATE_AUDIT_URL", gateway.trim_end_matches('/')));
        // Batches carry a token for the gateway alone: sniffed, it is no key to the API server.
        envs.push(env("TOLLGATE_AUDIT_TOKEN_FILE", &format!("{TOKEN_DIR}/{GATEWAY_TOKEN}")));
        if let Some(ca) = &settings.gateway_ca {
            envs.push(env("TOLLGATE_GATEWAY_CA", ca));
            envs.push(env("TOLLGATE_TRUST_DIR", TRUST_DIR));
        }
    }
    if let Some(vault) = &settings.vault {
        envs.extend(vault.env());
        envs.push(env("TOLLGATE_VAULT_JWT_FILE", &format!("{TOKEN_DIR}/{VAULT_TOKEN}")));
    }
    if let Some(tracing) = &settings.tracing {
        envs.extend(tracing.env("tollgate-sidecar"));
    }
    envs
}

/// The sidecar's token volume: the service account's token as the kubelet would mount it, and
/// tokens for the gateway's audience (with a gateway) and the sidecar's Vault audience (with
/// Vault), each good for that audience alone.
fn sidecar_token_volume(gateway: bool, vault: bool) -> Volume {
    let mut volume = token_volume();
    if let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) {
        let wanted = [(gateway, GATEWAY_TOKEN, GATEWAY_AUDIENCE), (vault, VAULT_TOKEN, VAULT_AUDIENCE)];
        for (_, path, audience) in wanted.into_iter().filter(|(on, ..)| *on) {
            let token = ServiceAccountTokenProjection { path: path.to_owned(), expiration_seconds: Some(3607), audience: Some(audience.to_owned()) };
            sources.push(VolumeProjection { service_account_token: Some(token), ..Default::default() });
        }
    }
    volume
}

/// The service account's token as the kubelet would mount it (token, cluster CA, namespace):
/// for the sidecar alone, and for the gateway's pods, which turn the automatic one off.
pub fn token_volume() -> Volume {
    let item = |key: &str| KeyToPath { key: key.to_owned(), path: key.to_owned(), mode: None };
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection { path: "token".to_owned(), expiration_seconds: Some(3607), audience: None }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection { name: "kube-root-ca.crt".to_owned(), items: Some(vec![item("ca.crt")]), optional: None }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector { field_path: "metadata.namespace".to_owned(), api_version: None }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

/// `pod` with the sidecar of `agent`: the sidecar first among the init containers, the app
/// containers without the service account's token (whatever mounted it: the ServiceAccount
/// admission plugin runs before webhooks) and with the MCP endpoint in their environment.
pub fn inject(pod: &Pod, agent: &Candidate<'_>, settings: &Settings) -> Pod {
    let mut pod = pod.clone();
    pod.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(INJECTED_ANNOTATION.to_owned(), agent.name.to_owned());
    pod.metadata.labels.get_or_insert_with(BTreeMap::new).insert(AGENT_LABEL.to_owned(), agent.name.chars().take(63).collect());
    let spec = pod.spec.get_or_insert_with(Default::default);
    // An agent that calls the Kubernetes API itself keeps the token it was given (opted in).
    let keep_token = agent.spec.injection.as_ref().is_some_and(|i| i.keep_service_account_token);
    if !keep_token {
        spec.automount_service_account_token = Some(false);
    }
    let mcp_url = format!("http://127.0.0.1:{}/mcp", settings.listen_port);
    let mut token_volumes = Vec::new();
    let lock = transparent(agent.spec);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if lock {
            lock_uid(c);
        }
        if let Some(mounts) = c.volume_mounts.as_mut().filter(|_| !keep_token) {
            mounts.retain(|m| {
                let token = m.mount_path.trim_end_matches('/') == TOKEN_DIR;
                if token {
                    token_volumes.push(m.name.clone());
                }
                !token
            });
        }
        let envs = c.env.get_or_insert_with(Vec::new);
        let mut add = |e: EnvVar| {
            if !envs.iter().any(|x| x.name == e.name) {
                envs.push(e);
            }
        };
        add(env(MCP_URL_ENV, &mcp_url));
        if let Some(gateway) = &settings.gateway_url {
            let gateway = gateway.trim_end_matches('/');
            add(env("OPENAI_BASE_URL", &format!("{gateway}/openai/v1")));
            add(env("ANTHROPIC_BASE_URL", &format!("{gateway}/anthropic")));
            for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
                add(key_env(name, agent.name));
            }
            if settings.gateway_ca.is_some() {
                // OpenSSL, Python's ssl and httpx, Go and curl read SSL_CERT_FILE; Node adds
                // NODE_EXTRA_CA_CERTS to its own roots. A container's own setting stays.
                add(env("SSL_CERT_FILE", &format!("{TRUST_DIR}/{TRUST_BUNDLE}")));
                add(env("NODE_EXTRA_CA_CERTS", &format!("{TRUST_DIR}/{TRUST_GATEWAY_CA}")));
                let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
                mounts.retain(|m| m.name != TRUST_VOLUME);
                mounts.push(VolumeMount { name: TRUST_VOLUME.to_owned(), mount_path: TRUST_DIR.to_owned(), read_only: Some(true), ..Default::default() });
            }
        }
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| !token_volumes.contains(&v.name));
    volumes.push(sidecar_token_volume(settings.gateway_url.is_some(), settings.vault.is_some()));
    if settings.gateway_url.is_some() && settings.gateway_ca.is_some() {
        let size = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Mi".to_owned()));
        let empty = k8s_openapi::api::core::v1::EmptyDirVolumeSource { medium: Some("Memory".to_owned()), size_limit: size };
        volumes.push(Volume { name: TRUST_VOLUME.to_owned(), empty_dir: Some(empty), ..Default::default() });
    }
    volumes.extend(agent.mounts.secrets.iter().map(|s| Volume {
        name: credential_volume(s),
        secret: Some(SecretVolumeSource { secret_name: Some(s.clone()), default_mode: Some(0o444), ..Default::default() }),
        ..Default::default()
    }));
    volumes.extend(agent.mounts.config_maps.iter().map(|c| Volume {
        name: ca_volume(c),
        config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource { name: c.clone(), default_mode: Some(0o444), ..Default::default() }),
        ..Default::default()
    }));
    let init = spec.init_containers.get_or_insert_with(Vec::new);
    init.insert(0, sidecar(agent, settings));
    if transparent(agent.spec) {
        init.insert(0, redirect(settings));
        let scratch = Volume { name: REDIRECT_SCRATCH_VOLUME.to_owned(), empty_dir: Some(Default::default()), ..Default::default() };
        spec.volumes.get_or_insert_with(Vec::new).push(scratch);
    }
    pod
}

/// What the sidecar of `agent` gets mounted for the MCP servers it may use: the Secrets their
/// headers and CA bundles read, and the ConfigMaps of their CA bundles.
pub fn mounts<'a>(agent: &ManagedAgentSpec, servers: impl IntoIterator<Item = (&'a str, &'a tollgate_api::McpServerSpec)>) -> Mounts {
    let allowed: Vec<crate::glob::Glob> = agent.mcp_servers.iter().map(|g| crate::glob::Glob::new(g)).collect();
    let mut m = Mounts::default();
    for (_, spec) in servers.into_iter().filter(|(name, _)| allowed.iter().any(|g| g.matches(name))) {
        m.secrets.extend(spec.headers.iter().filter_map(|h| h.secret_key_ref.as_ref().map(|r| r.name.clone())));
        if let Some(bundle) = spec.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) {
            m.secrets.extend(bundle.secret_key_ref.as_ref().map(|r| r.name.clone()));
            m.config_maps.extend(bundle.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    for list in [&mut m.secrets, &mut m.config_maps] {
        list.sort();
        list.dedup();
    }
    m
}
