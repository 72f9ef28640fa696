//! What changed between two discoveries of an MCP server's tools: the Events the operator emits
//! (a tool's input schema changed under the same name is what a person must hear about: calls
//! that were allowed may now mean something else).

use tollgate_api::DiscoveredTool;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ToolChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `(tool, old digest, new digest)`.
    pub schema_changed: Vec<(String, String, String)>,
}

impl ToolChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.schema_changed.is_empty()
    }

    /// One line for a `ToolsChanged` Event, or None when only schemas changed (or nothing).
    pub fn membership_note(&self) -> Option<String> {
        let part = |label: &str, names: &[String]| (!names.is_empty()).then(|| format!("{label}: {}", names.join(", ")));
        let parts: Vec<String> = [part("added", &self.added), part("removed", &self.removed)].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Compares the tools of the last discovery with this one's (both by name).
pub fn tool_changes(before: &[DiscoveredTool], after: &[DiscoveredTool]) -> ToolChanges {
    let mut c = ToolChanges::default();
    for t in after {
        match before.iter().find(|b| b.name == t.name) {
            None => c.added.push(t.name.clone()),
            Some(b) if b.schema_digest != t.schema_digest => {
                c.schema_changed.push((t.name.clone(), b.schema_digest.clone().unwrap_or_default(), t.schema_digest.clone().unwrap_or_default()))
            }
            Some(_) => {}
        }
    }
    c.removed = before.iter().filter(|b| !after.iter().any(|t| t.name == b.name)).map(|b| b.name.clone()).collect();
    for list in [&mut c.added, &mut c.removed] {
        list.sort();
    }
    c.schema_changed.sort();
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tool(name: &str, digest: &str) -> DiscoveredTool {
        DiscoveredTool { name: name.into(), description: None, schema_digest: Some(digest.into()) }
    }

    #[test]
    fn changes_are_told_apart() {
        let before = [tool("echo", "sha256:a"), tool("delete", "sha256:b"), tool("read", "sha256:c")];
        let after = [tool("echo", "sha256:a"), tool("read", "sha256:c2"), tool("write", "sha256:d")];
        let c = tool_changes(&before, &after);
        assert_eq!(c.added, ["write"]);
        assert_eq!(c.removed, ["delete"]);
        assert_eq!(c.schema_changed, [("read".to_owned(), "sha256:c".to_owned(), "sha256:c2".to_owned())]);
        assert_eq!(c.membership_note().unwrap(), "added: write; removed: delete");
    }

    #[test]
    fn the_same_tools_are_no_change() {
        let tools = [tool("echo", "sha256:a")];
        let c = tool_changes(&tools, &tools);
        assert!(c.is_empty());
        assert_eq!(c.membership_note(), None);
        // A digest change alone makes no membership note.
        assert_eq!(tool_changes(&tools, &[tool("echo", "sha256:z")]).membership_note(), None);
    }
}
