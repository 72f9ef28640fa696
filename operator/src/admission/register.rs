//! Keeps the webhook configurations in step with this operator's CA and address: the validating
//! one (decisions, requests, policies) and the mutating one (sidecar injection into the pods of
//! namespaces labelled `tollgate.dev/injection=enabled`).

use crate::config::Config;
use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, ObjectMeta};

pub const APPROVALS_PATH: &str = "/validate/approvalrequests/status";
pub const POLICIES_PATH: &str = "/validate/policies";
pub const REQUESTS_PATH: &str = "/validate/approvalrequests";
pub const INJECT_PATH: &str = "/mutate/pods";
pub const PODS_PATH: &str = "/validate/pods";
pub const REFERENCES_PATH: &str = "/validate/references";

pub async fn webhook_configuration(client: &kube::Client, config: &Config, ca_pem: &str) -> Result<()> {
    apply(client, &validating(config, ca_pem)).await.context("registering the validating webhook")?;
    apply(client, &mutating(config, ca_pem)).await.context("registering the injection webhook")?;
    Ok(())
}

/// How the API server reaches the webhook at `path`: a URL, or the Service in front of it.
fn client_config(config: &Config, ca_pem: &str, path: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
        url: config.webhook_url.as_ref().map(|u| format!("{}{path}", u.trim_end_matches('/'))),
        service: match (&config.webhook_url, config.webhook_service.split_once('/')) {
            (None, Some((ns, name))) => {
                Some(ServiceReference { namespace: ns.to_owned(), name: name.to_owned(), path: Some(path.to_owned()), port: Some(443) })
            }
            _ => None,
        },
    }
}

/// The operator's own namespace and kube-system stay writable while the webhook is down, so a
/// broken install can be repaired (namespaced objects only; cluster-scoped ones are always
/// reviewed).
fn exempt(config: &Config) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: "kubernetes.io/metadata.name".to_owned(),
        operator: "NotIn".to_owned(),
        values: Some(vec![config.namespace.clone(), "kube-system".to_owned()]),
    }
}

/// Every validating webhook: who may write what, failing closed.
pub fn validating(config: &Config, ca_pem: &str) -> ValidatingWebhookConfiguration {
    let exempt = exempt(config);
    let rule = |operations: &[&str], resources: &[&str]| RuleWithOperations {
        api_groups: Some(vec![tollgate_api::GROUP.to_owned()]),
        api_versions: Some(vec![tollgate_api::VERSION.to_owned()]),
        operations: Some(operations.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        scope: Some("*".to_owned()),
    };
    let webhook = |name: &str, path: &str, rules: Vec<RuleWithOperations>| ValidatingWebhook {
        name: name.to_owned(),
        admission_review_versions: vec!["v1".to_owned()],
        client_config: client_config(config, ca_pem, path),
        failure_policy: Some("Fail".to_owned()),
        match_policy: Some("Equivalent".to_owned()),
        side_effects: "None".to_owned(),
        timeout_seconds: Some(5),
        namespace_selector: Some(LabelSelector { match_expressions: Some(vec![exempt.clone()]), match_labels: None }),
        rules: Some(rules),
        ..Default::default()
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(config.webhook_configuration.clone()), ..Default::default() },
        webhooks: Some(vec![
            webhook("approvals.tollgate.dev", APPROVALS_PATH, vec![rule(&["UPDATE"], &["approvalrequests/status"])]),
            webhook("requests.tollgate.dev", REQUESTS_PATH, vec![rule(&["CREATE", "UPDATE"], &["approvalrequests"])]),
            webhook("policies.tollgate.dev", POLICIES_PATH, vec![rule(&["CREATE", "UPDATE"], &["toolpolicies", "clustertoolpolicies"])]),
            webhook("references.tollgate.dev", REFERENCES_PATH, vec![rule(&["CREATE", "UPDATE"], &["mcpservers", "modelproviders"])]),
            // Agent pods after admission: an edit or an ephemeral container cannot undo injection.
            ValidatingWebhook {
                namespace_selector: Some(injection_namespaces(&exempt)),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(vec!["UPDATE".to_owned()]),
                    resources: Some(vec!["pods".to_owned(), "pods/ephemeralcontainers".to_owned()]),
                    scope: Some("Namespaced".to_owned()),
                }]),
                ..webhook("pods.tollgate.dev", PODS_PATH, Vec::new())
            },
        ]),
    }
}

/// The injection webhook, on pod creation in labelled namespaces.
pub fn mutating(config: &Config, ca_pem: &str) -> MutatingWebhookConfiguration {
    let exempt = exempt(config);
    let inject = MutatingWebhook {
        name: "inject.tollgate.dev".to_owned(),
        admission_review_versions: vec!["v1".to_owned()],
        client_config: client_config(config, ca_pem, INJECT_PATH),
        failure_policy: Some("Fail".to_owned()),
        match_policy: Some("Equivalent".to_owned()),
        // Events about skipped pods are written, except on dry runs.
        side_effects: "NoneOnDryRun".to_owned(),
        timeout_seconds: Some(5),
        reinvocation_policy: Some("IfNeeded".to_owned()),
        namespace_selector: Some(injection_namespaces(&exempt)),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_owned()]),
            operations: Some(vec!["CREATE".to_owned()]),
            resources: Some(vec!["pods".to_owned()]),
            scope: Some("Namespaced".to_owned()),
        }]),
        ..Default::default()
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(config.webhook_configuration.clone()), ..Default::default() },
        webhooks: Some(vec![inject]),
    }
}

/// The namespaces labelled for injection, but the exempt ones.
fn injection_namespaces(exempt: &LabelSelectorRequirement) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(tollgate_core::k8s::inject::NAMESPACE_LABEL.to_owned(), "enabled".to_owned())].into()),
        match_expressions: Some(vec![exempt.clone()]),
    }
}

/// Server-side apply of a cluster-scoped object as the operator, taking over what it sets.
async fn apply<K>(client: &kube::Client, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Api::<K>::all(client.clone()).patch(&name, &crate::ssa::params(), &crate::ssa::body(object)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("tollgate-operator").chain(args.iter().copied())).expect("flags")
    }

    #[test]
    fn every_webhook_fails_closed_and_spares_only_the_namespaces_that_repair_it() {
        let c = config(&["--namespace", "tollgate-system"]);
        let v = validating(&c, "CA");
        let m = mutating(&c, "CA");
        let hooks: Vec<(&str, Option<&str>, Option<&LabelSelector>)> = v
            .webhooks
            .iter()
            .flatten()
            .map(|w| (w.name.as_str(), w.failure_policy.as_deref(), w.namespace_selector.as_ref()))
            .chain(m.webhooks.iter().flatten().map(|w| (w.name.as_str(), w.failure_policy.as_deref(), w.namespace_selector.as_ref())))
            .collect();
        assert_eq!(hooks.len(), 6);
        for (name, policy, selector) in hooks {
            assert_eq!(policy, Some("Fail"), "{name}");
            let exempted = selector.and_then(|s| s.match_expressions.as_ref()).into_iter().flatten().find(|e| e.key == "kubernetes.io/metadata.name");
            assert_eq!(exempted.and_then(|e| e.values.clone()), Some(vec!["tollgate-system".to_owned(), "kube-system".to_owned()]), "{name}");
        }
        let inject = &m.webhooks.as_ref().expect("hooks")[0];
        assert_eq!((inject.side_effects.as_str(), inject.reinvocation_policy.as_deref()), ("NoneOnDryRun", Some("IfNeeded")));
    }

    #[test]
    fn the_api_server_reaches_the_webhook_by_url_or_by_its_service() {
        let by_service = validating(&config(&["--webhook-service", "tollgate-system/tollgate-operator"]), "CA");
        let cc = &by_service.webhooks.as_ref().expect("hooks")[0].client_config;
        let service = cc.service.as_ref().expect("a service");
        assert_eq!((service.name.as_str(), service.path.as_deref(), cc.url.as_deref()), ("tollgate-operator", Some(APPROVALS_PATH), None));
        assert_eq!(cc.ca_bundle.as_ref().map(|b| b.0.as_slice()), Some(b"CA".as_slice()));
        let by_url = validating(&config(&["--webhook-url", "https://127.0.0.1:9443/"]), "CA");
        let cc = &by_url.webhooks.as_ref().expect("hooks")[0].client_config;
        assert_eq!((cc.url.as_deref(), cc.service.is_none()), (Some(format!("https://127.0.0.1:9443{APPROVALS_PATH}").as_str()), true));
    }
}
