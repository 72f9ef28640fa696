//! What a policy is evaluated against: the agent as policies see it, and a call's arguments,
//! parsed only when a rule reads them.

use crate::glob::Glob;
use crate::json_tree::Tree;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use tollgate_api::Action;

/// The agent as policies see it: its `ManagedAgent` and its namespace.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The bare service account name.
    pub service_account: String,
    pub namespace_labels: BTreeMap<String, String>,
    /// Globs over `MCPServer` names the agent may use.
    pub mcp_servers: Vec<Glob>,
    pub default_action: Option<Action>,
    pub suspended: bool,
}

impl AgentInfo {
    /// The agent as policies see it, from its `ManagedAgent` and its namespace's labels.
    pub fn from_spec(
        name: &str,
        namespace: &str,
        labels: BTreeMap<String, String>,
        spec: &tollgate_api::ManagedAgentSpec,
        namespace_labels: BTreeMap<String, String>,
    ) -> Self {
        AgentInfo {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels,
            service_account: spec.service_account_name.clone(),
            namespace_labels,
            mcp_servers: spec.mcp_servers.iter().map(|g| Glob::new(g)).collect(),
            default_action: spec.default_action,
            suspended: spec.suspended,
        }
    }

    pub fn may_use_server(&self, server: &str) -> bool {
        self.mcp_servers.iter().any(|g| g.matches(server))
    }
}

/// Tool arguments, kept as raw bytes (or a `Value`) until a rule reads `args`.
#[derive(Debug)]
pub struct Args<'a> {
    raw: ArgsSource<'a>,
    parsed: OnceLock<Result<Tree<'a>, String>>,
}

#[derive(Debug, Clone, Copy)]
enum ArgsSource<'a> {
    Raw(&'a [u8]),
    Value(&'a serde_json::Value),
    Tree(&'a Tree<'a>),
}

impl<'a> Args<'a> {
    pub fn raw(bytes: &'a [u8]) -> Self {
        Args { raw: ArgsSource::Raw(bytes), parsed: OnceLock::new() }
    }

    pub fn value(value: &'a serde_json::Value) -> Self {
        Args { raw: ArgsSource::Value(value), parsed: OnceLock::new() }
    }

    /// Arguments read already, as the sidecar's one reading of a body keeps them.
    pub fn tree(tree: &'a Tree<'a>) -> Self {
        Args { raw: ArgsSource::Tree(tree), parsed: OnceLock::new() }
    }

    /// The arguments as JSON; read at most once. Invalid UTF-8, invalid JSON, a key twice in an
    /// object or nesting past serde_json's recursion limit are errors, which fail closed in any
    /// rule that reads `args`.
    pub fn parsed(&self) -> Result<&Tree<'a>, &str> {
        let parsed = match self.raw {
            ArgsSource::Tree(tree) => return Ok(tree),
            ArgsSource::Value(value) => self.parsed.get_or_init(|| Ok(Tree::borrowed(value))),
            ArgsSource::Raw(bytes) => self.parsed.get_or_init(|| read_raw(bytes)),
        };
        parsed.as_ref().map_err(String::as_str)
    }
}

fn read_raw(bytes: &[u8]) -> Result<Tree<'_>, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Tree::Object(Default::default()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("arguments are not valid JSON: invalid UTF-8 at byte {}", e.valid_up_to()))?;
    crate::json_tree::parse(text).map_err(|e| match e {
        crate::json_tree::ReadError::Syntax(e) => format!("arguments are not valid JSON: {e}"),
        // Parsers disagree on which of the two counts, so no rule reads either.
        duplicate @ crate::json_tree::ReadError::DuplicateKey(_) => format!("arguments are refused: {duplicate}"),
    })
}
