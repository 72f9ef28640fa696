//! `/healthz`, `/readyz` and `/metrics` on the admin port.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    webhook: String,
    allowed: String,
}

/// Tollgate's Prometheus metrics; each process uses the families that concern it.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reviews: Family<ReviewLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    redirected: Family<RouteLabels, Counter>,
    audit: Family<AuditLabels, Counter>,
    shadow: Family<ShadowLabels, Counter>,
    reservations: Family<ReservationLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReservationLabels {
    /// `memory` (from an allowance the gateway leased) or `database` (a group's transaction).
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    /// What an audited rule or budget would have done: `allow`, `deny`, `require_approval`.
    would: String,
    /// `tool` (a policy's rule) or `model` (a budget).
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    // Static: every call counts itself here, and a label set of owned strings was two
    // allocations a call.
    decision: &'static str,
    outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reviews = Family::<ReviewLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("tollgate_operator_reconciles", "Reconciles by controller and result", reconciles.clone());
        registry.register("tollgate_admission_reviews", "Admission reviews by webhook and verdict", reviews.clone());
        registry.register("tollgate_tool_calls", "Tool calls by decision and outcome", decisions.clone());
        let redirected = Family::<RouteLabels, Counter>::default();
        registry.register(
            "tollgate_redirected_connections",
            "Connections the transparent redirect sent to the sidecar, by what became of them",
            redirected.clone(),
        );
        let audit = Family::<AuditLabels, Counter>::default();
        registry.register(
            "tollgate_audit_records",
            "Audit records not shipped or stored whole, by what became of them (cut, refused, overflowed)",
            audit.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "tollgate_shadow_decisions",
            "Calls whose audited rules or budgets would have decided otherwise, by what they would have done",
            shadow.clone(),
        );
        let reservations = Family::<ReservationLabels, Counter>::default();
        registry.register(
            "tollgate_budget_reservations",
            "Model calls reserved against budgets, by where: from an allowance in memory, or in the database",
            reservations.clone(),
        );
        Metrics { registry, reconciles, reviews, decisions, redirected, audit, shadow, reservations }
    }
}

impl Metrics {
    pub fn tool_call(&self, decision: &'static str, outcome: &'static str) {
        self.decisions.get_or_create(&DecisionLabels { decision, outcome }).inc();
    }

    /// A call an audited rule (`call` = `tool`) or budget (`model`) would have decided as `would`.
    pub fn shadow(&self, call: &str, would: &str) {
        self.shadow.get_or_create(&ShadowLabels { would: would.into(), call: call.into() }).inc();
    }

    /// A model call reserved against its budgets: `memory` or `database`.
    pub fn reservation(&self, path: &str) {
        self.reservations.get_or_create(&ReservationLabels { path: path.into() }).inc();
    }

    /// A redirected connection: `mcp`, `passthrough`, or why it was refused.
    pub fn redirected(&self, route: &str) {
        self.redirected.get_or_create(&RouteLabels { route: route.into() }).inc();
    }

    /// An audit record not shipped or stored whole: `cut` to its bound, `refused` by the store,
    /// or `overflowed` the queue while the store was away; or not written to stdout: `unwritten`
    /// while stdout was not read.
    pub fn audit(&self, event: &str, n: u64) {
        self.audit.get_or_create(&AuditLabels { event: event.into() }).inc_by(n);
    }

    pub fn reconcile(&self, controller: &str, ok: bool) {
        let labels = ReconcileLabels { controller: controller.into(), result: if ok { "ok" } else { "error" }.into() };
        self.reconciles.get_or_create(&labels).inc();
    }

    pub fn review(&self, webhook: &str, allowed: bool) {
        self.reviews.get_or_create(&ReviewLabels { webhook: webhook.into(), allowed: allowed.to_string() }).inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, ready: Readiness) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the admin port {addr}"))?;
    tracing::info!(%addr, "admin listening");
    loop {
        let (stream, _) = crate::accept(&listener).await;
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (code, body) = match req.uri().path() {
                    "/healthz" => (StatusCode::OK, "ok".to_owned()),
                    "/readyz" if ready.is_ready() => (StatusCode::OK, "ready".to_owned()),
                    "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned()),
                    "/metrics" => (StatusCode::OK, metrics.encode()),
                    _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
                };
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = code;
                futures::future::ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
