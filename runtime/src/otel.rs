//! Traces over OTLP (docs/operations.md, "Tracing"): configured by the standard `OTEL_*`
//! variables, off when none says where to send them. Spans of Tollgate's own crates (and the
//! controller runtime's reconcile spans) are exported; what the agent sent never is, because no
//! span or event carries arguments (docs/design.md §3.8).

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why tracing was asked for and cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("{var}={value:?}: only http/protobuf is supported (an OTLP/HTTP receiver, usually on port 4318)")]
    Protocol { var: &'static str, value: String },
    #[error("{var}: reading the certificate {path:?}: {source}")]
    Certificate { var: &'static str, path: String, source: std::io::Error },
    #[error("{var}: {path:?} holds no PEM certificate the client accepts: {message}")]
    BadCertificate { var: &'static str, path: String, message: String },
    #[error("building the OTLP HTTP client: {0}")]
    Client(String),
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// What the environment asks for: where traces go, and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// A CA certificate (PEM) to trust for an `https` endpoint, besides the system's.
    pub certificate: Option<(&'static str, String)>,
    pub timeout: Duration,
}

/// Reads the standard variables through `get`: `None` when traces are off (no endpoint,
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER` naming no `otlp`). The endpoint and
/// headers themselves are read by the exporter, as the specification says.
pub fn settings(get: impl Fn(&str) -> Option<String>) -> Result<Option<OtlpSettings>, OtelError> {
    let set = |var: &str| get(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.split(',').any(|e| e.trim() == "otlp")) {
        return Ok(None);
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(value) = set(var) {
            if value != "http/protobuf" {
                return Err(OtelError::Protocol { var, value });
            }
            break;
        }
    }
    let certificate = ["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"].into_iter().find_map(|v| set(v).map(|p| (v, p)));
    let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .into_iter()
        .find_map(|v| set(v).and_then(|t| t.parse::<u64>().ok()))
        .map_or(Duration::from_secs(10), Duration::from_millis);
    Ok(Some(OtlpSettings { certificate, timeout }))
}

static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether spans are exported: when not, nothing here does any work per call.
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// The tracer provider for `service` (unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names another), exporting in batches over OTLP/HTTP.
pub fn provider(service: &'static str, settings: &OtlpSettings) -> Result<SdkTracerProvider, OtelError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let client = http_client(settings)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(settings.timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let named =
        std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty()) || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let _ = ENABLED.set(true);
    Ok(provider)
}

/// The tracer the `tracing` layer exports through.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("tollgate")
}

/// A blocking client built on a thread of its own: it runs a runtime of its own, which must not
/// be started from inside the process's.
fn http_client(settings: &OtlpSettings) -> Result<reqwest::blocking::Client, OtelError> {
    let mut builder = reqwest::blocking::Client::builder().timeout(settings.timeout);
    if let Some((var, path)) = &settings.certificate {
        let pem = std::fs::read(path).map_err(|source| OtelError::Certificate { var, path: path.clone(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| OtelError::BadCertificate { var, path: path.clone(), message: e.to_string() })?;
        if certs.is_empty() {
            return Err(OtelError::BadCertificate { var, path: path.clone(), message: "no certificate in it".into() });
        }
        builder = builder.tls_certs_merge(certs);
    }
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| OtelError::Client("the thread building it panicked".into()))?
        .map_err(|e| OtelError::Client(e.to_string()))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Pairs (`traceparent`, `tracestate`) from elsewhere than headers: an MCP request's `_meta`.
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Continues the caller's trace: `span` becomes the child of the `traceparent` in `headers`,
/// else of the one in `meta` (MCP carries it in a request's `params._meta` too).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap, meta: &[(&str, &str)]) {
    if !enabled() {
        return;
    }
    let propagator = TraceContextPropagator::new();
    let from_headers = headers.contains_key("traceparent");
    let cx = if from_headers { propagator.extract(&Headers(headers)) } else { propagator.extract(&Pairs(meta)) };
    if from_headers || !meta.is_empty() {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s context into `headers` (`traceparent`, `tracestate`), so the next hop's spans
/// join the trace. Without tracing, headers are left as they came.
pub fn propagate(span: &tracing::Span, headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
}

/// Renames a span that has begun (a model call is named for its model once the body is read):
/// `otel.name` recorded later would be ignored once the span has started.
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    if enabled() {
        span.context().span().update_name(name);
    }
}

/// The `traceparent` of `span`, for a record that outlives the call (an approval request).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    propagate(span, &mut headers);
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Links `span` to the trace a record came from (its `traceparent`): the operator's work on an
/// approval request joins the held call's trace as a link, not as a child.
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt;
    if !enabled() {
        return;
    }
    let pairs = [("traceparent", traceparent)];
    let cx = TraceContextPropagator::new().extract(&Pairs(&pairs));
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, OtelError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        settings(|k| map.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(from(&[]).unwrap(), None);
        assert_eq!(from(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
        assert!(from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap().is_some());
        assert!(from(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")]).unwrap().is_some());
    }

    #[test]
    fn the_standard_switches_turn_it_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(from(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(), None);
        assert_eq!(from(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        assert!(from(&[endpoint, ("OTEL_TRACES_EXPORTER", "console, otlp")]).unwrap().is_some());
        assert!(from(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).unwrap().is_some());
    }

    #[test]
    fn an_unsupported_protocol_is_an_error_that_names_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let e = from(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"") && e.contains("http/protobuf"), "{e}");
        // The signal's own variable wins over the general one.
        let ok = from(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")]).unwrap();
        assert!(ok.is_some());
    }

    #[test]
    fn certificate_and_timeout_prefer_the_signal_variables() {
        let s = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.certificate, Some(("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem".to_owned())));
        assert_eq!(s.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn a_missing_certificate_file_is_a_clear_error() {
        let s = OtlpSettings { certificate: Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem".into())), timeout: Duration::from_secs(1) };
        let e = http_client(&s).unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
