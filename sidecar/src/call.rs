//! One call's facts, shared by its audit records and its approval request.

use crate::body::Body;
use crate::snapshot::Server;
use crate::state::Sidecar;
use crate::trace::Said;
use hyper::Response;
use std::sync::Arc;
use std::time::Instant;
use tollgate_core::audit::line::{Line, Shared, SharedText};
use tollgate_core::audit::{AgentRef, AuditDecision, AuditRecord, Outcome, RecordKind, ShadowRecord};
use tollgate_core::json_tree::Tree;
use tollgate_core::policy::{self, Decision};

/// One call's facts, for audit records and approval requests.
pub(crate) struct CallContext<'a> {
    pub sc: &'a Arc<Sidecar>,
    pub server: &'a Server,
    pub tool: &'a str,
    pub arguments: &'a Tree<'a>,
    /// The arguments' JSON text as the agent sent it, when `arguments` is exactly that.
    pub raw_arguments: Option<&'a str>,
    pub justification: Option<&'a str>,
    pub decision: &'a Decision,
    pub correlation: String,
    /// What every record of the call repeats, worked out once for all of them.
    pub facts: std::sync::OnceLock<Facts>,
}

/// The arguments' digest, the policy and rule that decided, and what every record of the call
/// repeats, written once as JSON (`tollgate_core::audit::line`).
pub(crate) struct Facts {
    digest: String,
    policy: Option<String>,
    rule: Option<String>,
    shared: Arc<SharedText>,
}

impl CallContext<'_> {
    /// The arguments' digest, computed once for the call's records and its approval request.
    pub fn digest(&self) -> &str {
        &self.facts().digest
    }

    fn facts(&self) -> &Facts {
        self.facts.get_or_init(|| {
            let (policy, rule) = policy::attribution(&self.decision.decided_by);
            let digest = tollgate_core::mcp::digest::tree_digest(self.arguments);
            let arguments = tollgate_core::audit::redacted_text(self.arguments, self.raw_arguments);
            let justification = self.justification.map(tollgate_core::audit::redact::redact_str);
            let config = &self.sc.config;
            let snapshot = self.sc.snapshot.load();
            let shared = Shared {
                namespace: &config.namespace,
                name: &config.agent,
                pod: Some(config.pod.as_str()).filter(|p| !p.is_empty()),
                service_account: snapshot.agent.as_ref().map_or("", |a| a.service_account.as_str()),
                server: &self.server.name,
                tool: self.tool,
                arguments_digest: &digest,
                arguments: Some(&arguments),
                justification: justification.as_deref(),
                decision: AuditDecision::from(self.decision.action),
                policy: policy.as_deref(),
                rule: rule.as_deref(),
            }
            .text();
            Facts { digest, policy, rule, shared: Arc::new(shared) }
        })
    }

    /// Writes a record of the call, and says on the current span what it says.
    pub fn audit(&self, kind: RecordKind, outcome: Option<Outcome>, is_error: bool, request: Option<&str>, started: Option<Instant>) {
        let time = jiff::Timestamp::now().to_string();
        let shadow = self.decision.shadow.as_deref().filter(|_| kind == RecordKind::Decision).map(ShadowRecord::of);
        crate::trace::recorded(&self.said(kind, outcome, is_error, request, shadow.as_ref().map(|s| s.would)));
        let line = Line {
            approval_request: request,
            outcome,
            is_error,
            duration_ms: started.map(millis),
            error: self.decision.error.as_deref(),
            shadow: shadow.as_ref(),
            ..Line::new(&time, kind, &self.correlation, &self.facts().shared)
        };
        self.sc.audit.write_with(|buf| line.write(buf));
    }

    fn said<'b>(&'b self, kind: RecordKind, outcome: Option<Outcome>, is_error: bool, request: Option<&'b str>, shadow: Option<AuditDecision>) -> Said<'b> {
        let facts = self.facts();
        Said {
            kind,
            correlation_id: &self.correlation,
            decision: AuditDecision::from(self.decision.action),
            policy: facts.policy.as_deref(),
            rule: facts.rule.as_deref(),
            shadow,
            namespace: &self.sc.config.namespace,
            approval_request: request,
            outcome,
            is_error,
        }
    }

    /// Forwards an allowed call with `upstream`, writing its decision record while the server
    /// works on it: the arguments' digest and redaction and the record's serialization are not
    /// on the call's path (docs/design.md §3.2).
    pub async fn forward_recorded(&self, upstream: impl std::future::Future<Output = Response<Body>>) -> Response<Body> {
        let (resp, ()) = tokio::join!(upstream, async {
            // The connection sends the request first.
            WakeAgain(false).await;
            self.audit(RecordKind::Decision, None, false, None, None);
        });
        resp
    }

    /// As `audit` for the call's last record, written once its answer is on its way; the span
    /// hears what it says at once.
    pub fn audit_after_answer(&self, outcome: Outcome, is_error: bool, started: Instant) {
        let (time, duration_ms) = (jiff::Timestamp::now().to_string(), millis(started));
        crate::trace::recorded(&self.said(RecordKind::Outcome, Some(outcome), is_error, None, None));
        let (sc, shared, correlation, error) = (self.sc.clone(), self.facts().shared.clone(), self.correlation.clone(), self.decision.error.clone());
        tokio::spawn(async move {
            let line = Line {
                outcome: Some(outcome),
                is_error,
                duration_ms: Some(duration_ms),
                error: error.as_deref(),
                ..Line::new(&time, RecordKind::Outcome, &correlation, &shared)
            };
            sc.audit.write_with(|buf| line.write(buf));
        });
    }

    /// The outcome record a held call keeps, naming its approval `request`, to fill in and
    /// write when it ends.
    pub fn held_record(&self, request: &str) -> AuditRecord {
        let facts = self.facts();
        AuditRecord {
            time: jiff::Timestamp::now().to_string(),
            kind: RecordKind::Outcome,
            correlation_id: self.correlation.clone(),
            agent: AgentRef {
                namespace: self.sc.config.namespace.clone(),
                name: self.sc.config.agent.clone(),
                pod: Some(self.sc.config.pod.clone()).filter(|p| !p.is_empty()),
                service_account: self.sc.snapshot.load().agent.as_ref().map(|a| a.service_account.clone()).unwrap_or_default(),
            },
            server: self.server.name.clone(),
            tool: self.tool.to_owned(),
            arguments_digest: facts.digest.clone(),
            // The call's decision record has them; this one names it.
            arguments: None,
            justification: None,
            decision: AuditDecision::from(self.decision.action),
            policy: facts.policy.clone(),
            rule: facts.rule.clone(),
            approval_request: Some(request.to_owned()),
            approvers: Vec::new(),
            outcome: None,
            is_error: false,
            duration_ms: None,
            error: self.decision.error.clone(),
            // A shadow is counted once per call: on its decision record.
            shadow: None,
        }
    }
}

/// The answer to a call refused while its records could not be written
/// (`AuditLog::refuses_call`), counted.
pub(crate) fn refused_unwritten(sc: &Sidecar, id: Option<&serde_json::value::RawValue>) -> Response<Body> {
    sc.metrics.tool_call("deny", "audit_unwritten");
    crate::body::json(hyper::StatusCode::OK, tollgate_core::mcp::jsonrpc::tool_text_result(id, crate::audit::AUDIT_UNWRITTEN, true))
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Pending once, waking its task again at once: on the sidecar's one thread the task goes behind
/// the tasks already woken (the upstream connection, handed the request); on several, it may run
/// first, and the record is written before the request goes, as it was. Not
/// `tokio::task::yield_now`, which waits for the runtime to poll its sockets first: a system
/// call per call (a tenth more CPU a call, docs/performance-history.md).
struct WakeAgain(bool);

impl std::future::Future for WakeAgain {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
