//! The audit store's HTTP API. Sidecars send batches with their service-account token; the API
//! server says whose it is (TokenReview), and only an agent's service account is taken, under
//! the identity it was reviewed as. Reading (query, export, verify) needs the right to `list`
//! `auditrecords.tollgate.dev` (in the namespace queried, or cluster-wide), checked with a
//! SubjectAccessReview: RBAC decides who reads the audit, not the gateway.

use crate::audit_store::{Query, Source};
use crate::state::GatewayState;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tollgate_mcp_client::transport::{self, Body, full};

/// The largest batch accepted.
const MAX_BATCH: usize = 8 << 20;
/// Twice what a sidecar sends in one batch.
const MAX_RECORDS: usize = 1000;

fn answer(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    answer(status, json!({"error": message}))
}

/// The reviewed user and groups of the request's bearer token, for `audience` (the API
/// server's when None).
async fn who(gw: &GatewayState, req: &Request<Incoming>, audience: Option<&str>) -> Result<(String, Vec<String>), Response<Body>> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "send a Kubernetes token: Authorization: Bearer <token>"))?;
    let audiences = audience.map(|a| vec![a.to_owned()]);
    let review = TokenReview { spec: TokenReviewSpec { token: Some(token.trim().to_owned()), audiences }, ..Default::default() };
    let reviewed = Api::<TokenReview>::all(gw.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot review the token: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    match (status.authenticated, status.user) {
        (Some(true), Some(u)) => Ok((u.username.unwrap_or_default(), u.groups.unwrap_or_default())),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            &match audience {
                Some(a) => format!("the token is not valid for audience {a}: a sidecar ships with a token projected for it"),
                None => "the token is not valid".to_owned(),
            },
        )),
    }
}

/// Whether `user` may list audit records in `namespace` (None: in every namespace).
async fn may_read(gw: &GatewayState, user: &str, groups: &[String], namespace: Option<&str>) -> Result<bool, Response<Body>> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("tollgate.dev".into()),
                resource: Some("auditrecords".into()),
                verb: Some("list".into()),
                namespace: namespace.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = Api::<SubjectAccessReview>::all(gw.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot check access: {e}")))?;
    Ok(r.status.is_some_and(|s| s.allowed))
}

pub async fn handle(req: Request<Incoming>, gw: Arc<GatewayState>) -> Response<Body> {
    // Batches come from sidecars, with a token for this gateway alone; readers are people, with
    // their API server tokens.
    let shipping = req.method() == Method::POST && req.uri().path() == "/audit/v1/batches";
    let audience = shipping.then_some(gw.config.audit_token_audience.as_str());
    let (user, groups) = match who(&gw, &req, audience).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let path = req.uri().path().to_owned();
    let params: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":")))
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/audit/v1/batches") => receive(req, &gw, &user).await,
        (Method::GET, "/audit/v1/records") => {
            let namespace = param("namespace");
            match may_read(&gw, &user, &groups, namespace.as_deref()).await {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "{user} may not list auditrecords.tollgate.dev{}",
                            namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default()
                        ),
                    );
                }
                Err(r) => return r,
            }
            let q = Query {
                namespace,
                agent: param("agent"),
                tool: param("tool"),
                decision: param("decision"),
                since_us: param("since").and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_microsecond()),
                until_us: param("until").and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_microsecond()),
                shadow: param("shadow").is_some_and(|v| v == "true"),
                limit: param("limit").and_then(|l| l.parse().ok()).unwrap_or(1000),
            };
            match gw.ledger.query_audit(&q).await {
                Ok(links) => answer(StatusCode::OK, json!({"records": links})),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        (Method::GET, "/audit/v1/export" | "/audit/v1/verify") => {
            match may_read(&gw, &user, &groups, None).await {
                Ok(true) => {}
                Ok(false) => return error(StatusCode::FORBIDDEN, &format!("{user} may not list auditrecords.tollgate.dev in every namespace")),
                Err(r) => return r,
            }
            let links = match gw.ledger.export_audit().await {
                Ok(l) => l,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            };
            if path.ends_with("verify") {
                return verify(&gw, &links).await;
            }
            let mut out = String::new();
            for l in &links {
                out.push_str(&serde_json::to_string(l).unwrap_or_default());
                out.push('\n');
            }
            let mut r = Response::new(full(out));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            r
        }
        _ => error(StatusCode::NOT_FOUND, "the audit API serves POST /audit/v1/batches, GET /audit/v1/records, /audit/v1/export and /audit/v1/verify"),
    }
}

/// The chain checked whole, and against every signed checkpoint when the gateway signs them.
async fn verify(gw: &GatewayState, links: &[tollgate_core::audit::chain::Link]) -> Response<Body> {
    let Some(signer) = &gw.signer else {
        return match tollgate_core::audit::chain::verify(links) {
            Ok(n) => answer(StatusCode::OK, json!({"ok": true, "records": n, "checkpoints": 0, "signed": false})),
            Err(b) => answer(StatusCode::OK, json!({"ok": false, "error": b.to_string()})),
        };
    };
    let checkpoints = match crate::checkpoints::load(&gw.client, signer).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot read the audit checkpoints: {e}")),
    };
    match tollgate_core::audit::checkpoint::verify(links, &checkpoints, &signer.public) {
        Ok(v) => answer(StatusCode::OK, json!({"ok": true, "records": v.records, "checkpoints": v.checkpoints, "signed": true, "publicKey": signer.public})),
        Err(e) => answer(StatusCode::OK, json!({"ok": false, "error": e.to_string(), "publicKey": signer.public})),
    }
}

async fn receive(req: Request<Incoming>, gw: &GatewayState, user: &str) -> Response<Body> {
    // Only an agent's own service account ships records, and as itself.
    let Some((namespace, service_account)) = user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) else {
        return error(StatusCode::FORBIDDEN, &format!("{user} is not a service account"));
    };
    let source = Source { namespace: namespace.to_owned(), service_account: service_account.to_owned(), shipped: true };
    let index = gw.index.load();
    let agents: Vec<String> = index
        .agents
        .values()
        .filter(|a| a.namespace == source.namespace && a.spec.service_account_name == source.service_account)
        .map(|a| a.name.clone())
        .collect();
    if agents.is_empty() {
        return error(StatusCode::FORBIDDEN, &format!("{user} is not the service account of any ManagedAgent"));
    }
    let bytes = match transport::read_request(req.into_body(), MAX_BATCH, Duration::from_secs(gw.config.request_body_seconds)).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &format!("batch refused: {e}")),
    };
    let mut batch: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a JSON batch: {e}")),
    };
    let (Some(id), Some(Value::Array(mut records))) = (batch["batch_id"].as_str().map(str::to_owned), batch.get_mut("records").map(Value::take)) else {
        return error(StatusCode::BAD_REQUEST, "a batch is {\"batch_id\": \"...\", \"records\": [...]}");
    };
    // One batch is one transaction on the ledger every call shares: bounded, like a sidecar's.
    if records.len() > MAX_RECORDS {
        return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("batch refused: {} records, at most {MAX_RECORDS} in one batch", records.len()));
    }
    if let Some(i) = records.iter().position(|r| !r.is_object()) {
        return error(StatusCode::BAD_REQUEST, &format!("batch refused: record {i} is not a JSON object"));
    }
    // Batch ids are the sender's; scoped by its identity, one agent cannot suppress another's.
    let scoped = format!("{namespace}/{service_account}/{id}");
    for r in &mut records {
        tollgate_core::audit::bounds::attribute(r, namespace, service_account, &agents);
    }
    let count = records.len();
    match gw.ledger.append_audit(&scoped, &source, records).await {
        Ok(new) => answer(StatusCode::OK, json!({"stored": if new { count } else { 0 }, "duplicate": !new})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
