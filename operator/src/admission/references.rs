//! Admission of `MCPServer` and `ModelProvider` writes (DESIGN §3.6): Tollgate sends the Secrets
//! and ConfigMaps such an object names to the URL it names, so the writer must be able to `get`
//! each of them (asked of the API server as the writer, with a SubjectAccessReview), and the URL
//! must pass `tollgate_core::k8s::references`.

use crate::context::Shared;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use tollgate_api::{McpServerSpec, ModelProviderSpec};
use tollgate_core::k8s::references::{self, Named};

#[tracing::instrument(skip_all, fields(kind = %req.kind.kind, name = %req.name, namespace = req.namespace.as_deref().unwrap_or(""), user = req.user_info.username.as_deref().unwrap_or("")))]
pub async fn review(req: &AdmissionRequest<DynamicObject>, shared: &Shared) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let Some(object) = req.object.as_ref() else { return response };
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    let checked = match req.kind.kind.as_str() {
        "MCPServer" => serde_json::from_value::<McpServerSpec>(spec)
            .map(|s| (references::of_server(&s), s.url.as_deref().and_then(|u| references::url_refusal("spec.url", u, true)))),
        "ModelProvider" => serde_json::from_value::<ModelProviderSpec>(spec)
            .map(|s| (references::of_provider(&s), references::url_refusal("spec.baseURL", &s.base_url, shared.allow_http_providers))),
        _ => return response,
    };
    let (named, url) = match checked {
        Ok(c) => c,
        Err(e) => return response.deny(format!("spec: {e}")),
    };
    if let Some(why) = url {
        return response.deny(why);
    }
    let ns = req.namespace.as_deref().unwrap_or_default();
    let mut unreadable = Vec::new();
    for n in &named {
        match may_get(req, shared, ns, n).await {
            Ok(true) => {}
            Ok(false) => unreadable.push(format!("{} {}", n.resource.trim_end_matches('s'), n.name)),
            Err(e) => return response.deny(format!("cannot check who may read {} {}: {e}", n.resource, n.name)),
        }
    }
    if unreadable.is_empty() {
        return response;
    }
    let user = req.user_info.username.as_deref().unwrap_or("(unknown)");
    response.deny(format!(
        "{user} may not get {} in namespace {ns}: Tollgate sends what a {} names to its URL, so only someone who may read it may name it",
        unreadable.join(", "),
        req.kind.kind
    ))
}

/// Whether the writer of `req` may `get` `n` in `ns`, as the API server's authorizers say.
async fn may_get(req: &AdmissionRequest<DynamicObject>, shared: &Shared, ns: &str, n: &Named) -> Result<bool, kube::Error> {
    let u = &req.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: u.username.clone(),
            groups: u.groups.clone(),
            uid: u.uid.clone(),
            extra: u.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                verb: Some("get".into()),
                resource: Some(n.resource.into()),
                name: Some(n.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = Api::<SubjectAccessReview>::all(shared.client.clone()).create(&PostParams::default(), &review).await?;
    Ok(r.status.is_some_and(|s| s.allowed))
}
