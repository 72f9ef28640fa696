//! The tasks extension of MCP 2026-07-28 (`io.modelcontextprotocol/tasks`), as far as the
//! firewall speaks it: a held call made by a client that declared the extension is answered as a
//! task the sidecar owns, polled with `tasks/get` and ended with `tasks/cancel`; every other task
//! is the server's and passes through.

use rmcp::model::{CreateTaskResult, DetailedTask, GetTaskResult, Task, TaskPayload, TaskStatus};
use serde_json::Value;

pub const EXTENSION: &str = rmcp::model::TASKS_EXTENSION_ID;
const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
/// Held tasks' ids start with this, so they never shadow a server's own task id by accident.
pub const ID_PREFIX: &str = "tollgate-held-";

/// Whether a request's params declare the tasks extension among the client's capabilities
/// (per request, in `_meta`, as stateless clients do).
pub fn declared(params: &Value) -> bool {
    params.pointer("/_meta").and_then(|m| m.get(CLIENT_CAPABILITIES_META)).and_then(|c| c.get("extensions")).and_then(|e| e.get(EXTENSION)).is_some()
}

/// `params` without the tasks extension among its declared capabilities: a held call runs
/// upstream as a plain call, since the task the client polls is the sidecar's.
pub fn undeclare(params: &mut Value) {
    if let Some(Value::Object(ext)) = params.pointer_mut(&format!("/_meta/{}/extensions", CLIENT_CAPABILITIES_META.replace('/', "~1"))) {
        ext.remove(EXTENSION);
    }
}

/// The task id a `tasks/*` request names.
pub fn requested_id(params: &Value) -> Option<&str> {
    params.get("taskId").and_then(Value::as_str)
}

/// The task id of the call held under approval request `request`.
pub fn held_id(request: &str) -> String {
    format!("{ID_PREFIX}{request}")
}

/// The approval request behind a held task id; `None` for ids that are not the sidecar's.
pub fn request_of(task_id: &str) -> Option<&str> {
    task_id.strip_prefix(ID_PREFIX).filter(|r| !r.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Working,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What a held task looks like at one moment.
#[derive(Debug, Clone)]
pub struct View {
    pub id: String,
    pub status: Status,
    pub message: String,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    /// How long the task is kept: until the hold's deadline, then some for late polls.
    pub ttl_ms: u64,
    pub poll_interval_ms: u64,
    /// The call's `CallToolResult` once completed.
    pub result: Option<Value>,
}

impl View {
    fn task(&self) -> Task {
        let status = match self.status {
            Status::Working => TaskStatus::Working,
            Status::Completed => TaskStatus::Completed,
            Status::Cancelled => TaskStatus::Cancelled,
        };
        Task::new(&self.id, status, self.created_at.to_string(), self.updated_at.to_string())
            .with_status_message(&self.message)
            .with_ttl_ms(self.ttl_ms)
            .with_poll_interval_ms(self.poll_interval_ms)
    }

    /// The answer to the `tools/call` that created it.
    pub fn created(&self) -> CreateTaskResult {
        CreateTaskResult::new(self.task())
    }

    /// The answer to `tasks/get` (and `tasks/cancel`): the task, and its result once completed.
    /// A completed task without an object for a result (never the case for a tool call's answer)
    /// is shown working rather than breaking the extension's shape.
    pub fn current(&self) -> GetTaskResult {
        let payload = match (self.status, &self.result) {
            (Status::Completed, Some(Value::Object(result))) => TaskPayload::Completed { result: result.clone() },
            (Status::Cancelled, _) => TaskPayload::Cancelled,
            _ => TaskPayload::Working,
        };
        GetTaskResult::new(DetailedTask::new(self.task(), payload))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_extension_is_declared_per_request() {
        let with = json!({"name": "x", "_meta": {CLIENT_CAPABILITIES_META: {"extensions": {EXTENSION: {}}}}});
        let others = json!({"name": "x", "_meta": {CLIENT_CAPABILITIES_META: {"extensions": {"io.example/other": {}}}}});
        let cases = [(&with, true), (&others, false), (&json!({"name": "x"}), false), (&json!({"_meta": {EXTENSION: {}}}), false), (&Value::Null, false)];
        for (params, want) in cases {
            assert_eq!(declared(params), want, "{params}");
        }
        let mut stripped = with.clone();
        undeclare(&mut stripped);
        assert!(!declared(&stripped));
        assert_eq!(stripped["_meta"][CLIENT_CAPABILITIES_META]["extensions"], json!({}));
        let mut plain = json!({"name": "x"});
        undeclare(&mut plain);
        assert_eq!(plain, json!({"name": "x"}));
    }

    #[test]
    fn held_ids_round_trip_and_others_are_not_ours() {
        assert_eq!(request_of(&held_id("agent-1a2b")), Some("agent-1a2b"));
        for other in ["786512e2-9e0d", "tollgate-held-", "TOLLGATE-HELD-x", ""] {
            assert_eq!(request_of(other), None, "{other}");
        }
        assert_eq!(requested_id(&json!({"taskId": "t1"})), Some("t1"));
        assert_eq!(requested_id(&json!({"taskId": 1})), None);
    }

    #[test]
    fn views_speak_the_extensions_shapes() {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default();
        let mut view = View {
            id: held_id("r"),
            status: Status::Working,
            message: "waiting".into(),
            created_at: at,
            updated_at: at,
            ttl_ms: 60_000,
            poll_interval_ms: 5_000,
            result: Some(json!({"content": []})),
        };
        let created = serde_json::to_value(view.created()).unwrap();
        assert_eq!(created["resultType"], "task");
        assert_eq!(created["status"], "working");
        assert_eq!(created["taskId"], "tollgate-held-r");
        assert_eq!(created["createdAt"], "2027-01-15T08:00:00Z");
        let current = |view: &View| serde_json::to_value(view.current()).unwrap();
        assert!(current(&view).get("result").is_none(), "no result before it completes");
        assert_eq!((created["ttlMs"].as_u64(), created["pollIntervalMs"].as_u64()), (Some(60_000), Some(5_000)));
        view.status = Status::Completed;
        let current = current(&view);
        assert_eq!((current["resultType"].as_str(), current["status"].as_str()), (Some("complete"), Some("completed")));
        assert_eq!(current["result"], json!({"content": []}));
        view.status = Status::Cancelled;
        let cancelled = serde_json::to_value(view.current()).unwrap();
        assert_eq!((cancelled["status"].as_str(), cancelled.get("result")), (Some("cancelled"), None));
    }
}
