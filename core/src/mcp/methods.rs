//! Which MCP methods the sidecar answers itself, and how (DESIGN §3.2). On a server's own
//! endpoint (`/mcp/<server>`) everything passes through except what the firewall decides; on the
//! aggregated endpoint (`/mcp`) only the methods named here exist, since each must be routed
//! to a server by its prefixed name or answered from all of them.

/// Whether the firewall decides a message on a server's own endpoint rather than passing it
/// through: every `tools/call` (one without an id is refused, never forwarded unseen), a
/// `tools/list` request (filtered), and the tasks of calls it holds.
pub fn decided_by_firewall(method: Option<&str>, is_request: bool, held_task: bool) -> bool {
    method == Some("tools/call") || (is_request && method == Some("tools/list")) || held_task
}

/// What the aggregated endpoint does with a request (a message with an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    Ping,
    /// A list merged from every server the agent may use, under the result key given.
    List(&'static str),
    ToolsCall,
    /// `tasks/*`: only the tasks of calls held for approval live here.
    HeldTask,
    /// Sent to the server its prefixed name or URI names.
    Routed,
    /// Sent to every server that offers logging.
    Broadcast,
    /// Not an MCP method the aggregate serves: `-32601`.
    NotFound,
}

pub fn aggregated(method: &str) -> Aggregated {
    match method {
        "ping" => Aggregated::Ping,
        "tools/list" => Aggregated::List("tools"),
        "prompts/list" => Aggregated::List("prompts"),
        "resources/list" => Aggregated::List("resources"),
        "resources/templates/list" => Aggregated::List("resourceTemplates"),
        "tools/call" => Aggregated::ToolsCall,
        "tasks/get" | "tasks/update" | "tasks/cancel" => Aggregated::HeldTask,
        "prompts/get" | "resources/read" | "resources/subscribe" | "resources/unsubscribe" | "completion/complete" => Aggregated::Routed,
        "logging/setLevel" => Aggregated::Broadcast,
        _ => Aggregated::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firewall_decides_every_call_and_list_and_its_own_tasks() {
        assert!(decided_by_firewall(Some("tools/call"), false, false), "an id-less call is decided (refused), not forwarded");
        assert!(decided_by_firewall(Some("tools/list"), true, false));
        assert!(!decided_by_firewall(Some("tools/list"), false, false), "a notification named tools/list is nobody's list");
        assert!(decided_by_firewall(Some("tasks/get"), true, true));
        assert!(!decided_by_firewall(Some("tasks/get"), true, false), "a server's own task passes");
        assert!(!decided_by_firewall(Some("resources/read"), true, false));
        assert!(!decided_by_firewall(None, false, false), "a response from the client passes");
    }

    #[test]
    fn the_aggregate_serves_only_the_methods_it_can_route() {
        assert_eq!(aggregated("resources/templates/list"), Aggregated::List("resourceTemplates"));
        assert_eq!(aggregated("completion/complete"), Aggregated::Routed);
        assert_eq!(aggregated("tasks/cancel"), Aggregated::HeldTask);
        for unknown in ["sampling/createMessage", "tools/call2", "", "TOOLS/CALL"] {
            assert_eq!(aggregated(unknown), Aggregated::NotFound, "{unknown}");
        }
    }
}
