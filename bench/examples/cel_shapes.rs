#![allow(clippy::unwrap_used)] // an exploratory example, not shipped code
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::hint::black_box;
use tollgate_core::policy::{self, Action, AgentInfo, Args};
fn main() {
    let args = r#"{"path":"/work/repo/src/main.rs","env":"staging","files":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q","r","s","t"]}"#;
    for expr in [
        "true",
        "tool.name == 'zzz'",
        "args.env == 'production'",
        "args.path.startsWith('/etc/')",
        "args.path.matches('^/(proc|sys)/')",
        "size(args.files) > 50",
        "args.files.exists(f, f.endsWith('.pem'))",
    ] {
        let yaml = format!("tools: [{{name: '*', rules: [{{action: Deny, when: {:?}}}, {{action: Allow}}]}}]", format!("!({expr})"));
        let spec: tollgate_api::ToolPolicySpec = serde_yaml::from_str(&yaml).unwrap();
        let p = policy::compile_tool_policy("ns", "p", &spec).unwrap();
        let agent = AgentInfo { name: "a".into(), namespace: "ns".into(), mcp_servers: vec![tollgate_core::glob::Glob::new("*")], ..Default::default() };
        let parsed: serde_json::Value = serde_json::from_str(args).unwrap();
        let n = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let args = Args::value(&parsed);
            let call = policy::Call { agent: &agent, server: "s", tool: "t", args: &args, justification: None, now: jiff::Timestamp::UNIX_EPOCH };
            let d = policy::decide(&[&p], &call, &|_: &str| true, Action::Deny);
            black_box(d);
        }
        println!("{:50} {:6.2} µs", expr, t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
