//! The admission and settlement of a model call (`tollgate_core::model::call`), rule by rule, with
//! no database and no provider: what the gateway decides before it reserves or sends anything.
#![allow(clippy::unwrap_used)]

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tollgate_api::{BudgetSpec, ManagedAgentSpec, ModelProviderSpec};
use tollgate_core::model::call::{self, Admission, BudgetClaim, Caller, Context, Ending, ModelCallAgent, ModelCallRecord};
use tollgate_core::model::request::Operation;
use tollgate_core::model::spend::Usage;
use tollgate_core::model::{Api, Refusal};

fn providers() -> Vec<(String, ModelProviderSpec)> {
    let p = |v: Value| serde_json::from_value::<ModelProviderSpec>(v).unwrap();
    vec![
        (
            "openai".into(),
            p(json!({"type": "openai", "baseURL": "https://api.openai.com/v1/", "models": [
                {"name": "gpt-4o-mini", "aliases": ["fast"], "maxOutputTokens": 1000, "pricing": {"inputPerMillionUSD": 1.0, "outputPerMillionUSD": 2.0}},
                {"name": "free-model"}
            ]})),
        ),
        (
            "anthropic".into(),
            p(json!({"type": "anthropic", "baseURL": "https://api.anthropic.com", "models": [
                {"name": "claude-sonnet-4-5", "pricing": {"inputPerMillionUSD": 3.0, "outputPerMillionUSD": 15.0}}
            ]})),
        ),
    ]
}

fn budget(v: Value) -> BudgetSpec {
    serde_json::from_value(v).unwrap()
}

fn agent(v: Value) -> ManagedAgentSpec {
    let mut base = json!({"selector": {}, "serviceAccountName": "coder", "models": {"allowed": ["fast", "gpt-4o*", "free-model", "claude-*"]}});
    base.as_object_mut().unwrap().extend(v.as_object().cloned().unwrap_or_default());
    serde_json::from_value(base).unwrap()
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn now() -> jiff::Timestamp {
    "2026-12-02T10:30:00Z".parse().unwrap()
}

fn admit<'a>(
    spec: &ManagedAgentSpec,
    providers: &'a [(String, ModelProviderSpec)],
    budgets: &'a [(String, BudgetSpec)],
    op: Operation,
    b: Value,
) -> Result<Admission<'a>, Refusal> {
    let labels = BTreeMap::from([("team".to_owned(), "platform".to_owned())]);
    let caller = Caller { name: "coder", namespace: "team-a", labels: &labels, spec };
    let api = if op == Operation::Messages { Api::Anthropic } else { Api::OpenAi };
    let requested = b["model"].as_str().unwrap_or_default().to_owned();
    call::admit(&caller, api, op, &requested, body(b), &Context { providers, budgets, now: now() })
}

#[test]
fn a_suspended_agent_and_a_beta_off_the_list_are_refused_before_the_body_is_read() {
    let labels = BTreeMap::new();
    let suspended = agent(json!({"suspended": true}));
    let caller = Caller { name: "coder", namespace: "team-a", labels: &labels, spec: &suspended };
    assert!(matches!(call::admit_headers(&caller, [], &[]), Err(Refusal::Suspended { .. })));
    let fine = agent(json!({}));
    let caller = Caller { spec: &fine, ..caller };
    let allowed = vec!["prompt-caching-2024-07-31".to_owned()];
    assert_eq!(call::admit_headers(&caller, [("anthropic-beta", "prompt-caching-2024-07-31")], &allowed), Ok(()));
    let refused = call::admit_headers(&caller, [("anthropic-beta", "mcp-client-2025-04-04")], &allowed).unwrap_err();
    assert!(refused.to_string().contains("mcp-client-2025-04-04"), "{refused}");
}

#[test]
fn the_model_is_resolved_allowed_and_sent_under_the_providers_own_name_with_its_output_bounded() {
    let (spec, providers) = (agent(json!({})), providers());
    let a = admit(&spec, &providers, &[], Operation::ChatCompletions, json!({"model": "fast", "messages": [], "stream": true})).unwrap();
    assert_eq!((a.model.provider, a.model.model), ("openai", "gpt-4o-mini"));
    assert_eq!(a.url, "https://api.openai.com/v1/chat/completions");
    let sent: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini", "the alias is not what the provider knows");
    assert_eq!(sent["max_completion_tokens"], 1000, "the model's own limit is written in");
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert!(a.strip_usage, "the client did not ask for usage: it is taken out again");
    // 1 USD/M input for the body's bytes, 2 USD/M for the 1000 output tokens reserved.
    assert_eq!(a.estimate, a.body.len() as i64 + 2_000);
    assert!(a.claims.is_empty() && a.hosted.is_empty());

    let m = admit(&spec, &providers, &[], Operation::Messages, json!({"model": "claude-sonnet-4-5", "messages": [], "max_tokens": 50})).unwrap();
    assert_eq!(m.url, "https://api.anthropic.com/v1/messages");
    assert_eq!(serde_json::from_slice::<Value>(&m.body).unwrap()["max_tokens"], 50);
}

#[test]
fn a_model_nobody_serves_or_the_agent_may_not_use_is_refused() {
    let providers = providers();
    let spec = agent(json!({}));
    let unknown = admit(&spec, &providers, &[], Operation::ChatCompletions, json!({"model": "gpt-9"})).unwrap_err();
    assert_eq!(unknown, Refusal::UnknownModel("gpt-9".into()));
    // Served, but by the other API: as good as unknown there.
    assert!(matches!(admit(&spec, &providers, &[], Operation::ChatCompletions, json!({"model": "claude-sonnet-4-5"})), Err(Refusal::UnknownModel(_))));
    let narrow = agent(json!({"models": {"allowed": ["claude-*"]}}));
    let refused = admit(&narrow, &providers, &[], Operation::ChatCompletions, json!({"model": "fast"})).unwrap_err();
    assert_eq!(refused, Refusal::ModelNotAllowed { agent: "coder".into(), model: "fast".into() });
}

#[test]
fn hosted_tools_need_the_agents_leave_and_mcp_through_the_provider_never_passes() {
    let providers = providers();
    let spec = agent(json!({}));
    let search = json!({"model": "fast", "input": "hi", "tools": [{"type": "web_search"}]});
    assert!(admit(&spec, &providers, &[], Operation::Responses, search.clone()).unwrap_err().to_string().contains("web_search"));
    let may_search = agent(json!({"models": {"allowed": ["fast"], "hostedTools": ["web_search"]}}));
    assert_eq!(admit(&may_search, &providers, &[], Operation::Responses, search).unwrap().hosted, ["web_search"]);
    let mcp = json!({"model": "fast", "input": "hi", "tools": [{"type": "mcp", "server_url": "https://evil.example/mcp"}]});
    assert_eq!(admit(&may_search, &providers, &[], Operation::Responses, mcp).unwrap_err().status(), 403);
}

#[test]
fn budgets_claim_every_call_they_count_and_refuse_what_they_cannot_count() {
    let providers = providers();
    let spec = agent(json!({}));
    let budgets = vec![
        ("daily".to_owned(), budget(json!({"period": "Daily", "softLimitUSD": 4.0, "hardLimitUSD": 5.0, "models": ["fast"]}))),
        ("other-team".to_owned(), budget(json!({"period": "Monthly", "hardLimitUSD": 1.0, "agentSelector": {"matchLabels": {"team": "data"}}}))),
        ("free".to_owned(), budget(json!({"period": "Daily", "hardLimitUSD": 1.0, "models": ["free-model"]}))),
    ];
    let a = admit(&spec, &providers, &budgets, Operation::ChatCompletions, json!({"model": "gpt-4o-mini"})).unwrap();
    let day: i64 = "2026-12-02T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
    let want = BudgetClaim {
        budget: "team-a/daily".into(),
        name: "daily".into(),
        period_start_us: day,
        hard_limit: 5_000_000,
        soft_limit: Some(4_000_000),
        soft_limit_usd: Some(4.0),
        audit: false,
    };
    assert_eq!(a.claims, [want], "a budget over an alias counts the model by its own name too; another team's does not");
    let unpriced = admit(&spec, &providers, &budgets, Operation::ChatCompletions, json!({"model": "free-model"})).unwrap_err();
    assert!(matches!(unpriced, Refusal::Unpriced { ref budget, .. } if budget == "free"), "{unpriced}");
    let stored = json!({"model": "fast", "input": "go on", "previous_response_id": "resp_1"});
    assert!(matches!(admit(&spec, &providers, &budgets, Operation::Responses, stored.clone()), Err(Refusal::Uncountable { .. })));
    // Without a budget that counts it, the same call passes: nothing needs counting.
    assert!(admit(&spec, &providers, &[], Operation::Responses, stored).is_ok());
}

#[test]
fn a_soft_limit_passed_is_a_warning_naming_the_budget() {
    let claim = |name: &str, soft: Option<f64>| BudgetClaim {
        budget: format!("team-a/{name}"),
        name: name.into(),
        period_start_us: 0,
        hard_limit: 5_000_000,
        soft_limit: soft.map(|s| (s * 1e6) as i64),
        soft_limit_usd: soft,
        audit: false,
    };
    let claims = [claim("daily", Some(4.0)), claim("hard-only", None)];
    let spent = |d: i64, h: i64| vec![("team-a/daily".to_owned(), d), ("team-a/hard-only".to_owned(), h)];
    assert_eq!(call::soft_limit_warning(&claims, &spent(3_999_999, 5_000_000)), None, "no soft limit, no warning");
    assert_eq!(call::soft_limit_warning(&claims, &spent(4_000_000, 0)).as_deref(), Some("budget daily passed its soft limit of 4.00 USD"));
}

#[test]
fn a_call_costs_its_usage_nothing_when_nothing_ran_and_its_reservation_when_nobody_knows() {
    let pricing: tollgate_api::Pricing = serde_json::from_value(json!({"inputPerMillionUSD": 1.0, "outputPerMillionUSD": 2.0})).unwrap();
    let used = Usage { input: 1_000, cached_input: 0, output: 500 };
    assert_eq!(call::cost(Ending::Used(used), Some(&pricing), 99_999), 2_000);
    assert_eq!(call::cost(Ending::Used(used), None, 99_999), 0, "an unpriced model is free (no budget would have let it through)");
    assert_eq!(call::cost(Ending::NotSent, Some(&pricing), 99_999), 0);
    assert_eq!(call::cost(Ending::Unknown, Some(&pricing), 99_999), 99_999);
}

#[test]
fn a_refusals_record_names_the_agent_the_model_and_why() {
    let agent = ModelCallAgent { namespace: "team-a".into(), name: "coder".into(), service_account: "coder".into(), pod_claimed: None };
    let refusal = Refusal::ModelNotAllowed { agent: "coder".into(), model: "gpt-5".into() };
    let record = ModelCallRecord::refused(agent, Some("gpt-5".into()), &refusal, now()).to_value();
    assert_eq!(
        record,
        json!({"kind": "model_call", "time": "2026-12-02T10:30:00Z",
               "agent": {"namespace": "team-a", "name": "coder", "serviceAccount": "coder"},
               "tool": "gpt-5", "decision": "deny", "status": 403, "reason": refusal.to_string()})
    );
}

/// Rate limits: the agent's and those of the budgets that count the call, each a claim of one
/// request or of the call's token bound in the current minute; an audited budget's are audited;
/// past one, a 429 each SDK reads as its rate-limit error.
#[test]
fn rate_limits_claim_requests_and_tokens_in_the_minutes_window() {
    let spec = agent(json!({"models": {"allowed": ["fast"], "rateLimit": {"requestsPerMinute": 10, "tokensPerMinute": 50000}}}));
    let budgets = vec![
        ("team".to_owned(), budget(json!({"period": "Daily", "hardLimitUSD": 5.0, "enforcement": "Audit", "rateLimit": {"requestsPerMinute": 100}}))),
        ("other".to_owned(), budget(json!({"period": "Daily", "hardLimitUSD": 5.0, "models": ["claude-*"], "rateLimit": {"requestsPerMinute": 1}}))),
    ];
    let providers = providers();
    let a = admit(&spec, &providers, &budgets, Operation::ChatCompletions, json!({"model": "fast", "max_tokens": 100, "messages": []})).unwrap();
    let window = call::rate_window(now());
    assert_eq!(window, now().as_microsecond(), "10:30:00 starts a window");
    let got: Vec<(&str, i64, i64, bool)> = a.rates.iter().map(|r| (r.key.as_str(), r.limit, r.amount, r.audit)).collect();
    let tokens = i64::try_from(a.body.len()).unwrap() + 100;
    assert_eq!(
        got,
        [
            ("rate:requests:ManagedAgent team-a/coder", 10, 1, false),
            ("rate:tokens:ManagedAgent team-a/coder", 50000, tokens, false),
            ("rate:requests:Budget team-a/team", 100, 1, true),
        ],
        "a budget that does not count the model brings no limit"
    );
    assert!(a.rates.iter().all(|r| r.window_start_us == window));
    let later: jiff::Timestamp = "2026-12-02T10:30:41.5Z".parse().unwrap();
    assert_eq!(call::retry_after_secs(window, later), 19);
    let refusal = Refusal::RateLimited { owner: "ManagedAgent team-a/coder".into(), what: "requests", limit: 10, retry_after_secs: 19 };
    assert_eq!((refusal.status(), refusal.retry_after()), (429, Some(19)));
    let openai: Value = serde_json::from_slice(&refusal.body(Api::OpenAi)).unwrap();
    assert_eq!(openai["error"]["code"], "rate_limit_exceeded");
    let anthropic: Value = serde_json::from_slice(&refusal.body(Api::Anthropic)).unwrap();
    assert_eq!(anthropic["error"]["type"], "rate_limit_error");
    let shadow = call::would_refuse("rate:requests:Budget team-a/team", 100, 100);
    assert_eq!(shadow.policy.as_deref(), Some("Budget team-a/team"));
    assert!(shadow.message.unwrap_or_default().contains("would have been rate limited: 100 of 100 requests this minute"));
}
