//! Model spend (DESIGN §3.4), decided purely: what a call costs from the provider's usage and the
//! `ModelProvider`'s prices, what it may cost at most before it is sent (the reservation), when a
//! budget's period starts, and which budgets a call counts against. Money is integer micro-USD
//! everywhere it is added up, so sums in SQL and here agree to the last digit.

use crate::glob::Glob;
use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use tollgate_api::{BudgetPeriod, BudgetSpec, Pricing};

/// Micro-USD: 1 USD is 1_000_000.
pub type Micros = i64;

pub fn usd_to_micros(usd: f64) -> Micros {
    if usd.is_finite() { (usd * 1e6).round() as Micros } else { Micros::MAX }
}

pub fn micros_to_usd(m: Micros) -> f64 {
    m as f64 / 1e6
}

/// The most tokens of one kind a provider's usage is taken to report: more is a lie (or a
/// bug), and counts past this would overflow the ledger's 64-bit columns and sums.
pub const MAX_TOKENS: u64 = 1 << 40;

/// Tokens of one call, normalised across providers: `input` excludes cached input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
}

impl Usage {
    /// From an OpenAI usage block: Chat Completions (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`) or Responses (`input_tokens`, `output_tokens`,
    /// `input_tokens_details.cached_tokens`). OpenAI counts cached tokens inside the prompt.
    pub fn from_openai(u: &serde_json::Value) -> Option<Usage> {
        let n = |v: &serde_json::Value| v.as_u64().map(|t| t.min(MAX_TOKENS));
        let prompt = n(&u["prompt_tokens"]).or_else(|| n(&u["input_tokens"]))?;
        let output = n(&u["completion_tokens"]).or_else(|| n(&u["output_tokens"])).unwrap_or(0);
        let cached = n(&u["prompt_tokens_details"]["cached_tokens"]).or_else(|| n(&u["input_tokens_details"]["cached_tokens"])).unwrap_or(0).min(prompt);
        Some(Usage { input: prompt - cached, cached_input: cached, output })
    }

    /// From an Anthropic usage block: `input_tokens` excludes cache reads
    /// (`cache_read_input_tokens`); cache writes (`cache_creation_input_tokens`) bill as input.
    pub fn from_anthropic(u: &serde_json::Value) -> Option<Usage> {
        let n = |k: &str| u[k].as_u64().map(|t| t.min(MAX_TOKENS));
        // A stream's `message_delta` carries output tokens only.
        if n("input_tokens").is_none() && n("output_tokens").is_none() {
            return None;
        }
        let input = n("input_tokens").unwrap_or(0);
        Some(Usage {
            input: input + n("cache_creation_input_tokens").unwrap_or(0),
            cached_input: n("cache_read_input_tokens").unwrap_or(0),
            output: n("output_tokens").unwrap_or(0),
        })
    }

    /// Streams report usage in pieces (Anthropic: input at `message_start`, output at
    /// `message_delta`); the later, larger count of each kind wins.
    pub fn merge(self, later: Usage) -> Usage {
        Usage { input: self.input.max(later.input), cached_input: self.cached_input.max(later.cached_input), output: self.output.max(later.output) }
    }
}

fn per_token(per_million_usd: f64) -> f64 {
    per_million_usd.max(0.0)
}

/// What `usage` costs at `pricing` (cached input at its own price, else the input price); rounded
/// up to the micro-USD, so many small calls never add up to less than they cost.
pub fn cost(pricing: &Pricing, usage: &Usage) -> Micros {
    let cached_price = pricing.cached_input_per_million_usd.unwrap_or(pricing.input_per_million_usd);
    // Per-million prices times tokens give micro-USD directly.
    let micros = usage.input as f64 * per_token(pricing.input_per_million_usd)
        + usage.cached_input as f64 * per_token(cached_price)
        + usage.output as f64 * per_token(pricing.output_per_million_usd);
    if micros.is_finite() { (micros.ceil() as Micros).min(MAX_ESTIMATE) } else { MAX_ESTIMATE }
}

/// Output tokens assumed when neither the request nor the model sets a limit: a reservation
/// must bound the call.
pub const DEFAULT_MAX_OUTPUT: u64 = 4096;

/// The most a request can cost before it is sent: its body's bytes as input tokens (a token is
/// at least one byte of text, so this never underestimates), and the output [`max_output`] bounds.
pub fn estimate(pricing: &Pricing, request_bytes: usize, max_output: u64) -> Micros {
    let usage = Usage { input: request_bytes as u64, cached_input: 0, output: max_output };
    cost(pricing, &usage).min(MAX_ESTIMATE)
}

/// The largest reservation one call takes (a million USD): whatever a request asks for, sums of
/// reservations stay far from the 64-bit integers' end, where SQLite turns a sum into an
/// imprecise float (an absurd `max_tokens` reserved and then released would have rounded a
/// budget's spend away).
pub const MAX_ESTIMATE: Micros = 1_000_000_000_000;

/// Output tokens one choice can be asked for; no model makes more.
pub const MAX_OUTPUT_PER_CHOICE: u64 = 1 << 20;

/// Most choices OpenAI lets one request ask for (`n`).
pub const MAX_CHOICES: u64 = 128;

/// The output limit fields of each API; a provider reads one of them, not necessarily the first.
const LIMIT_FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// Bounds the output a request can make the provider produce and returns the output tokens its
/// reservation must cover (per choice, times OpenAI's `n` choices). The limit is the largest one
/// the body sets, or the model's `maxOutputTokens` (else [`DEFAULT_MAX_OUTPUT`]) when it sets
/// none, never above the model's maximum; it is written back into every limit field the body
/// has, or into `field` (the endpoint's own) when it has none; `n` is bounded the same way. So
/// the provider is told the very limit the call was reserved for, and no answer costs more than
/// its reservation.
pub fn bound_output(body: &mut serde_json::Map<String, serde_json::Value>, field: &str, model_max: Option<u32>) -> u64 {
    let ceiling = model_max.map_or(MAX_OUTPUT_PER_CHOICE, u64::from).min(MAX_OUTPUT_PER_CHOICE);
    let asked = LIMIT_FIELDS.iter().filter_map(|k| body.get(*k)).map(|v| v.as_u64().unwrap_or(u64::MAX)).max();
    let limit = asked.unwrap_or_else(|| model_max.map_or(DEFAULT_MAX_OUTPUT, u64::from)).clamp(1, ceiling);
    let mut set = false;
    for k in LIMIT_FIELDS {
        if let Some(v) = body.get_mut(k) {
            *v = limit.into();
            set = true;
        }
    }
    if !set {
        body.insert(field.to_owned(), limit.into());
    }
    let choices = body.get("n").map_or(1, |n| n.as_u64().unwrap_or(MAX_CHOICES)).clamp(1, MAX_CHOICES);
    if let Some(n) = body.get_mut("n") {
        *n = choices.into();
    }
    limit.saturating_mul(choices)
}

/// The most a Budget's status is taken to say was spent (a thousand million USD): past it a
/// figure is absurd, and the ledger's sums must never overflow.
const MAX_FLOOR: Micros = 1_000_000_000_000_000;

/// What a ledger with no row for a budget's period starts it from, as its first call there is
/// reserved: the spend the Budget's status shows, when the status is of that same period. A
/// gateway whose SQLite volume was lost, or one that took over from another Gateway, would
/// otherwise count the period again from nothing,
/// while the status every owner reads says otherwise: the budget would let through what it had
/// already refused. (The status counts calls in flight at their estimate, so the floor errs
/// toward the limit.)
pub fn floor_from_status(status_spent_usd: Option<f64>, status_period_start: Option<Timestamp>, period_start_us: i64) -> Option<Micros> {
    if status_period_start?.as_microsecond() != period_start_us {
        return None;
    }
    let spent = usd_to_micros(status_spent_usd?).min(MAX_FLOOR);
    (spent > 0).then_some(spent)
}

/// Where the period containing `now` starts (UTC): the hour, the day, Monday, the first of the
/// month; a `Total` budget never rolls over.
pub fn period_start(period: BudgetPeriod, now: Timestamp) -> Timestamp {
    let dt = now.to_zoned(TimeZone::UTC).datetime();
    let start = match period {
        BudgetPeriod::Total => return Timestamp::UNIX_EPOCH,
        BudgetPeriod::Hourly => dt.date().at(dt.hour(), 0, 0, 0),
        BudgetPeriod::Daily => dt.date().at(0, 0, 0, 0),
        BudgetPeriod::Weekly => {
            let back = i64::from(dt.weekday().since(Weekday::Monday));
            dt.date().checked_sub(jiff::Span::new().days(back)).unwrap_or(dt.date()).at(0, 0, 0, 0)
        }
        BudgetPeriod::Monthly => dt.date().first_of_month().at(0, 0, 0, 0),
    };
    start.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Whether a budget counts a call of `agent_labels`' agent to a model known by `names` (its
/// canonical name and every alias, whichever the call used): the selector (none selects every
/// agent of the namespace) and the model globs (none: every model). A budget on an alias counts
/// calls by the canonical name, and the other way round: they are one model, one bill.
pub fn budget_applies(budget: &BudgetSpec, agent_labels: &std::collections::BTreeMap<String, String>, names: &[&str]) -> bool {
    let selected = budget.agent_selector.as_ref().is_none_or(|s| crate::k8s::inject::selects(s, agent_labels));
    let models = budget.models.is_empty() || budget.models.iter().map(|g| Glob::new(g)).any(|g| names.iter().any(|n| g.matches(n)));
    selected && models
}

/// A budget's state from what was spent (reservations included) and its limits.
pub fn state(spent: Micros, soft: Option<Micros>, hard: Micros) -> tollgate_api::BudgetState {
    use tollgate_api::BudgetState;
    if spent >= hard {
        BudgetState::HardExceeded
    } else if soft.is_some_and(|s| spent >= s) {
        BudgetState::SoftExceeded
    } else {
        BudgetState::Ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pricing(input: f64, output: f64, cached: Option<f64>) -> Pricing {
        Pricing { input_per_million_usd: input, output_per_million_usd: output, cached_input_per_million_usd: cached }
    }

    #[test]
    fn usage_is_normalised_from_each_provider() {
        let chat = json!({"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 400}});
        assert_eq!(Usage::from_openai(&chat), Some(Usage { input: 600, cached_input: 400, output: 200 }));
        let responses = json!({"input_tokens": 50, "output_tokens": 7, "input_tokens_details": {"cached_tokens": 0}});
        assert_eq!(Usage::from_openai(&responses), Some(Usage { input: 50, cached_input: 0, output: 7 }));
        let anthropic = json!({"input_tokens": 30, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 500, "output_tokens": 12});
        assert_eq!(Usage::from_anthropic(&anthropic), Some(Usage { input: 40, cached_input: 500, output: 12 }));
        assert_eq!(Usage::from_openai(&json!({})), None);
        assert_eq!(Usage::from_anthropic(&json!({"output_tokens": 9})), Some(Usage { input: 0, cached_input: 0, output: 9 }));
        assert_eq!(Usage::from_anthropic(&json!(null)), None);
        // Cached beyond the prompt (a lying upstream) cannot make input negative.
        assert_eq!(Usage::from_openai(&json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}})).unwrap().input, 0);
    }

    #[test]
    fn cost_uses_each_price_and_rounds_up() {
        let p = pricing(2.5, 10.0, Some(1.25));
        // 600 × 2.5 + 400 × 1.25 + 200 × 10 = 1500 + 500 + 2000 micro-USD.
        assert_eq!(cost(&p, &Usage { input: 600, cached_input: 400, output: 200 }), 4000);
        // Without a cached price, cached input costs what input does.
        assert_eq!(cost(&pricing(2.5, 10.0, None), &Usage { input: 0, cached_input: 400, output: 0 }), 1000);
        // A fraction of a micro-USD is a whole one.
        assert_eq!(cost(&pricing(0.15, 0.6, None), &Usage { input: 1, cached_input: 0, output: 0 }), 1);
        assert_eq!(cost(&pricing(-5.0, 1.0, None), &Usage { input: 100, cached_input: 0, output: 1 }), 1);
        // A provider reporting absurd usage costs at most one call's largest reservation, and its
        // counts stay far inside the ledger's integers.
        let absurd = Usage::from_openai(&serde_json::json!({"prompt_tokens": 10_000_000_000_000_000_000u64, "completion_tokens": u64::MAX})).unwrap();
        assert_eq!((absurd.input, absurd.output), (MAX_TOKENS, MAX_TOKENS));
        assert_eq!(cost(&pricing(100_000.0, 100_000.0, None), &absurd), MAX_ESTIMATE);
    }

    #[test]
    fn the_estimate_bounds_the_call() {
        let p = pricing(1.0, 2.0, None);
        assert_eq!(estimate(&p, 1000, 100), 1000 + 200);
        let bound = |v: serde_json::Value, max: Option<u32>| {
            let mut body = v.as_object().cloned().unwrap();
            let reserved = bound_output(&mut body, "max_completion_tokens", max);
            (reserved, serde_json::Value::Object(body))
        };
        assert_eq!(bound(json!({"max_tokens": 64}), None), (64, json!({"max_tokens": 64})));
        // Whichever field the provider reads, the reservation covers it, and both say the same.
        assert_eq!(bound(json!({"max_completion_tokens": 32, "max_tokens": 64}), None), (64, json!({"max_completion_tokens": 64, "max_tokens": 64})));
        assert_eq!(bound(json!({"max_output_tokens": 16}), None).0, 16);
        // No limit: the model's, or the default, and it is sent.
        assert_eq!(bound(json!({}), None), (DEFAULT_MAX_OUTPUT, json!({"max_completion_tokens": DEFAULT_MAX_OUTPUT})));
        assert_eq!(bound(json!({}), Some(1000)), (1000, json!({"max_completion_tokens": 1000})));
        // Never above the model's maximum, whatever the request asks.
        assert_eq!(bound(json!({"max_tokens": 50_000}), Some(1000)), (1000, json!({"max_tokens": 1000})));
        assert_eq!(bound(json!({"max_tokens": "lots"}), Some(1000)), (1000, json!({"max_tokens": 1000})));
        assert_eq!(bound(json!({"max_tokens": 0}), None).0, 1);
        // Every choice is billed.
        assert_eq!(bound(json!({"max_tokens": 64, "n": 8}), None).0, 512);
        assert_eq!(bound(json!({"n": 1_000_000, "max_tokens": u64::MAX}), None).0, MAX_OUTPUT_PER_CHOICE * MAX_CHOICES);
        // However dear the model, one call's reservation stays far below the integers' end.
        let dear = pricing(1e9, 1e9, None);
        assert_eq!(estimate(&dear, 16 << 20, bound(json!({"n": 128, "max_tokens": u64::MAX}), None).0), MAX_ESTIMATE);
        assert_eq!(bound(json!({"n": 0}), None), (DEFAULT_MAX_OUTPUT, json!({"n": 1, "max_completion_tokens": DEFAULT_MAX_OUTPUT})));
        assert_eq!(bound(json!({"n": 1_000_000, "max_tokens": 1}), None), (MAX_CHOICES, json!({"n": MAX_CHOICES, "max_tokens": 1})));
    }

    #[test]
    fn periods_start_on_utc_boundaries() {
        let now: Timestamp = "2026-12-03T14:35:12Z".parse().unwrap(); // a Thursday
        let at = |p| period_start(p, now).to_string();
        assert_eq!(at(BudgetPeriod::Hourly), "2026-12-03T14:00:00Z");
        assert_eq!(at(BudgetPeriod::Daily), "2026-12-03T00:00:00Z");
        assert_eq!(at(BudgetPeriod::Weekly), "2026-11-30T00:00:00Z");
        assert_eq!(at(BudgetPeriod::Monthly), "2026-12-01T00:00:00Z");
        assert_eq!(at(BudgetPeriod::Total), "1970-01-01T00:00:00Z");
        let monday: Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        assert_eq!(period_start(BudgetPeriod::Weekly, monday), monday);
    }

    #[test]
    fn budgets_apply_by_selector_and_model_glob() {
        let spec = |v: serde_json::Value| -> BudgetSpec { serde_json::from_value(v).unwrap() };
        let labels: std::collections::BTreeMap<String, String> = [("team".to_owned(), "platform".to_owned())].into();
        let all = spec(json!({"period": "Daily", "hardLimitUSD": 5.0}));
        assert!(budget_applies(&all, &labels, &["gpt-4o"]));
        let gpt = spec(json!({"period": "Daily", "hardLimitUSD": 5.0, "models": ["gpt-*"], "agentSelector": {"matchLabels": {"team": "platform"}}}));
        assert!(budget_applies(&gpt, &labels, &["gpt-4o-2024-08-06", "fast"]));
        assert!(budget_applies(&gpt, &labels, &["claude-x", "gpt-cheap"]), "an alias the glob matches counts");
        assert!(!budget_applies(&gpt, &labels, &["claude-x", "claude"]));
        assert!(!budget_applies(&gpt, &Default::default(), &["gpt-4o"]));
        // A budget on an alias counts the model whatever name the call used.
        let fast = spec(json!({"period": "Daily", "hardLimitUSD": 1.0, "models": ["fast"]}));
        assert!(budget_applies(&fast, &labels, &["gpt-4o-mini", "fast", "quick"]));
    }

    #[test]
    fn state_follows_the_limits() {
        use tollgate_api::BudgetState;
        assert_eq!(state(10, Some(50), 100), BudgetState::Ok);
        assert_eq!(state(50, Some(50), 100), BudgetState::SoftExceeded);
        assert_eq!(state(100, Some(50), 100), BudgetState::HardExceeded);
        assert_eq!(state(99, None, 100), BudgetState::Ok);
        assert_eq!(usd_to_micros(1.5), 1_500_000);
        assert_eq!(micros_to_usd(250_000), 0.25);
    }

    #[test]
    fn a_status_of_the_same_period_is_the_floor_of_a_ledger_that_never_counted_it() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let earlier = Timestamp::from_second(1_600_000_000).unwrap();
        let floor = |usd, status_start| floor_from_status(usd, status_start, start.as_microsecond());
        assert_eq!(floor(Some(0.25), Some(start)), Some(250_000));
        assert_eq!(floor(Some(0.25), Some(earlier)), None, "a past period's spend is not this one's");
        assert_eq!(floor(Some(0.25), None), None);
        assert_eq!(floor(None, Some(start)), None);
        assert_eq!(floor(Some(0.0), Some(start)), None, "nothing to start from");
        assert_eq!(floor(Some(-3.0), Some(start)), None);
        assert_eq!(floor(Some(f64::NAN), Some(start)), Some(MAX_FLOOR), "an unreadable figure blocks, bounded");
        assert_eq!(floor(Some(1e300), Some(start)), Some(MAX_FLOOR));
    }
}
