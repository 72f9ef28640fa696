//! Shared fixtures for the core tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use tollgate_core::glob::Glob;
use tollgate_core::policy::{self, Action, AgentInfo, Args, CompiledPolicy, Decision};

pub fn tool_policy(ns: &str, name: &str, yaml: &str) -> CompiledPolicy {
    let spec: tollgate_api::ToolPolicySpec = serde_yaml::from_str(yaml).unwrap();
    policy::compile_tool_policy(ns, name, &spec).unwrap()
}

pub fn cluster_policy(name: &str, yaml: &str) -> CompiledPolicy {
    let spec: tollgate_api::ClusterToolPolicySpec = serde_yaml::from_str(yaml).unwrap();
    policy::compile_cluster_tool_policy(name, &spec).unwrap()
}

pub fn agent() -> AgentInfo {
    AgentInfo {
        name: "coder".into(),
        namespace: "team-a".into(),
        labels: BTreeMap::from([("team".into(), "a".into()), ("tier".into(), "prod".into())]),
        service_account: "coder".into(),
        namespace_labels: BTreeMap::from([("env".into(), "prod".into())]),
        mcp_servers: vec![Glob::new("*")],
        default_action: None,
        suspended: false,
    }
}

pub fn now() -> jiff::Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

/// Workflows that exist: `ops` and `prod-deploy`.
pub fn workflows(name: &str) -> bool {
    matches!(name, "ops" | "prod-deploy")
}

pub fn decide_with(policies: &[&CompiledPolicy], agent: &AgentInfo, server: &str, tool: &str, args: &str, justification: Option<&str>) -> Decision {
    let args = Args::raw(args.as_bytes());
    policy::decide(policies, &policy::Call { agent, server, tool, args: &args, justification, now: now() }, &workflows, Action::Allow)
}

pub fn decide(policies: &[&CompiledPolicy], tool: &str, args: &str) -> Decision {
    decide_with(policies, &agent(), "github", tool, args, None)
}
