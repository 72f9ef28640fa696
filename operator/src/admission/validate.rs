//! The validating admission webhook (DESIGN §3.3): who may append which decision to an
//! `ApprovalRequest`, that only the operator moves its phase, and that policies whose `when`
//! does not compile are refused at `kubectl apply` with the field path.

use super::register::{APPROVALS_PATH, INJECT_PATH, PODS_PATH, POLICIES_PATH, REFERENCES_PATH, REQUESTS_PATH};
use crate::context::Shared;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow, ClusterToolPolicySpec, ManagedAgent, ToolPolicySpec};
use tollgate_core::approval::Workflow;
use tollgate_core::approval::authz::{self, AuthzContext, Caller, authorize_status_update};
use tollgate_core::approval::request_authz::{self, RequestMeta};

/// Admission reviews carry one object; anything larger is not one of ours.
const MAX_BODY: usize = 4 << 20;

pub async fn serve(addr: SocketAddr, reuse_port: bool, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) -> Result<()> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.context("webhook socket")?;
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
    if reuse_port {
        socket.set_reuseport(true).context("SO_REUSEPORT")?;
    }
    socket.bind(addr).with_context(|| format!("binding the webhook to {addr}"))?;
    let listener = socket.listen(1024).context("listening")?;
    tracing::info!(%addr, "webhook listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = tollgate_runtime::accept(&listener).await;
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(s) => s,
                Err(e) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            };
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("reading the review: {e}"))),
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {e}"))),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &format!("AdmissionReview without a request: {e}"))),
    };
    let response = match path.as_str() {
        APPROVALS_PATH => review_decision(&request, &shared).await,
        POLICIES_PATH => review_policy(&request),
        REQUESTS_PATH => review_request(&request, &shared).await,
        INJECT_PATH => super::inject::review_pod(&request, &shared).await,
        PODS_PATH => super::inject::review_pod_update(&request),
        REFERENCES_PATH => super::references::review(&request, &shared).await,
        _ => return Ok(plain(StatusCode::NOT_FOUND, "no such webhook")),
    };
    shared.metrics.review(&path, response.allowed);
    let body = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response")))
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = code;
    r
}

fn typed<T: serde::de::DeserializeOwned>(o: Option<&DynamicObject>) -> Result<T, String> {
    let o = o.ok_or("the review has no object")?;
    serde_json::to_value(o).and_then(serde_json::from_value).map_err(|e| format!("unreadable object: {e}"))
}

#[tracing::instrument(skip_all, fields(request = %req.name, namespace = req.namespace.as_deref().unwrap_or(""), user = req.user_info.username.as_deref().unwrap_or("")))]
async fn review_decision(req: &AdmissionRequest<DynamicObject>, shared: &Shared) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if req.sub_resource.as_deref() != Some("status") {
        return response;
    }
    let (old, new): (ApprovalRequest, ApprovalRequest) = match (typed(req.old_object.as_ref()), typed(req.object.as_ref())) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return response.deny(e),
    };
    let caller = req.user_info.username.as_deref().unwrap_or_default();
    let groups = req.user_info.groups.clone().unwrap_or_default();
    let ns = req.namespace.as_deref().unwrap_or_default();
    let workflows: Api<ApprovalWorkflow> = Api::namespaced(shared.client.clone(), ns);
    let workflow = match workflows.get_opt(&old.spec.workflow).await {
        Ok(Some(w)) => w,
        Ok(None) => {
            return match authz::without_workflow(caller, &shared.identity, &old.spec.workflow, ns) {
                Ok(()) => response,
                Err(refusal) => response.deny(refusal.to_string()),
            };
        }
        Err(e) => return response.deny(format!("cannot read approval workflow {:?}: {e}", old.spec.workflow)),
    };
    let rules = Workflow::from_spec(&old.spec.workflow, &workflow.spec);
    let agent_sa = format!("system:serviceaccount:{ns}:{}", old.spec.service_account);
    let relay = shared.serving.target().relay_user;
    let ctx = AuthzContext {
        workflow: &rules,
        request_name: &req.name,
        agent_service_account: &agent_sa,
        operator: &shared.identity,
        slack_relay: &relay,
        now: jiff::Timestamp::now(),
    };
    match authorize_status_update(&old.status.unwrap_or_default(), &new.status.unwrap_or_default(), &Caller { username: caller, groups: &groups }, &ctx) {
        Ok(()) => response,
        Err(refusal) => {
            tracing::info!(%refusal, "decision refused");
            response.deny(refusal.to_string())
        }
    }
}

fn request_meta(ar: &ApprovalRequest) -> RequestMeta {
    let m = &ar.metadata;
    RequestMeta {
        labels: m.labels.clone().unwrap_or_default(),
        annotations: m.annotations.clone().unwrap_or_default(),
        owner_references: m.owner_references.as_ref().map_or(0, Vec::len),
        finalizers: m.finalizers.clone().unwrap_or_default(),
    }
}

/// Creates and updates of the request object: bound to the agent's identity (DESIGN §3.3).
#[tracing::instrument(skip_all, fields(request = %req.name, namespace = req.namespace.as_deref().unwrap_or(""), user = req.user_info.username.as_deref().unwrap_or("")))]
async fn review_request(req: &AdmissionRequest<DynamicObject>, shared: &Shared) -> AdmissionResponse {
    use kube::core::admission::Operation;
    let response = AdmissionResponse::from(req);
    let new: ApprovalRequest = match typed(req.object.as_ref()) {
        Ok(n) => n,
        Err(e) => return response.deny(e),
    };
    let caller = req.user_info.username.as_deref().unwrap_or_default();
    let ns = req.namespace.as_deref().unwrap_or_default();
    let verdict = match req.operation {
        Operation::Create => {
            let agents: Api<ManagedAgent> = Api::namespaced(shared.client.clone(), ns);
            let agent_sa = match agents.get_opt(&new.spec.agent).await {
                Ok(a) => a.map(|a| a.spec.service_account_name),
                Err(e) => return response.deny(format!("cannot read ManagedAgent {:?}: {e}", new.spec.agent)),
            };
            request_authz::authorize_create(caller, ns, &new.spec.agent, &new.spec.service_account, agent_sa.as_deref(), &request_meta(&new))
        }
        Operation::Update => match typed::<ApprovalRequest>(req.old_object.as_ref()) {
            Ok(old) => request_authz::authorize_update(caller, ns, &old.spec.service_account, &shared.identity, &request_meta(&old), &request_meta(&new)),
            Err(e) => return response.deny(e),
        },
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => response,
        Err(refusal) => {
            tracing::info!(%refusal, "request write refused");
            response.deny(refusal.to_string())
        }
    }
}

#[tracing::instrument(skip_all, fields(kind = %req.kind.kind, policy = %req.name))]
fn review_policy(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let Some(object) = req.object.as_ref() else { return response };
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    let ns = req.namespace.as_deref().unwrap_or_default();
    let compiled = match req.kind.kind.as_str() {
        "ToolPolicy" => serde_json::from_value::<ToolPolicySpec>(spec)
            .map_err(|e| format!("spec: {e}"))
            .and_then(|s| tollgate_core::policy::compile_tool_policy(ns, &req.name, &s).map(drop).map_err(|e| e.to_string())),
        "ClusterToolPolicy" => serde_json::from_value::<ClusterToolPolicySpec>(spec)
            .map_err(|e| format!("spec: {e}"))
            .and_then(|s| tollgate_core::policy::compile_cluster_tool_policy(&req.name, &s).map(drop).map_err(|e| e.to_string())),
        _ => Ok(()),
    };
    match compiled {
        Ok(()) => response,
        Err(e) => response.deny(format!("invalid policy: {e}")),
    }
}
