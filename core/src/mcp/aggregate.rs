//! Names on the aggregated `/mcp` endpoint, where several servers appear as one: tools and prompts
//! are `<server>__<name>`, resource URIs `<server>+<uri>`, and a request a server sends the client
//! carries an id that says which server it came from, so the client's answer finds its way back
//! without state. Server names are DNS labels (no `_`, no `+`), so the first separator splits.

use rmcp::model::ServerCapabilities;
use serde::Deserialize;
use serde_json::Value;

pub const SEPARATOR: &str = "__";
const URI_SEPARATOR: char = '+';
const REQUEST_ID_PREFIX: &str = "tollgate:";

pub fn prefixed(server: &str, name: &str) -> String {
    format!("{server}{SEPARATOR}{name}")
}

/// `(server, name)` of an aggregated tool or prompt name.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR).filter(|(s, n)| !s.is_empty() && !n.is_empty())
}

pub fn prefixed_uri(server: &str, uri: &str) -> String {
    format!("{server}{URI_SEPARATOR}{uri}")
}

/// `(server, uri)` of an aggregated resource URI.
pub fn split_uri(uri: &str) -> Option<(&str, &str)> {
    uri.split_once(URI_SEPARATOR).filter(|(s, u)| !s.is_empty() && !u.is_empty() && !s.contains(':') && !s.contains('/'))
}

/// The id under which a request from `server` is shown to the client.
pub fn outbound_request_id(server: &str, id: &Value) -> Value {
    Value::String(format!("{REQUEST_ID_PREFIX}{server}:{id}"))
}

/// `(server, original id)` of the client's answer to a request relayed from a server.
pub fn inbound_response_id(id: &Value) -> Option<(&str, Value)> {
    let (server, original) = id.as_str()?.strip_prefix(REQUEST_ID_PREFIX)?.split_once(':')?;
    let original: Value = serde_json::from_str(original).ok()?;
    (!server.is_empty() && (original.is_string() || original.is_number())).then_some((server, original))
}

/// Rewrites one message a server sent towards the client: a request gets an outbound id, URIs
/// get their server prefix. Returns whether anything changed.
pub fn rewrite_to_client(server: &str, message: &mut Value) -> bool {
    let Some(obj) = message.as_object_mut() else { return false };
    let mut changed = false;
    if obj.contains_key("method")
        && let Some(id) = obj.get_mut("id")
    {
        *id = outbound_request_id(server, id);
        changed = true;
    }
    if obj.get("method").and_then(Value::as_str) == Some("notifications/resources/updated")
        && let Some(uri) = obj.get_mut("params").and_then(|p| p.get_mut("uri"))
    {
        changed |= prefix_uri_in_place(server, uri);
    }
    if let Some(result) = obj.get_mut("result") {
        changed |= prefix_uris(server, result);
    }
    changed
}

/// Prefixes the URIs a result carries: `resources[].uri`, `resourceTemplates[].uriTemplate`,
/// `contents[].uri` (a read), and embedded or linked resources in tool and prompt content.
pub fn prefix_uris(server: &str, result: &mut Value) -> bool {
    let mut changed = false;
    let Some(obj) = result.as_object_mut() else { return false };
    for (list, field) in [("resources", "uri"), ("resourceTemplates", "uriTemplate"), ("contents", "uri")] {
        if let Some(Value::Array(items)) = obj.get_mut(list) {
            for item in items {
                if let Some(v) = item.get_mut(field) {
                    changed |= prefix_uri_in_place(server, v);
                }
            }
        }
    }
    let content = obj.iter_mut().filter(|(k, _)| *k == "content" || *k == "messages").map(|(_, v)| v);
    for items in content {
        let Value::Array(items) = items else { continue };
        for item in items.iter_mut() {
            // A prompt message wraps its content one level down.
            let item = if item.get("role").is_some() { item.get_mut("content") } else { Some(item) };
            let Some(item) = item else { continue };
            if let Some(v) = item.get_mut("uri") {
                changed |= prefix_uri_in_place(server, v);
            }
            if let Some(v) = item.get_mut("resource").and_then(|r| r.get_mut("uri")) {
                changed |= prefix_uri_in_place(server, v);
            }
        }
    }
    changed
}

fn prefix_uri_in_place(server: &str, v: &mut Value) -> bool {
    match v.as_str() {
        Some(uri) => {
            *v = Value::String(prefixed_uri(server, uri));
            true
        }
        None => false,
    }
}

/// The capabilities of the aggregated server: what any upstream offers, tools always (the
/// built-in approval tools are there even without servers). A server whose capabilities do not
/// parse offers nothing here; flags no capability type knows are left out.
pub fn merge_capabilities<'a>(upstream: impl IntoIterator<Item = &'a Value>) -> ServerCapabilities {
    let mut merged = ServerCapabilities::default();
    merged.tools.get_or_insert_default().list_changed = Some(true);
    for caps in upstream {
        let Ok(offered) = ServerCapabilities::deserialize(caps) else { continue };
        if let Some(p) = offered.prompts {
            let m = merged.prompts.get_or_insert_default();
            m.list_changed = either(m.list_changed, p.list_changed);
        }
        if let Some(r) = offered.resources {
            let m = merged.resources.get_or_insert_default();
            m.subscribe = either(m.subscribe, r.subscribe);
            m.list_changed = either(m.list_changed, r.list_changed);
        }
        if offered.logging.is_some() {
            merged.logging.get_or_insert_default();
        }
        if offered.completions.is_some() {
            merged.completions.get_or_insert_default();
        }
    }
    merged
}

/// A flag is on when any server turns it on, and otherwise left out.
fn either(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    (a == Some(true) || b == Some(true)).then_some(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        assert_eq!(prefixed("github", "create_issue"), "github__create_issue");
        assert_eq!(split_name("github__create_issue"), Some(("github", "create_issue")));
        // A tool name may itself contain the separator; the server name never does.
        assert_eq!(split_name("gh__a__b"), Some(("gh", "a__b")));
        assert_eq!(split_name("plain"), None);
        assert_eq!(split_name("__x"), None);
        assert_eq!(split_name("x__"), None);
    }

    #[test]
    fn uris_round_trip() {
        assert_eq!(prefixed_uri("docs", "file:///a+b.txt"), "docs+file:///a+b.txt");
        assert_eq!(split_uri("docs+file:///a+b.txt"), Some(("docs", "file:///a+b.txt")));
        assert_eq!(split_uri("file:///a+b.txt"), None, "a plain URI is not routed by a '+' in its path");
        assert_eq!(split_uri("noplus"), None);
    }

    #[test]
    fn request_ids_round_trip() {
        for id in [json!(7), json!("abc:def"), json!(-1), json!("")] {
            let out = outbound_request_id("srv", &id);
            assert_eq!(inbound_response_id(&out), Some(("srv", id.clone())));
        }
        assert_eq!(inbound_response_id(&json!(5)), None);
        assert_eq!(inbound_response_id(&json!("tollgate:srv:{}")), None);
        assert_eq!(inbound_response_id(&json!("other:srv:1")), None);
    }

    #[test]
    fn messages_to_the_client_are_rewritten() {
        let mut req = json!({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {}});
        assert!(rewrite_to_client("a", &mut req));
        assert_eq!(req["id"], json!("tollgate:a:3"));

        let mut note = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "test://1"}});
        assert!(rewrite_to_client("a", &mut note));
        assert_eq!(note["params"]["uri"], "a+test://1");

        let mut progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
        assert!(!rewrite_to_client("a", &mut progress));

        let mut read = json!({"jsonrpc": "2.0", "id": 1, "result": {"contents": [{"uri": "test://1", "text": "x"}]}});
        assert!(rewrite_to_client("a", &mut read));
        assert_eq!(read["result"]["contents"][0]["uri"], "a+test://1");
        assert_eq!(read["id"], 1, "a response keeps the client's own id");

        let mut prompt = json!({"result": {"messages": [{"role": "user", "content": {"type": "resource", "resource": {"uri": "test://2", "text": "t"}}}]}});
        assert!(prefix_uris("a", prompt.get_mut("result").unwrap()));
        assert_eq!(prompt["result"]["messages"][0]["content"]["resource"]["uri"], "a+test://2");

        let mut tool = json!({"content": [{"type": "resource_link", "uri": "test://3", "name": "n"}, {"type": "text", "text": "t"}]});
        assert!(prefix_uris("a", &mut tool));
        assert_eq!(tool["content"][0]["uri"], "a+test://3");
    }

    #[test]
    fn capabilities_are_merged() {
        let a = json!({"tools": {}, "prompts": {"listChanged": true}, "logging": {}});
        let b = json!({"resources": {"subscribe": true, "listChanged": false}, "completions": {}});
        let merged = serde_json::to_value(merge_capabilities([&a, &b])).unwrap();
        assert_eq!(
            merged,
            json!({
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "logging": {},
                "resources": {"subscribe": true},
                "completions": {},
            })
        );
        assert_eq!(serde_json::to_value(merge_capabilities([])).unwrap(), json!({"tools": {"listChanged": true}}));
    }
}
