//! What a `Gateway` becomes (DESIGN §3.4): a ServiceAccount, a Service, a Deployment and, with
//! SQLite, the ledger's PersistentVolumeClaim, all named `<gateway>-gateway`; its service account
//! a subject of the one ClusterRoleBinding of every gateway. Built here as data, applied by the
//! operator.
//!
//! The claim is the one object a Gateway does not own: the ledger and the audit store live on
//! it, and deleting a `Gateway` (to rename it, or by mistake) must not delete the audit trail.

use crate::k8s::inject::{TOKEN_DIR, TOKEN_VOLUME, token_volume};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tollgate_api::GatewaySpec;

/// The one ClusterRoleBinding of every gateway's service account.
pub const GATEWAYS_CLUSTER_BINDING: &str = "tollgate-gateways";
/// Where agents' SDKs reach a gateway, in its pods and on its Service.
pub const PORT: i32 = 8080;
pub const ADMIN_PORT: i32 = 8081;
pub const BINARY: &str = "/usr/local/bin/tollgate-gateway";
/// A gateway has this many checks, 5 s apart (ten minutes), to start: its ledger migrates first.
const STARTUP_CHECKS: i32 = 120;
const SQLITE_URL: &str = "sqlite:///var/lib/tollgate/ledger.db?mode=rwc";
const LEDGER_DIR: &str = "/var/lib/tollgate";
/// The gateway drains its calls and writes its queued settlements before this runs out.
const GRACE_SECONDS: i64 = 30;
const MANAGED_BY: &str = "tollgate-operator";
/// The label naming a gateway's objects (and the selector of its pods).
pub const GATEWAY_LABEL: &str = "tollgate.dev/gateway";

/// How the operator runs gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image when a Gateway names none: the operator's own.
    pub image: String,
    /// The ClusterRole the gateways' service accounts are bound to.
    pub cluster_role: String,
    /// Where gateways read provider credentials kept in Vault, and their default role.
    pub vault: Option<crate::k8s::inject::VaultEnv>,
    /// `anthropic-beta` / `openai-beta` values gateways pass to providers.
    pub allowed_betas: Vec<String>,
    /// Where gateways export traces; none: no traces.
    pub tracing: Option<crate::k8s::inject::TracingEnv>,
}

/// A Gateway's name, namespace and UID, which its objects are named after and owned by.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

#[derive(Debug, Clone)]
pub struct Objects {
    pub service_account: ServiceAccount,
    pub service: Service,
    pub deployment: Deployment,
    /// With SQLite only.
    pub claim: Option<PersistentVolumeClaim>,
}

/// `<gateway>-gateway`: the Deployment, Service and service account of a Gateway.
pub fn object_name(gateway: &str) -> String {
    format!("{gateway}-gateway")
}

/// `<gateway>-gateway-audit-key`: the Secret holding the key the gateway signs audit
/// checkpoints with (made once by the operator, owned by the Gateway).
pub fn audit_key_name(gateway: &str) -> String {
    format!("{gateway}-gateway-audit-key")
}

/// The key of that Secret holding the PKCS#8 key, base64.
pub const AUDIT_KEY: &str = "ed25519.pkcs8";

pub fn claim_name(gateway: &str) -> String {
    format!("{gateway}-gateway-ledger")
}

/// Why a Gateway's name cannot name its Service (a DNS label of at most 63 characters, starting
/// with a letter), if it cannot: a Gateway is a DNS subdomain, which allows more.
pub fn name_problem(gateway: &str) -> Option<String> {
    let name = object_name(gateway);
    let label = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!label).then(|| format!("its Service would be named {name:?}, which is not a DNS label (lowercase letters, digits and '-', starting with a letter, at most 63 characters): rename the Gateway"))
}

/// The in-cluster URL of a Gateway (its `status.url`): `https` when it serves TLS.
pub fn url(gateway: &str, namespace: &str, spec: &GatewaySpec) -> String {
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{}.{namespace}.svc:{PORT}", object_name(gateway))
}

/// The Secret a Gateway serves TLS from, when it does: the one it names, else
/// `<gateway>-gateway-tls`, which the operator issues.
pub fn tls_secret_name(gateway: &str, spec: &GatewaySpec) -> Option<String> {
    spec.tls.as_ref().map(|t| t.secret_name.clone().unwrap_or_else(|| format!("{gateway}-gateway-tls")))
}

/// The name of the port agents call: `https` when the Gateway serves TLS.
fn serving_port(spec: &GatewaySpec) -> &'static str {
    if spec.tls.is_some() { "https" } else { "http" }
}

/// Whether the operator issues the Gateway's certificate (it names no Secret of its own).
pub fn issues_tls(spec: &GatewaySpec) -> bool {
    spec.tls.as_ref().is_some_and(|t| t.secret_name.is_none())
}

/// The names a Gateway's serving certificate carries: its Service's, as agents call it.
pub fn serving_names(gateway: &str, namespace: &str) -> Vec<String> {
    let service = object_name(gateway);
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local"), format!("{service}.{namespace}")]
}

/// The keys of a TLS Secret (`kubernetes.io/tls`, plus the issuing CA as cert-manager writes it).
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const TLS_CA: &str = "ca.crt";
const TLS_DIR: &str = "/var/run/tollgate/tls";
const TLS_VOLUME: &str = "tls";

/// The Secret holding the certificate the operator issued a Gateway (PEM), owned by it.
pub fn tls_secret(owner: Owner<'_>, name: &str, ca: &str, cert: &str, key: &str) -> k8s_openapi::api::core::v1::Secret {
    let data = [(TLS_CA, ca), (TLS_CERT, cert), (TLS_KEY, key)];
    k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(owner.namespace.to_owned()),
            labels: Some(selector(owner.name)),
            owner_references: Some(vec![owner_reference(owner)]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        string_data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()),
        ..Default::default()
    }
}

/// The replicas a Gateway runs: SQLite allows one writer. (Admission refuses more without a
/// database; this holds for objects stored before that rule.)
pub fn replicas(spec: &GatewaySpec) -> i32 {
    if spec.database.is_none() { spec.replicas.min(1) } else { spec.replicas }
}

fn owner_reference(owner: Owner<'_>) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", tollgate_api::GROUP, tollgate_api::VERSION),
        kind: "Gateway".into(),
        name: owner.name.to_owned(),
        uid: owner.uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The Secret holding a Gateway's audit signing key (`key`: PKCS#8, base64), owned by it.
pub fn audit_key_secret(owner: Owner<'_>, key: &str) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some(audit_key_name(owner.name)),
            namespace: Some(owner.namespace.to_owned()),
            labels: Some(selector(owner.name)),
            owner_references: Some(vec![owner_reference(owner)]),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(AUDIT_KEY.to_owned(), key.to_owned())])),
        ..Default::default()
    }
}

pub fn objects(owner: Owner<'_>, spec: &GatewaySpec, settings: &Settings) -> Objects {
    let name = object_name(owner.name);
    let selector = selector(owner.name);
    let mut labels = selector.clone();
    labels.insert("app.kubernetes.io/name".into(), "tollgate".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    let meta = |name: &str, owned: bool| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(owner.namespace.to_owned()),
        labels: Some(labels.clone()),
        owner_references: owned.then(|| vec![owner_reference(owner)]),
        ..Default::default()
    };
    let sqlite = spec.database.is_none();
    let serving_port = serving_port(spec);
    let container = gateway_container(owner, spec, settings);
    let pod = pod_spec(owner, spec, container);
    let deployment = Deployment {
        metadata: meta(&name, true),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas(spec)),
            selector: LabelSelector { match_labels: Some(selector.clone()), match_expressions: None },
            // One SQLite writer: the old pod stops before the new one opens the file.
            strategy: sqlite.then(|| DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template: PodTemplateSpec { metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }), spec: Some(pod) },
            ..Default::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(&name, true),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(serving_port.into()),
                port: PORT,
                target_port: Some(IntOrString::String(serving_port.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let claim = sqlite.then(|| {
        let storage = spec.storage.clone();
        PersistentVolumeClaim {
            metadata: meta(&claim_name(owner.name), false),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: storage.as_ref().and_then(|s| s.storage_class_name.clone()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(storage.and_then(|s| s.size).unwrap_or_else(|| "1Gi".into())))])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    });
    Objects { service_account: ServiceAccount { metadata: meta(&name, true), ..Default::default() }, service, deployment, claim }
}

/// The gateway's container: its listener (HTTPS from the TLS Secret when asked), its ledger
/// (PostgreSQL from a Secret, or SQLite on the claim), Slack, the audit key and allowed betas.
fn gateway_container(owner: Owner<'_>, spec: &GatewaySpec, settings: &Settings) -> Container {
    let sqlite = spec.database.is_none();
    let tls = tls_secret_name(owner.name, spec);
    let serving_port = serving_port(spec);
    let database = match &spec.database {
        Some(db) => EnvVar {
            name: "TOLLGATE_DATABASE_URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: db.url_secret_ref.name.clone(), key: db.url_secret_ref.key.clone(), optional: None }),
                ..Default::default()
            }),
            value: None,
        },
        None => env("TOLLGATE_DATABASE_URL", SQLITE_URL),
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::String("admin".into()), ..Default::default() }),
        period_seconds: Some(5),
        ..Default::default()
    };
    Container {
        name: "gateway".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| settings.image.clone())),
        command: Some(vec![BINARY.into()]),
        env: Some(
            vec![
                env("TOLLGATE_LISTEN", &format!("0.0.0.0:{PORT}")),
                env("TOLLGATE_ADMIN_ADDR", &format!("0.0.0.0:{ADMIN_PORT}")),
                env("TOLLGATE_LOG_JSON", "true"),
                database,
            ]
            .into_iter()
            .chain(slack_env(spec))
            .chain(audit_env(owner.name))
            .chain((!settings.allowed_betas.is_empty()).then(|| env("TOLLGATE_ALLOWED_BETAS", &settings.allowed_betas.join(","))))
            .chain(settings.tracing.iter().flat_map(|t| t.env("tollgate-gateway")))
            .chain(
                tls.iter().flat_map(|_| {
                    [env("TOLLGATE_TLS_CERT_FILE", &format!("{TLS_DIR}/{TLS_CERT}")), env("TOLLGATE_TLS_KEY_FILE", &format!("{TLS_DIR}/{TLS_KEY}"))]
                }),
            )
            .collect(),
        ),
        ports: Some(vec![port(serving_port, PORT), port("admin", ADMIN_PORT)]),
        // Its ledger's schema is brought up to date before the admin port opens; a migration
        // that copies a large SQLite ledger takes minutes, and liveness must not kill it.
        startup_probe: Some(Probe { failure_threshold: Some(STARTUP_CHECKS), ..probe("/healthz") }),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(Probe { period_seconds: Some(10), ..probe("/healthz") }),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        volume_mounts: Some(
            [VolumeMount { name: TOKEN_VOLUME.into(), mount_path: TOKEN_DIR.into(), read_only: Some(true), ..Default::default() }]
                .into_iter()
                .chain(sqlite.then(|| VolumeMount { name: "ledger".into(), mount_path: LEDGER_DIR.into(), ..Default::default() }))
                .chain(tls.is_some().then(|| VolumeMount { name: TLS_VOLUME.into(), mount_path: TLS_DIR.into(), read_only: Some(true), ..Default::default() }))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The pod of a gateway: its own service account, non-root, the token mounted explicitly, the
/// ledger's claim (SQLite) and the TLS Secret (HTTPS).
fn pod_spec(owner: Owner<'_>, spec: &GatewaySpec, container: Container) -> PodSpec {
    let sqlite = spec.database.is_none();
    let tls = tls_secret_name(owner.name, spec);
    let name = object_name(owner.name);
    PodSpec {
        service_account_name: Some(name.clone()),
        termination_grace_period_seconds: Some(GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        containers: vec![container],
        // The token is mounted explicitly, as for the sidecar: the same files whether or not the
        // cluster's ServiceAccount admission would add them.
        automount_service_account_token: Some(false),
        volumes: Some(
            [token_volume()]
                .into_iter()
                .chain(sqlite.then(|| Volume {
                    name: "ledger".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(owner.name), read_only: None }),
                    ..Default::default()
                }))
                .chain(tls.as_ref().map(|secret| Volume {
                    name: TLS_VOLUME.into(),
                    secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), default_mode: Some(0o440), ..Default::default() }),
                    ..Default::default()
                }))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The ClusterRoleBinding of the gateways `(namespace, name)`: each service account once, in a
/// stable order, so an unchanged set of gateways writes nothing.
pub fn cluster_binding<'a>(gateways: impl IntoIterator<Item = (&'a str, &'a str)>, cluster_role: &str) -> ClusterRoleBinding {
    let mut subjects: Vec<(String, String)> = gateways.into_iter().map(|(ns, name)| (ns.to_owned(), object_name(name))).collect();
    subjects.sort();
    subjects.dedup();
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(GATEWAYS_CLUSTER_BINDING.to_owned()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned())].into()),
            ..Default::default()
        },
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: cluster_role.to_owned() },
        subjects: Some(
            subjects.into_iter().map(|(ns, sa)| Subject { kind: "ServiceAccount".into(), name: sa, namespace: Some(ns), api_group: None }).collect(),
        ),
    }
}

/// A Gateway's `Ready` condition from its Deployment's ready replicas.
pub fn readiness(desired: i32, ready: i32) -> (bool, &'static str, String) {
    match (desired, ready) {
        (0, _) => (false, "ScaledToZero", "spec.replicas is 0: no model calls are served".into()),
        (d, r) if r >= d => (true, "Available", format!("{r} of {d} replicas ready")),
        (d, 0) => (false, "NoReplicaReady", format!("0 of {d} replicas ready: model calls fail until one is")),
        (d, r) => (true, "Degraded", format!("{r} of {d} replicas ready")),
    }
}

fn selector(gateway: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(GATEWAY_LABEL.to_owned(), gateway.to_owned()), ("app.kubernetes.io/component".to_owned(), "gateway".to_owned())])
}

/// The audit signing key from its Secret, and where checkpoints go: the gateway's namespace.
fn audit_env(gateway: &str) -> Vec<EnvVar> {
    let key = EnvVar {
        name: "TOLLGATE_AUDIT_SIGNING_KEY".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: audit_key_name(gateway), key: AUDIT_KEY.into(), optional: None }),
            ..Default::default()
        }),
    };
    let namespace = EnvVar {
        name: "TOLLGATE_AUDIT_CHECKPOINT_NAMESPACE".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector { field_path: "metadata.namespace".into(), api_version: None }),
            ..Default::default()
        }),
    };
    vec![key, namespace]
}

/// Slack's signing secret and bot token from their Secrets (never in the pod spec itself).
fn slack_env(spec: &GatewaySpec) -> Vec<EnvVar> {
    let Some(slack) = &spec.slack else { return Vec::new() };
    let from = |name: &str, r: &tollgate_api::SecretKeyRef| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: r.name.clone(), key: r.key.clone(), optional: None }),
            ..Default::default()
        }),
    };
    let mut out = vec![from("TOLLGATE_SLACK_SIGNING_SECRET", &slack.signing_secret_ref), from("TOLLGATE_SLACK_BOT_TOKEN", &slack.bot_token_secret_ref)];
    if let Some(url) = &slack.api_base_url {
        out.push(env("TOLLGATE_SLACK_API_URL", url));
    }
    out
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::{DatabaseSpec, SecretKeyRef};

    fn spec(replicas: i32, postgres: bool) -> GatewaySpec {
        GatewaySpec {
            replicas,
            image: None,
            database: postgres.then(|| DatabaseSpec { url_secret_ref: SecretKeyRef { name: "ledger-db".into(), key: "url".into() } }),
            slack: None,
            storage: None,
            resources: None,
            tls: None,
        }
    }

    const OWNER: Owner<'static> = Owner { name: "main", namespace: "tollgate-system", uid: "u-1" };

    fn settings() -> Settings {
        Settings { image: "tollgate:1".into(), cluster_role: "tollgate-gateway".into(), vault: None, allowed_betas: Vec::new(), tracing: None }
    }

    fn container(o: &Objects) -> Container {
        o.deployment.spec.clone().and_then(|s| s.template.spec).map(|p| p.containers[0].clone()).unwrap_or_default()
    }

    #[test]
    fn sqlite_runs_one_replica_recreated_on_a_claim_the_gateway_does_not_own() {
        let o = objects(OWNER, &spec(3, false), &settings());
        let d = o.deployment.spec.clone().unwrap_or_default();
        assert_eq!(d.replicas, Some(1));
        assert_eq!(d.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
        let claim = o.claim.expect("a claim");
        assert_eq!(claim.metadata.name.as_deref(), Some("main-gateway-ledger"));
        assert!(claim.metadata.owner_references.is_none(), "deleting the Gateway must not delete the audit trail");
        let db = container(&objects(OWNER, &spec(1, false), &settings())).env.unwrap_or_default().into_iter().find(|e| e.name == "TOLLGATE_DATABASE_URL");
        assert_eq!(db.and_then(|e| e.value).as_deref(), Some(SQLITE_URL));
    }

    #[test]
    fn postgres_runs_every_replica_and_reads_its_url_from_the_secret() {
        let o = objects(OWNER, &spec(3, true), &settings());
        assert!(o.claim.is_none());
        let d = o.deployment.spec.clone().unwrap_or_default();
        assert_eq!((d.replicas, d.strategy), (Some(3), None));
        let db = container(&o).env.unwrap_or_default().into_iter().find(|e| e.name == "TOLLGATE_DATABASE_URL").unwrap_or_default();
        let from = db.value_from.and_then(|v| v.secret_key_ref).unwrap_or_default();
        assert_eq!((db.value, from.name.as_str(), from.key.as_str()), (None, "ledger-db", "url"));
    }

    #[test]
    fn a_traced_operator_runs_traced_gateways_under_their_own_service_name() {
        let tracing = crate::k8s::inject::TracingEnv { endpoint: "http://collector:4318".into(), sampler: None, sampler_arg: None };
        let env = container(&objects(OWNER, &spec(1, true), &Settings { tracing: Some(tracing), ..settings() })).env.unwrap_or_default();
        let otel: Vec<(String, Option<String>)> = env.into_iter().filter(|e| e.name.starts_with("OTEL_")).map(|e| (e.name, e.value)).collect();
        assert_eq!(
            otel,
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), Some("http://collector:4318".to_owned())),
                ("OTEL_SERVICE_NAME".to_owned(), Some("tollgate-gateway".to_owned()))
            ]
        );
        let untraced = container(&objects(OWNER, &spec(1, true), &settings())).env.unwrap_or_default();
        assert!(untraced.iter().all(|e| !e.name.starts_with("OTEL_")));
    }

    #[test]
    fn every_owned_object_is_named_after_the_gateway_and_owned_by_it() {
        let o = objects(OWNER, &spec(1, true), &settings());
        for meta in [&o.service_account.metadata, &o.service.metadata, &o.deployment.metadata] {
            assert_eq!(meta.name.as_deref(), Some("main-gateway"));
            let owner = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owner.len(), 1);
            assert_eq!((owner[0].kind.as_str(), owner[0].uid.as_str(), owner[0].controller), ("Gateway", "u-1", Some(true)));
        }
        let pod = o.deployment.spec.and_then(|s| s.template.spec).unwrap_or_default();
        assert_eq!(pod.service_account_name.as_deref(), Some("main-gateway"));
        assert_eq!(container(&objects(OWNER, &spec(1, true), &settings())).image.as_deref(), Some("tollgate:1"));
        assert_eq!(url("main", "tollgate-system", &spec(1, false)), "http://main-gateway.tollgate-system.svc:8080");
    }

    #[test]
    fn a_gateway_with_tls_serves_https_from_its_secret_and_says_so_in_its_url() {
        let issued = GatewaySpec { tls: Some(tollgate_api::GatewayTls::default()), ..spec(1, true) };
        assert_eq!(url("main", "tollgate-system", &issued), "https://main-gateway.tollgate-system.svc:8080");
        assert_eq!((tls_secret_name("main", &issued).as_deref(), issues_tls(&issued)), (Some("main-gateway-tls"), true));
        let named = GatewaySpec { tls: Some(tollgate_api::GatewayTls { secret_name: Some("from-cert-manager".into()) }), ..spec(1, true) };
        assert_eq!((tls_secret_name("main", &named).as_deref(), issues_tls(&named)), (Some("from-cert-manager"), false));
        assert_eq!((tls_secret_name("main", &spec(1, true)), issues_tls(&spec(1, true))), (None, false));

        let o = objects(OWNER, &named, &settings());
        let c = container(&o);
        let env: Vec<(String, String)> = c.env.unwrap_or_default().into_iter().filter_map(|e| Some((e.name, e.value?))).collect();
        assert!(env.contains(&("TOLLGATE_TLS_CERT_FILE".into(), "/var/run/tollgate/tls/tls.crt".into())), "{env:?}");
        assert!(env.contains(&("TOLLGATE_TLS_KEY_FILE".into(), "/var/run/tollgate/tls/tls.key".into())), "{env:?}");
        let mount = c.volume_mounts.unwrap_or_default().into_iter().find(|m| m.name == TLS_VOLUME).expect("the TLS mount");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (TLS_DIR, Some(true)));
        let pod = o.deployment.spec.and_then(|s| s.template.spec).unwrap_or_default();
        let volume = pod.volumes.unwrap_or_default().into_iter().find(|v| v.name == TLS_VOLUME).and_then(|v| v.secret).unwrap_or_default();
        assert_eq!(volume.secret_name.as_deref(), Some("from-cert-manager"));
        let port = o.service.spec.and_then(|s| s.ports).unwrap_or_default().remove(0);
        assert_eq!((port.name.as_deref(), port.target_port), (Some("https"), Some(IntOrString::String("https".into()))));

        let plain = container(&objects(OWNER, &spec(1, true), &settings()));
        assert!(!plain.env.unwrap_or_default().iter().any(|e| e.name.starts_with("TOLLGATE_TLS")), "no TLS asked for, none configured");
    }

    #[test]
    fn the_cluster_binding_names_each_gateway_account_once() {
        let b = cluster_binding([("b", "x"), ("a", "y"), ("b", "x")], "tollgate-gateway");
        let subjects: Vec<(String, String)> = b.subjects.unwrap_or_default().into_iter().map(|s| (s.namespace.unwrap_or_default(), s.name)).collect();
        assert_eq!(subjects, [("a".into(), "y-gateway".into()), ("b".into(), "x-gateway".into())]);
        assert_eq!(b.role_ref.name, "tollgate-gateway");
    }

    #[test]
    fn a_name_that_cannot_name_a_service_is_explained() {
        assert_eq!(name_problem("main"), None);
        for bad in ["a.b", "1st", &"x".repeat(56)] {
            assert!(name_problem(bad).is_some_and(|m| m.contains("not a DNS label")), "{bad}");
        }
    }

    #[test]
    fn readiness_tells_the_story() {
        for (desired, ready, want, reason) in
            [(2, 2, true, "Available"), (2, 1, true, "Degraded"), (2, 0, false, "NoReplicaReady"), (0, 0, false, "ScaledToZero")]
        {
            let (ok, r, _) = readiness(desired, ready);
            assert_eq!((ok, r), (want, reason), "{desired}/{ready}");
        }
    }
}
