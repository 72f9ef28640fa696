//! The sidecar's own tools, listed beside every server's: `get_approval_status` and
//! `request_approval`.

use rmcp::model::Tool;
use serde_json::{Map, Value, json};

pub const GET_STATUS: &str = "get_approval_status";
pub const REQUEST_APPROVAL: &str = "request_approval";
/// Server name policies use for the built-in tools.
pub const BUILTIN_SERVER: &str = "tollgate";

/// The built-in tools, listed beside the server's own.
pub fn add_builtin_tools(result: &mut Value) {
    let Some(Value::Array(tools)) = result.get_mut("tools") else { return };
    tools.retain(|t| !matches!(t.get("name").and_then(Value::as_str), Some(GET_STATUS | REQUEST_APPROVAL)));
    tools.extend(builtin_tools().iter().filter_map(|t| serde_json::to_value(t).ok()));
}

fn builtin_tools() -> [Tool; 2] {
    let schema = |properties: Value, required: &[&str]| match json!({"type": "object", "properties": properties, "required": required}) {
        Value::Object(schema) => schema,
        _ => Map::new(),
    };
    [
        Tool::new(
            GET_STATUS,
            "Status of a tool call held for human approval. Once approved, runs the held call (exactly once) and returns its result.",
            schema(json!({"request_id": {"type": "string"}}), &["request_id"]),
        ),
        Tool::new(
            REQUEST_APPROVAL,
            "Ask a human to approve an operation before you do it.",
            schema(json!({"operation": {"type": "string"}, "context": {"type": "string"}, "reasoning": {"type": "string"}}), &["operation", "reasoning"]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_tools_are_listed_once_and_a_servers_look_alikes_are_replaced() {
        let mut result = json!({"tools": [{"name": "read"}, {"name": GET_STATUS, "description": "a server's own, pretending"}]});
        add_builtin_tools(&mut result);
        add_builtin_tools(&mut result);
        let names: Vec<&str> = result["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["read", GET_STATUS, REQUEST_APPROVAL]);
        let schemas: Vec<&Value> = result["tools"].as_array().into_iter().flatten().skip(1).map(|t| &t["inputSchema"]).collect();
        assert_eq!(schemas[0]["required"], json!(["request_id"]));
        assert_eq!(schemas[1]["properties"]["reasoning"]["type"], "string");
        assert!(!result.to_string().contains("pretending"));
        let mut not_a_list = json!({"resources": []});
        add_builtin_tools(&mut not_a_list);
        assert_eq!(not_a_list, json!({"resources": []}));
    }
}
