//! Logging and tracing setup: one `tracing` span per reconcile, admission review and call; logs
//! to stderr, written from a thread of their own (`log_writer.rs`); spans also over OTLP when
//! the `OTEL_*` variables ask for it ([`crate::otel`]).

use std::time::Duration;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what is still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    log: Option<crate::log_writer::LogQueue>,
}

impl Telemetry {
    /// Flushes queued spans (bounded by the exporter's timeout) and log lines (bounded by
    /// [`LOG_FLUSH`]); call once, before exiting.
    pub fn shutdown(mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces at exit");
        }
        if let Some(log) = self.log.take() {
            log.flush(LOG_FLUSH);
        }
    }
}

/// How long an exiting process waits for its last log lines to be read.
pub const LOG_FLUSH: Duration = Duration::from_secs(2);

/// Sets up logging, and tracing over OTLP for `service` when configured. A tracing setup that
/// cannot work is logged and left off: tracing never keeps a process from doing its job.
pub fn init(json: bool, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn,hyper=warn"));
    // Written by a thread of its own (log_writer.rs); where that thread cannot start, as before.
    let log = crate::log_writer::LogQueue::start(std::io::stderr()).ok();
    let writer = match &log {
        Some(q) => BoxMakeWriter::new(q.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json { fmt.json().fmt_fields(crate::json_fields::AppendedJsonFields).boxed() } else { fmt.boxed() };
    let (provider, problem) = match crate::otel::settings(|k| std::env::var(k).ok()) {
        Ok(None) => (None, None),
        Ok(Some(settings)) => match crate::otel::provider(service, &settings) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        Err(e) => (None, Some(e)),
    };
    // Only Tollgate's spans (and the controller runtime's reconciles), whatever the log filter
    // says: a dependency's spans could carry what an agent sent.
    let exported = Targets::new().with_target("tollgate", LevelFilter::INFO).with_target("kube_runtime::controller", LevelFilter::INFO);
    let otel = provider.as_ref().map(|p| {
        // Where in Tollgate's source a span began, and on which thread, says nothing to whoever
        // reads a trace; it would only make every span bigger.
        tracing_opentelemetry::layer()
            .with_tracer(crate::otel::tracer(p))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(exported)
    });
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    if let Some(e) = problem {
        tracing::error!(error = %e, "traces are not exported");
    } else if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry { provider, log }
}
