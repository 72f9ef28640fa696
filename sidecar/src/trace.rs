//! The spans of a tool call, as the OpenTelemetry MCP and GenAI conventions name them, with
//! Tollgate's decision on them (docs/operations.md, "Tracing"). Without tracing configured the
//! span is a plain one at debug level, for the logs, and nothing here costs anything per call.
//! No span carries arguments or a justification: only names, decisions and identifiers.

use hyper::header::HeaderMap;
use tollgate_core::audit::{AuditDecision, AuditRecord, Outcome, RecordKind};
use tollgate_core::mcp::jsonrpc::{Envelope, Meta};
use tollgate_runtime::otel;
use tracing::Span;
use tracing::field::Empty;

/// The span of one `tools/call` of `agent` (namespace, name), continuing the agent's trace (its `traceparent` header, or
/// the one in the call's `_meta`).
pub(crate) fn tools_call(agent: (&str, &str), server: &str, tool: &str, env: &Envelope<'_>, headers: &HeaderMap, meta: Option<&Meta>) -> Span {
    if !otel::enabled() {
        // Without tracing the span only gives the call's log lines its server and tool: at debug
        // level, made only when debug logging is on (the lines logged inside a call name what
        // they need). At info it cost the JSON log layer a formatting of its fields, and the
        // call an entry and exit on every poll, on every call (docs/performance-history.md).
        return tracing::debug_span!("tools_call", server = %server, tool = %tool);
    }
    use tollgate_core::trace::attribute;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(attribute);
    let tool = attribute(tool);
    let span = tracing::info_span!(
        "tools_call",
        otel.name = %format_args!("tools/call {tool}"),
        otel.kind = "server",
        otel.status_code = Empty,
        "mcp.method.name" = "tools/call",
        "mcp.session.id" = header("mcp-session-id").as_deref(),
        "mcp.protocol.version" = header("mcp-protocol-version").as_deref(),
        "jsonrpc.request.id" = env.id.map(|i| attribute(i.get())).as_deref(),
        "gen_ai.operation.name" = "execute_tool",
        "gen_ai.tool.name" = %tool,
        "error.type" = Empty,
        "tollgate.agent" = %format_args!("{}/{}", agent.0, agent.1),
        "tollgate.server" = %server,
        "tollgate.correlation_id" = Empty,
        "tollgate.decision" = Empty,
        "tollgate.policy" = Empty,
        "tollgate.rule" = Empty,
        "tollgate.shadow" = Empty,
        "tollgate.approval_request" = Empty,
        "tollgate.outcome" = Empty,
    );
    let carried: Vec<(&str, &str)> = meta
        .map(|m| [("traceparent", m.traceparent.as_deref()), ("tracestate", m.tracestate.as_deref())])
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    otel::continue_trace(&span, headers, &carried);
    span
}

/// The wait for a person: a child of the held call's span that ends when its request does. It
/// names the `ApprovalRequest`, whose `tollgate.dev/traceparent` annotation points back here.
pub(crate) fn approval_wait(call: &Span, namespace: &str, request: &str, workflow: &str) -> Span {
    if !otel::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        parent: call,
        "approval_wait",
        otel.name = %format_args!("await_approval {request}"),
        otel.kind = "internal",
        "tollgate.approval_request" = %format_args!("{namespace}/{request}"),
        "tollgate.workflow" = %workflow,
        "tollgate.outcome" = Empty,
    )
}

/// The people's decisions, each as an event on the wait span.
pub(crate) fn decided_by_people(wait: &Span, decisions: &[tollgate_api::ApprovalDecision]) {
    if !otel::enabled() {
        return;
    }
    for d in decisions {
        let (verdict, at) = (format!("{:?}", d.decision), d.time.0.to_string());
        tracing::info!(parent: wait, tollgate.approval.user = d.user, tollgate.approval.decision = verdict, tollgate.approval.time = at, "approval decision");
    }
}

/// What a record says that its call's span carries: the hand-written lines of a call and a held
/// call's `AuditRecord` say it alike.
pub(crate) struct Said<'a> {
    pub kind: RecordKind,
    pub correlation_id: &'a str,
    pub decision: AuditDecision,
    pub policy: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub shadow: Option<AuditDecision>,
    pub namespace: &'a str,
    pub approval_request: Option<&'a str>,
    pub outcome: Option<Outcome>,
    pub is_error: bool,
}

impl<'a> From<&'a AuditRecord> for Said<'a> {
    fn from(r: &'a AuditRecord) -> Said<'a> {
        Said {
            kind: r.kind,
            correlation_id: &r.correlation_id,
            decision: r.decision,
            policy: r.policy.as_deref(),
            rule: r.rule.as_deref(),
            shadow: r.shadow.as_ref().map(|s| s.would),
            namespace: &r.agent.namespace,
            approval_request: r.approval_request.as_deref(),
            outcome: r.outcome,
            is_error: r.is_error,
        }
    }
}

/// What an audit record says about its call, onto the span that is current when it is written
/// (the call's, or a held call's wait): one place, so spans say what the audit says.
pub(crate) fn recorded(record: &Said<'_>) {
    if !otel::enabled() {
        return;
    }
    let span = Span::current();
    // Each fact once: an attribute recorded twice is exported twice.
    if record.kind == RecordKind::Decision {
        span.record("tollgate.correlation_id", record.correlation_id);
        span.record("tollgate.decision", record.decision.as_str());
        if let Some(p) = record.policy {
            span.record("tollgate.policy", p);
        }
        if let Some(r) = record.rule {
            span.record("tollgate.rule", r);
        }
        if let Some(s) = record.shadow {
            span.record("tollgate.shadow", s.as_str());
        }
        if let Some(r) = record.approval_request {
            span.record("tollgate.approval_request", format!("{}/{r}", record.namespace));
        }
    }
    if let Some(o) = record.outcome {
        span.record("tollgate.outcome", o.as_str());
        if record.is_error && matches!(o, Outcome::UpstreamError | Outcome::Timeout) {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", o.as_str());
        }
    }
}
