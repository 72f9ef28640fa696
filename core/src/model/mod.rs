//! Model calls (DESIGN §3.4), decided purely: which `ModelProvider` and model a requested name
//! (or alias) is, whether the agent may use it, and the errors the gateway answers with, in each
//! provider's own format and with the status codes its SDKs treat correctly (401 and 403 are
//! not retried; 429 and 5xx from the provider pass through).

pub mod call;
pub mod keys;
pub mod record_text;
pub mod request;
pub mod spend;
use crate::glob::Glob;
use serde_json::json;
use tollgate_api::{ModelProviderSpec, Pricing, ProviderType};

/// The API an agent called the gateway with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    /// Whether a provider of `kind` can serve this API's requests as they are.
    pub fn served_by(self, kind: ProviderType) -> bool {
        match self {
            Api::OpenAi => matches!(kind, ProviderType::Openai | ProviderType::OpenaiCompatible),
            Api::Anthropic => kind == ProviderType::Anthropic,
        }
    }
}

/// A requested model, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    /// The `ModelProvider`'s name.
    pub provider: &'a str,
    pub spec: &'a ModelProviderSpec,
    /// The provider's own name for the model (what is sent upstream).
    pub model: &'a str,
    /// Its other names.
    pub aliases: &'a [String],
    pub pricing: Option<&'a Pricing>,
    /// Its `maxOutputTokens`.
    pub max_output: Option<u32>,
}

impl Resolved<'_> {
    /// Every name of the model: its own, then its aliases.
    pub fn names(&self) -> Vec<&str> {
        std::iter::once(self.model).chain(self.aliases.iter().map(String::as_str)).collect()
    }
}

/// Longest model name a request may give. Provider model names are short; a longer one is an
/// agent writing what it likes into every log line, refusal and audit record that names it.
pub const MAX_MODEL_NAME: usize = 256;

/// The model a request body asks for.
pub fn requested_model(body: &serde_json::Map<String, serde_json::Value>) -> Result<&str, Refusal> {
    let name = body.get("model").and_then(serde_json::Value::as_str).ok_or_else(|| Refusal::BadRequest("no \"model\"".into()))?;
    if name.len() > MAX_MODEL_NAME {
        return Err(Refusal::BadRequest(format!("the model name is {} bytes long; at most {MAX_MODEL_NAME}", name.len())));
    }
    Ok(name)
}

/// The model `requested` names (its name or an alias), among providers that serve `api`; the
/// first provider (by name) that has it wins.
pub fn resolve<'a>(requested: &str, api: Api, providers: &'a [(String, ModelProviderSpec)]) -> Option<Resolved<'a>> {
    providers.iter().filter(|(_, p)| api.served_by(p.r#type)).find_map(|(name, p)| {
        p.models.iter().find(|m| m.name == requested || m.aliases.iter().any(|a| a == requested)).map(|m| Resolved {
            provider: name,
            spec: p,
            model: &m.name,
            aliases: &m.aliases,
            pricing: m.pricing.as_ref(),
            max_output: m.max_output_tokens,
        })
    })
}

/// Whether an agent whose `models.allowed` is `allowed` may call `model` (asked for as `requested`):
/// either name matching a glob is enough. No list allows nothing.
pub fn allowed(allowed: &[String], requested: &str, model: &str) -> bool {
    allowed.iter().map(|g| Glob::new(g)).any(|g| g.matches(requested) || g.matches(model))
}

/// Why the gateway refuses a call itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the gateway has not loaded its agents and providers yet; retry shortly")]
    NotReady,
    #[error("missing API key: send the key Tollgate gave this agent (OPENAI_API_KEY / ANTHROPIC_API_KEY)")]
    NoKey,
    #[error("invalid API key")]
    BadKey,
    #[error("agent {namespace}/{agent} is suspended (ManagedAgent.spec.suspended); every model call is refused")]
    Suspended { agent: String, namespace: String },
    #[error("model {0:?} is not served here: no ModelProvider in this namespace offers it")]
    UnknownModel(String),
    #[error("agent {agent} may not use model {model:?} (not in its models.allowed)")]
    ModelNotAllowed { agent: String, model: String },
    #[error("budget {budget} is spent: {spent_usd} of {limit_usd} USD this period (its hard limit); the call was not sent")]
    BudgetExhausted { budget: String, spent_usd: f64, limit_usd: f64 },
    #[error("rate limit of {owner}: at most {limit} {what} per minute; retry after {retry_after_secs} s")]
    RateLimited { owner: String, what: &'static str, limit: i64, retry_after_secs: u64 },
    #[error("model {model:?} has no price in ModelProvider {provider}, and budget {budget} applies to it: the call cannot be accounted")]
    Unpriced { model: String, provider: String, budget: String },
    #[error("the request body is not a JSON object with a \"model\": {0}")]
    BadRequest(String),
    /// The body itself did not arrive: too large (413), too slow (408) or cut off (400).
    #[error("{reason}")]
    BadBody { status: u16, reason: String },
    #[error("the gateway cannot reach its ledger: {0}")]
    Ledger(String),
    #[error("ModelProvider {provider} cannot be called: {reason}")]
    Provider { provider: String, reason: String },
    /// A body field the gateway does not forward (`field` is quoted and bounded).
    #[error("the request field {field} is refused: {why}")]
    Field { field: String, why: &'static str },
    #[error(
        "{what} asks the provider to call an MCP server itself, which no Tollgate policy, approval or audit would see: MCP through the provider is never allowed; call MCP servers through the sidecar (TOLLGATE_MCP_URL)"
    )]
    ProviderMcp { what: String },
    #[error(
        "agent {agent} may not use the provider-hosted tool {tool} (not in its ManagedAgent spec.models.hostedTools); a tool the provider runs passes no policy or approval"
    )]
    HostedTool { agent: String, tool: String },
    #[error("{header}: {value} is not a beta this gateway passes on (its allowedBetas)")]
    Beta { header: String, value: String },
    /// Input the provider would add itself, which no reservation could bound.
    #[error("{what} makes the provider add input the gateway cannot count, and budget {budget} applies to this call: send the input in the request itself")]
    Uncountable { what: String, budget: String },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoKey | Refusal::BadKey => 401,
            Refusal::Suspended { .. }
            | Refusal::ModelNotAllowed { .. }
            | Refusal::BudgetExhausted { .. }
            | Refusal::Unpriced { .. }
            | Refusal::ProviderMcp { .. }
            | Refusal::HostedTool { .. }
            | Refusal::Uncountable { .. } => 403,
            Refusal::UnknownModel(_) => 404,
            Refusal::BadRequest(_) | Refusal::Field { .. } | Refusal::Beta { .. } => 400,
            Refusal::BadBody { status, .. } => *status,
            Refusal::Ledger(_) | Refusal::NotReady => 503,
            Refusal::Provider { .. } => 502,
            Refusal::RateLimited { .. } => 429,
        }
    }

    /// A stable name for the kind of refusal (a span's `error.type`): never what the agent sent.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotReady => "not_ready",
            Refusal::NoKey => "no_key",
            Refusal::BadKey => "bad_key",
            Refusal::Suspended { .. } => "suspended",
            Refusal::UnknownModel(_) => "unknown_model",
            Refusal::ModelNotAllowed { .. } => "model_not_allowed",
            Refusal::BudgetExhausted { .. } => "budget_exhausted",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Unpriced { .. } => "unpriced",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::BadBody { .. } => "bad_body",
            Refusal::Ledger(_) => "ledger_unavailable",
            Refusal::Provider { .. } => "provider_error",
            Refusal::Field { .. } => "refused_field",
            Refusal::ProviderMcp { .. } => "provider_mcp",
            Refusal::HostedTool { .. } => "hosted_tool",
            Refusal::Beta { .. } => "beta",
            Refusal::Uncountable { .. } => "uncountable_input",
        }
    }

    /// Seconds the client should wait before retrying (its `retry-after`), when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The error body in `api`'s format, as its SDK parses it into its own exception type.
    pub fn body(&self, api: Api) -> Vec<u8> {
        let message = self.to_string();
        let v = match api {
            Api::OpenAi => {
                let (kind, code) = match self {
                    Refusal::NoKey | Refusal::BadKey => ("invalid_request_error", "invalid_api_key"),
                    Refusal::BudgetExhausted { .. } => ("insufficient_quota", "budget_exhausted"),
                    Refusal::RateLimited { what, .. } => (*what, "rate_limit_exceeded"),
                    Refusal::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
                    Refusal::BadRequest(_) | Refusal::BadBody { .. } | Refusal::Field { .. } | Refusal::Beta { .. } => {
                        ("invalid_request_error", "invalid_request")
                    }
                    Refusal::Ledger(_) | Refusal::Provider { .. } | Refusal::NotReady => ("server_error", "unavailable"),
                    _ => ("permission_error", "permission_denied"),
                };
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            Api::Anthropic => {
                let kind = match self.status() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    400 | 408 => "invalid_request_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        };
        v.to_string().into_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_request_names_its_model_briefly() {
        let obj = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(requested_model(&obj(json!({"model": "gpt-4o"}))).unwrap(), "gpt-4o");
        for body in [json!({}), json!({"model": 4}), json!({"model": "x".repeat(MAX_MODEL_NAME + 1)})] {
            let r = requested_model(&obj(body)).unwrap_err();
            assert_eq!(r.status(), 400);
            assert!(r.to_string().len() < 200, "the refusal repeats what it refuses: {r}");
        }
    }

    fn providers() -> Vec<(String, ModelProviderSpec)> {
        let p = |v: Value| -> ModelProviderSpec { serde_json::from_value(v).unwrap() };
        vec![
            (
                "anthropic".into(),
                p(json!({"type": "anthropic", "baseURL": "https://api.anthropic.com", "models": [{"name": "claude-sonnet-4-5", "aliases": ["sonnet"]}]})),
            ),
            (
                "openai".into(),
                p(json!({"type": "openai", "baseURL": "https://api.openai.com/v1", "models": [
                {"name": "gpt-4o-mini", "aliases": ["fast"], "pricing": {"inputPerMillionUSD": 0.15, "outputPerMillionUSD": 0.6}}]})),
            ),
        ]
    }

    #[test]
    fn names_and_aliases_resolve_within_the_api() {
        let ps = providers();
        let r = resolve("fast", Api::OpenAi, &ps).unwrap();
        assert_eq!((r.provider, r.model), ("openai", "gpt-4o-mini"));
        assert!(r.pricing.is_some());
        assert_eq!(resolve("sonnet", Api::Anthropic, &ps).unwrap().model, "claude-sonnet-4-5");
        // An Anthropic model is not served on the OpenAI API, nor the other way round.
        assert_eq!(resolve("sonnet", Api::OpenAi, &ps), None);
        assert_eq!(resolve("gpt-4o-mini", Api::Anthropic, &ps), None);
        assert_eq!(resolve("gpt-5", Api::OpenAi, &ps), None);
    }

    #[test]
    fn an_agent_uses_only_what_its_globs_allow() {
        assert!(allowed(&["gpt-4o*".into()], "fast", "gpt-4o-mini"));
        assert!(allowed(&["fast".into()], "fast", "gpt-4o-mini"));
        assert!(!allowed(&["claude-*".into()], "fast", "gpt-4o-mini"));
        assert!(!allowed(&[], "fast", "gpt-4o-mini"));
    }

    #[test]
    fn refusals_speak_each_providers_format() {
        let r = Refusal::ModelNotAllowed { agent: "coder".into(), model: "gpt-5".into() };
        assert_eq!(r.status(), 403);
        let o: Value = serde_json::from_slice(&r.body(Api::OpenAi)).unwrap();
        assert_eq!(o["error"]["code"], "permission_denied");
        assert!(o["error"]["message"].as_str().unwrap().contains("models.allowed"));
        let a: Value = serde_json::from_slice(&r.body(Api::Anthropic)).unwrap();
        assert_eq!((a["type"].as_str(), a["error"]["type"].as_str()), (Some("error"), Some("permission_error")));
        assert_eq!(Refusal::BadKey.status(), 401);
        let a: Value = serde_json::from_slice(&Refusal::BadKey.body(Api::Anthropic)).unwrap();
        assert_eq!(a["error"]["type"], "authentication_error");
        let b = Refusal::BudgetExhausted { budget: "team".into(), spent_usd: 1.0, limit_usd: 1.0 };
        assert_eq!(b.status(), 403, "SDKs retry 429; a spent budget must not be retried");
    }
}
