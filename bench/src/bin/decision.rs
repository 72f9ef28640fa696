//! The policy decision in process (DESIGN §5: ≤ 5 µs p50 for 10 rules): a 1 KiB `tools/call`
//! argument object against a policy whose first nine CEL rules do not match and whose tenth
//! allows, so every rule runs. The direct path is parsing the same arguments as JSON, which any
//! proxy that looks at a call pays anyway.

use anyhow::Result;

// The sidecar uses mimalloc too: the CEL interpreter allocates per step, and glibc malloc costs
// about a third of a decision.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::hint::black_box;
use tollgate_bench::{quantile_us, sample};
use tollgate_core::policy::{self, Action, AgentInfo, Args};

const POLICY: &str = r#"
tools:
  - name: "*"
    approvalWorkflow: ops
    rules:
      - {action: Deny, when: "args.path.startsWith('/etc/')"}
      - {action: Deny, when: "args.path.matches('^/(proc|sys)/')"}
      - {action: RequireApproval, when: "args.env == 'production'"}
      - {action: Deny, when: "args.command.contains('rm -rf')"}
      - {action: RequireApproval, when: "size(args.files) > 50"}
      - {action: Deny, when: "args.files.exists(f, f.endsWith('.pem'))"}
      - {action: Deny, when: "agent.labels.tier == 'untrusted'"}
      - {action: RequireApproval, when: "tool.server == 'prod-db' && tool.name.startsWith('write')"}
      - {action: Deny, when: "justification != null && justification.contains('ignore previous')"}
      - {action: Allow, when: "args.branch != 'main' || agent.namespace == 'team-a'"}
"#;

fn arguments() -> String {
    let files: Vec<String> = (0..20).map(|i| format!("src/module_{i:02}/lib.rs")).collect();
    let v = serde_json::json!({
        "path": "/work/repo/src/main.rs",
        "command": "cargo test --workspace --all-features",
        "env": "staging",
        "branch": "feature/tollgate-bench",
        "files": files,
        "message": "x".repeat(300),
    });
    let s = v.to_string();
    assert!((900..1200).contains(&s.len()), "arguments are {} bytes", s.len());
    s
}

fn main() -> Result<()> {
    let spec: tollgate_api::ToolPolicySpec = serde_yaml::from_str(POLICY)?;
    let compiled = policy::compile_tool_policy("team-a", "bench", &spec)?;
    let policies = [&compiled];
    let agent = AgentInfo {
        name: "coder".into(),
        namespace: "team-a".into(),
        labels: [("tier".to_string(), "trusted".to_string())].into(),
        service_account: "coder".into(),
        mcp_servers: vec![tollgate_core::glob::Glob::new("*")],
        ..Default::default()
    };
    let args = arguments();
    let workflows = |n: &str| n == "ops";
    let now = jiff::Timestamp::now();

    let decide = || {
        let args = Args::raw(args.as_bytes());
        let call = policy::Call { agent: &agent, server: "github", tool: "run", args: &args, justification: None, now };
        let d = policy::decide(&policies, &call, &workflows, Action::Deny);
        assert_eq!(d.action, Action::Allow);
        black_box(d);
    };
    let parse = || {
        let v: serde_json::Value = serde_json::from_str(black_box(&args)).unwrap_or_default();
        black_box(v);
    };

    // Warm up: caches, allocator, branch predictors.
    for _ in 0..5_000 {
        decide();
        parse();
    }
    let (mut decisions, mut parses) = (Vec::new(), Vec::new());
    for _round in 0..20 {
        decisions.extend(sample(2_000, decide));
        parses.extend(sample(2_000, parse));
    }
    let (d50, d99) = (quantile_us(&mut decisions, 0.5), quantile_us(&mut decisions, 0.99));
    let (p50, p99) = (quantile_us(&mut parses, 0.5), quantile_us(&mut parses, 0.99));
    println!("policy decision, 10 CEL rules, {} B arguments, {} samples each", args.len(), decisions.len());
    println!("  direct path (parse arguments):  p50 {p50:7.2} µs  p99 {p99:7.2} µs");
    println!("  decision (parse + 10 rules):     p50 {d50:7.2} µs  p99 {d99:7.2} µs");
    println!("  ratio decision/direct:           p50 {:7.2}x    p99 {:7.2}x", d50 / p50, d99 / p99);
    println!("  {}", tollgate_bench::target("decision p50", d50, 5.0, " µs"));
    tollgate_bench::finish()
}
