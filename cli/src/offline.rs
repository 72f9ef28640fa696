//! `tollgate validate` and `tollgate eval`: policies checked and decided from YAML files, with
//! the same core the sidecar uses, and no cluster.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tollgate_api::{ApprovalWorkflowSpec, ClusterToolPolicySpec, ManagedAgentSpec, ToolPolicySpec};
use tollgate_core::policy::{self, Action, AgentInfo, Args, CompiledPolicy, Decision};

/// One YAML document, as far as the offline tools care.
#[derive(Deserialize)]
struct Doc {
    kind: String,
    metadata: Meta,
    #[serde(default)]
    spec: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// What a set of files declares.
#[derive(Default)]
pub struct Bundle {
    pub policies: Vec<CompiledPolicy>,
    pub agents: Vec<(String, AgentInfo)>,
    pub workflows: Vec<(String, String)>,
    /// `kind/name: ok (n rules)` or `kind/name: error`, one per policy-like document.
    pub report: Vec<(String, Result<String, String>)>,
}

impl Bundle {
    pub fn has_errors(&self) -> bool {
        self.report.iter().any(|(_, r)| r.is_err())
    }
}

/// Reads every document of every file. Objects without a namespace are placed in `default_ns`,
/// as `kubectl apply -n` would.
pub fn load(files: &[impl AsRef<Path>], default_ns: &str) -> Result<Bundle> {
    let mut bundle = Bundle::default();
    for path in expand(files)? {
        let path = path.as_path();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(de).with_context(|| format!("{}: document {}", path.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            let doc: Doc = serde_yaml::from_value(value).with_context(|| format!("{}: document {}", path.display(), i + 1))?;
            let ns = doc.metadata.namespace.clone().unwrap_or_else(|| default_ns.to_owned());
            let id = format!("{}/{}", doc.kind, doc.metadata.name);
            match doc.kind.as_str() {
                "ToolPolicy" => {
                    let r = serde_yaml::from_value::<ToolPolicySpec>(doc.spec)
                        .map_err(|e| format!("spec: {e}"))
                        .and_then(|spec| policy::compile_tool_policy(&ns, &doc.metadata.name, &spec).map_err(|e| e.to_string()));
                    push_policy(&mut bundle, id, r);
                }
                "ClusterToolPolicy" => {
                    let r = serde_yaml::from_value::<ClusterToolPolicySpec>(doc.spec)
                        .map_err(|e| format!("spec: {e}"))
                        .and_then(|spec| policy::compile_cluster_tool_policy(&doc.metadata.name, &spec).map_err(|e| e.to_string()));
                    push_policy(&mut bundle, id, r);
                }
                "ManagedAgent" => {
                    let spec: ManagedAgentSpec = serde_yaml::from_value(doc.spec).with_context(|| id.clone())?;
                    bundle.agents.push((doc.metadata.name.clone(), agent_info(&doc.metadata.name, &ns, doc.metadata.labels, &spec)));
                }
                "ApprovalWorkflow" => {
                    let _: ApprovalWorkflowSpec = serde_yaml::from_value(doc.spec).with_context(|| id.clone())?;
                    bundle.workflows.push((ns, doc.metadata.name));
                }
                _ => {}
            }
        }
    }
    Ok(bundle)
}

/// Files as given, and the `.yaml`/`.yml` files of directories, as `kubectl apply -f` reads them.
fn expand(files: &[impl AsRef<Path>]) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        let path = f.as_ref();
        if path.is_dir() {
            let mut inner: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            inner.sort();
            out.extend(inner);
        } else {
            out.push(path.to_path_buf());
        }
    }
    Ok(out)
}

fn push_policy(bundle: &mut Bundle, id: String, r: Result<CompiledPolicy, String>) {
    match r {
        Ok(p) => {
            bundle.report.push((id, Ok(format!("{} rules", p.rule_count()))));
            bundle.policies.push(p);
        }
        Err(e) => bundle.report.push((id, Err(e))),
    }
}

pub fn agent_info(name: &str, namespace: &str, labels: BTreeMap<String, String>, spec: &ManagedAgentSpec) -> AgentInfo {
    AgentInfo::from_spec(name, namespace, labels, spec, BTreeMap::new())
}

/// One call to decide.
pub struct Call<'a> {
    pub agent: &'a str,
    pub server: &'a str,
    pub tool: &'a str,
    pub arguments: &'a str,
    pub cluster_default: Action,
}

pub fn eval(bundle: &Bundle, call: &Call<'_>) -> Result<Decision> {
    let Some((_, agent)) = bundle.agents.iter().find(|(n, _)| n == call.agent) else {
        bail!("no ManagedAgent named {:?} in the files given", call.agent);
    };
    // Read as the sidecar reads a call's arguments: a key given twice is refused there too.
    let raw = tollgate_core::json_tree::parse(call.arguments).context("--args is not valid JSON")?;
    let refs: Vec<&CompiledPolicy> = bundle.policies.iter().collect();
    let applicable: Vec<&CompiledPolicy> = refs.iter().copied().filter(|p| p.applies_to(agent)).collect();
    let split = policy::split_justification(raw, policy::justification_mode(&applicable, call.server, call.tool));
    let workflows = |name: &str| bundle.workflows.iter().any(|(ns, n)| *ns == agent.namespace && n == name);
    let args = Args::tree(&split.arguments);
    let decided =
        policy::Call { agent, server: call.server, tool: call.tool, args: &args, justification: split.justification.as_deref(), now: jiff::Timestamp::now() };
    Ok(policy::decide(&refs, &decided, &workflows, call.cluster_default))
}

/// The decision as people read it.
pub fn describe(d: &Decision) -> String {
    let mut out = match d.action {
        Action::Allow => "Allow".to_owned(),
        Action::Deny => format!("Deny: Access denied: {}", d.deny_message()),
        Action::RequireApproval => format!(
            "RequireApproval by workflow {}{}",
            d.workflow.as_deref().unwrap_or("?"),
            d.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ),
    };
    out.push_str(&format!("\n  decided by: {}", d.decided_by));
    if let Some(e) = &d.error {
        out.push_str(&format!("\n  condition error (failed closed): {e}"));
    }
    if let Some(s) = &d.shadow {
        out.push_str(&format!(
            "\n  audited rules would have decided {:?}, by {}{}",
            s.action,
            s.decided_by,
            s.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    out
}
