//! A real OTLP receiver: Jaeger v2 (the OpenTelemetry Collector distribution) built from its Go
//! module by `e2e/scripts/build-jaeger.sh`, receiving OTLP/HTTP on loopback into memory, and
//! answering trace queries (`/api/traces/<id>`) for the tests to read what was exported.

use crate::child::Process;
use crate::components::free_ports;
use crate::{ControlPlane, wait_until};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The `jaeger` binary: `TOLLGATE_JAEGER`, else what `build-jaeger.sh` built.
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::components::tool(&BIN, "TOLLGATE_JAEGER", "build-jaeger.sh")
}

pub struct Jaeger {
    pub process: Process,
    pub otlp_port: u16,
    pub query_port: u16,
}

impl Jaeger {
    pub fn start(cp: &ControlPlane) -> Result<Jaeger> {
        let [otlp, query, query_grpc, health] = free_ports::<4>()?;
        let config = cp.dir().join(format!("jaeger-{otlp}.yaml"));
        std::fs::write(&config, config_yaml(otlp, query, query_grpc, health)).context("writing Jaeger's configuration")?;
        let mut cmd = Command::new(binary()?);
        cmd.arg("--config").arg(&config);
        let process = Process::spawn(cmd, cp.dir().join(format!("jaeger-{otlp}.log")))?;
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            if let Some(s) = process.exited() {
                bail!("Jaeger exited ({s}):\n{}", process.log_tail());
            }
            let up = crate::raw_mcp::request("GET", &format!("http://127.0.0.1:{health}/status"), &[], None).is_ok_and(|a| a.status == 200);
            Ok(up.then_some(()))
        })
        .context("Jaeger did not become healthy")?;
        Ok(Jaeger { process, otlp_port: otlp, query_port: query })
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// The environment of a process that exports here, its batches sent within 100 ms.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())]
    }

    /// Trace `id` as stored (Jaeger's JSON: spans with references, tags and logs; processes).
    pub fn trace(&self, id: &str) -> Result<Option<Value>> {
        let answer = crate::raw_mcp::request("GET", &format!("http://127.0.0.1:{}/api/traces/{id}", self.query_port), &[], None)?;
        if answer.status == 404 {
            return Ok(None);
        }
        let body = answer.messages.into_iter().next().with_context(|| format!("trace {id}: no JSON answer ({})", answer.status))?;
        Ok(body["data"].as_array().and_then(|d| d.first()).cloned())
    }

    /// Waits up to 20 s for trace `id` to hold what `complete` wants.
    pub fn wait_trace(&self, id: &str, complete: impl Fn(&Trace) -> bool) -> Result<Trace> {
        let mut last = None;
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            let t = self.trace(id)?.map(Trace);
            let done = t.as_ref().is_some_and(&complete);
            if done {
                return Ok(t);
            }
            last = t;
            Ok(None)
        })
        .with_context(|| format!("trace {id} as last seen: {}", last.map(|t| t.0.to_string()).unwrap_or_else(|| "none".into())))
    }
}

fn config_yaml(otlp: u16, query: u16, query_grpc: u16, health: u16) -> String {
    format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces: {{receivers: [otlp], processors: [], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
extensions:
  jaeger_query:
    storage: {{traces: memstore}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{query_grpc}"}}
  jaeger_storage:
    backends: {{memstore: {{memory: {{max_traces: 10000}}}}}}
  healthcheckv2:
    use_v2: true
    http: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{otlp}"}}
exporters:
  jaeger_storage_exporter: {{trace_storage: memstore}}
"#
    )
}

/// One stored trace, as Jaeger answers it.
#[derive(Debug, Clone)]
pub struct Trace(pub Value);

impl Trace {
    pub fn spans(&self) -> Vec<&Value> {
        self.0["spans"].as_array().map(|s| s.iter().collect()).unwrap_or_default()
    }

    /// The spans named `name` (their OpenTelemetry name).
    pub fn named(&self, name: &str) -> Vec<&Value> {
        self.spans().into_iter().filter(|s| s["operationName"] == name).collect()
    }

    /// The service that exported `span`.
    pub fn service(&self, span: &Value) -> String {
        let pid = span["processID"].as_str().unwrap_or_default();
        self.0["processes"][pid]["serviceName"].as_str().unwrap_or_default().to_owned()
    }

    /// The span's parent's id (its CHILD_OF reference), if any.
    pub fn parent(span: &Value) -> Option<String> {
        span["references"].as_array()?.iter().find(|r| r["refType"] == "CHILD_OF").and_then(|r| r["spanID"].as_str()).map(str::to_owned)
    }

    /// A tag's value, as text (numbers and booleans too).
    pub fn tag(span: &Value, key: &str) -> Option<String> {
        let v = span["tags"].as_array()?.iter().find(|t| t["key"] == key)?.get("value")?.clone();
        Some(match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// The span's events (Jaeger's logs), each as its fields by key.
    pub fn events(span: &Value) -> Vec<serde_json::Map<String, Value>> {
        let logs = span["logs"].as_array().cloned().unwrap_or_default();
        logs.iter()
            .map(|l| {
                l["fields"].as_array().map(|f| f.iter().filter_map(|f| Some((f["key"].as_str()?.to_owned(), f["value"].clone()))).collect()).unwrap_or_default()
            })
            .collect()
    }
}
