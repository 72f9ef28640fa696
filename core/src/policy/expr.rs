//! CEL for `when` conditions: one shared environment (standard library, string extensions, a
//! `matches` whose regexes are compiled once), programs compiled at policy load, and variables bound
//! lazily per call.

use crate::json_tree::Tree;
use crate::policy::regex_cache::cached_regex;
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp, CelUInt, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, OnceLock};

/// The variables a `when` expression may use.
pub const VARIABLES: &[&str] = &["args", "tool", "agent", "justification", "now"];

fn regex_match<'b, 'v>(text: &CowVal<'b, 'v>, pattern: &CowVal<'b, 'v>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (Some(text), Some(pattern)) = (text.downcast_ref::<CelString>(), pattern.downcast_ref::<CelString>()) else {
        return Err(ExecutionError::function_error("matches", "expects (string, string)"));
    };
    let re = cached_regex(pattern.inner()).map_err(|e| ExecutionError::function_error("matches", format!("invalid regex {:?}: {e}", pattern.inner())))?;
    Ok(CowVal::owned(CelBool::from(re.is_match(text.inner()))))
}

fn matches_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    match args.as_slice() {
        [text, pattern] => regex_match(text, pattern),
        _ => Err(ExecutionError::invalid_argument_count(2, args.len())),
    }
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // The crate's own `matches` builds its regex on every call; ours is cached. The `regex` feature
    // is off, so these are the only overloads.
    let declared = env
        .add_member_overload("matches", "string.matches(string)", STRING_TYPE, vec![STRING_TYPE], matches_fn)
        .and_then(|()| env.add_overload("matches", "matches(string,string)", vec![STRING_TYPE, STRING_TYPE], matches_fn))
        .and_then(|()| env.add_extension(cel::extensions::strings));
    if let Err(e) = declared {
        // Declarations are static; a clash is a programming error caught by every test.
        panic!("CEL environment: {e}");
    }
    Arc::new(env)
});

pub fn env() -> Arc<Env> {
    Arc::clone(&ENV)
}

/// A compiled `when` expression.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    uses: Uses,
    /// The same condition for the native evaluator, when it fits its subset.
    native: Option<Arc<(crate::policy::native::Node, usize)>>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").field("source", &self.source).finish()
    }
}

/// Which variables an expression reads, so a call binds only those.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Uses {
    /// Reading `args` means parsing the raw arguments; the other variables are cheap.
    pub args: bool,
}

impl Condition {
    /// Compiles `source`; the error is the compiler's message, to be prefixed with a field path.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = env().compile(source).map_err(|e| e.to_string().trim().to_owned())?;
        let mut scan = Scan::default();
        scan.walk(program.expression(), &mut Vec::new());
        let uses = Uses { args: scan.free.iter().any(|v| v == "args") };
        // Without a type checker an unknown identifier would only fail at run time, where it fails
        // closed on every call; refusing it at load tells the author instead.
        let unknown: Vec<String> = scan.free.into_iter().filter(|v| !VARIABLES.contains(&v.as_str())).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "undeclared reference to {}; the variables are {}",
                unknown.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", "),
                VARIABLES.join(", ")
            ));
        }
        // Literal patterns are compiled now: a bad one is refused at load, a good one is cached
        // before the first call.
        for pattern in scan.regexes {
            cached_regex(&pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        }
        let native = crate::policy::native::lower(program.expression()).map(|n| {
            let slots = crate::policy::native::slots(&n);
            Arc::new((n, slots))
        });
        Ok(Condition { source: source.into(), program: Arc::new(program), uses, native })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn uses(&self) -> Uses {
        self.uses
    }

    /// Evaluates to a boolean; anything else, or any error, is an `Err` with the reason.
    pub(crate) fn evaluate(&self, bindings: &Bindings<'_>) -> Result<bool, String> {
        if let Some(b) = self.evaluate_native(bindings) {
            return Ok(b);
        }
        self.evaluate_cel(bindings)
    }

    /// Whether the condition runs natively (for tests and the benchmark's report).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    pub(crate) fn evaluate_native(&self, bindings: &Bindings<'_>) -> Option<bool> {
        let native = self.native.as_deref()?;
        let empty = Tree::Null;
        let args = if self.uses.args { bindings.args.parsed().ok()? } else { &empty };
        let inputs = crate::policy::native::Inputs {
            args,
            tool_name: bindings.tool_name,
            server: bindings.server,
            agent: bindings.agent,
            justification: bindings.justification,
        };
        crate::policy::native::Eval::new(&inputs, native.1).condition(&native.0)
    }

    pub(crate) fn evaluate_cel(&self, bindings: &Bindings<'_>) -> Result<bool, String> {
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(bindings);
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("condition evaluated to a {}, not a bool", other.type_of())),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// A run-time error as the audit, the approval request and the agent may read it: what failed
/// and on which types, never the values (cel-rust's own messages print the arguments, which may
/// be secrets).
#[allow(deprecated)]
pub fn describe(e: &ExecutionError) -> String {
    use ExecutionError as E;
    let t = |v: &Value| v.type_of().to_string();
    match e {
        E::InvalidArgumentCount { expected, actual } => format!("invalid argument count: expected {expected}, got {actual}"),
        E::UnsupportedTargetType { target } => format!("invalid argument type {}", t(target)),
        E::NotSupportedAsMethod { method, target } => format!("method '{method}' not supported on type {}", t(target)),
        E::UnsupportedKeyType(v) => format!("a {} cannot be a map key", t(v)),
        E::UnexpectedType { got, want } => format!("unexpected type: got {got}, want {want}"),
        E::NoSuchKey(_) => "no such key".to_owned(),
        E::NoSuchOverload(o) => o.to_string(),
        E::UndeclaredReference(name) => format!("undeclared reference to '{name}'"),
        E::MissingArgumentOrTarget => "missing argument or target".to_owned(),
        E::ValuesNotComparable(a, b) => format!("a {} cannot be compared to a {}", t(a), t(b)),
        E::UnsupportedUnaryOperator(op, v) => format!("operator '{op}' does not apply to a {}", t(v)),
        E::UnsupportedBinaryOperator(op, a, b) => format!("operator '{op}' does not apply to a {} and a {}", t(a), t(b)),
        E::UnsupportedMapIndex(v) | E::UnsupportedListIndex(v) => format!("a {} cannot be an index", t(v)),
        E::UnsupportedIndex(i, v) => format!("a {} cannot index a {}", t(i), t(v)),
        E::UnsupportedFunctionCallIdentifierType(_) => "unsupported function call".to_owned(),
        E::UnsupportedFieldsConstruction(_) => "unsupported fields construction".to_owned(),
        E::FunctionError { function, .. } => format!("function '{function}' failed on its arguments"),
        E::DivisionByZero(v) => format!("division of a {} by zero", t(v)),
        E::RemainderByZero(v) => format!("remainder of a {} by zero", t(v)),
        E::Overflow(op, a, b) => format!("overflow in '{op}' of a {} and a {}", t(a), t(b)),
        E::IndexOutOfBounds(_) => "index out of bounds".to_owned(),
        E::DuplicateKey(v) => format!("repeated {} key in a map literal", t(v)),
        E::InternalError(_) => "internal error".to_owned(),
        #[allow(unreachable_patterns)]
        _ => "evaluation failed".to_owned(),
    }
}

/// Free identifiers (not bound by a macro such as `exists(i, …)`) and literal `matches` patterns.
#[derive(Default)]
struct Scan {
    free: Vec<String>,
    regexes: Vec<String>,
}

impl Scan {
    fn walk(&mut self, e: &cel::IdedExpr, bound: &mut Vec<String>) {
        use cel::common::ast::{Expr, LiteralValue};
        match &e.expr {
            Expr::Ident(name) => {
                if !bound.contains(name) && !self.free.contains(name) {
                    self.free.push(name.clone());
                }
            }
            Expr::Call(call) => {
                if call.func_name == "matches"
                    && let Some(Expr::Literal(LiteralValue::String(p))) = call.args.last().map(|a| &a.expr)
                {
                    self.regexes.push(p.inner().to_owned());
                }
                if let Some(t) = &call.target {
                    self.walk(t, bound);
                }
                for a in &call.args {
                    self.walk(a, bound);
                }
            }
            Expr::Select(sel) => self.walk(&sel.operand, bound),
            Expr::List(list) => list.elements.iter().for_each(|x| self.walk(x, bound)),
            Expr::Map(map) => map.entries.iter().for_each(|x| self.walk_entry(&x.expr, bound)),
            Expr::Struct(st) => st.entries.iter().for_each(|x| self.walk_entry(&x.expr, bound)),
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, bound);
                self.walk(&c.accu_init, bound);
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.iter().cloned());
                bound.push(c.accu_var.clone());
                self.walk(&c.loop_cond, bound);
                self.walk(&c.loop_step, bound);
                self.walk(&c.result, bound);
                bound.truncate(depth);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn walk_entry(&mut self, e: &cel::common::ast::EntryExpr, bound: &mut Vec<String>) {
        use cel::common::ast::EntryExpr;
        match e {
            EntryExpr::StructField(f) => self.walk(&f.value, bound),
            EntryExpr::MapEntry(m) => {
                self.walk(&m.key, bound);
                self.walk(&m.value, bound);
            }
        }
    }
}

/// The values of one call, converted to CEL only when an expression first reads them.
pub(crate) struct Bindings<'a> {
    pub args: &'a crate::policy::input::Args<'a>,
    pub tool_name: &'a str,
    pub server: &'a str,
    pub agent: &'a crate::policy::input::AgentInfo,
    pub justification: Option<&'a str>,
    pub now: jiff::Timestamp,
    args_val: OnceLock<Option<Box<dyn Val + 'static>>>,
    tool_val: OnceLock<Box<dyn Val + 'static>>,
    agent_val: OnceLock<Box<dyn Val + 'static>>,
    justification_val: OnceLock<Box<dyn Val + 'static>>,
    now_val: OnceLock<Box<dyn Val + 'static>>,
}

impl<'a> Bindings<'a> {
    pub fn new(
        args: &'a crate::policy::input::Args<'a>,
        tool_name: &'a str,
        server: &'a str,
        agent: &'a crate::policy::input::AgentInfo,
        justification: Option<&'a str>,
        now: jiff::Timestamp,
    ) -> Self {
        Bindings {
            args,
            tool_name,
            server,
            agent,
            justification,
            now,
            args_val: OnceLock::new(),
            tool_val: OnceLock::new(),
            agent_val: OnceLock::new(),
            justification_val: OnceLock::new(),
            now_val: OnceLock::new(),
        }
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let val: &'b (dyn Val + 'static) = match variable {
            "args" => self.args_val.get_or_init(|| self.args.parsed().ok().map(json_to_val)).as_deref()?,
            "tool" => self.tool_val.get_or_init(|| string_map([("name", self.tool_name), ("server", self.server)])).as_ref(),
            "agent" => self.agent_val.get_or_init(|| agent_to_val(self.agent)).as_ref(),
            "justification" => self
                .justification_val
                .get_or_init(|| match self.justification {
                    Some(j) => Box::new(CelString::from(j.to_owned())),
                    None => Box::new(CelNull),
                })
                .as_ref(),
            "now" => self.now_val.get_or_init(|| Box::new(CelTimestamp::from(to_chrono(self.now)))).as_ref(),
            _ => return None,
        };
        Some(CowVal::Borrowed(val))
    }
}

fn string_map<'s>(entries: impl IntoIterator<Item = (&'s str, &'s str)>) -> Box<dyn Val> {
    let map: HashMap<CelMapKey, Box<dyn Val>> =
        entries.into_iter().map(|(k, v)| (CelMapKey::from(k.to_owned()), Box::new(CelString::from(v.to_owned())) as Box<dyn Val>)).collect();
    Box::new(CelMap::from(map))
}

fn agent_to_val(agent: &crate::policy::input::AgentInfo) -> Box<dyn Val> {
    let labels = string_map(agent.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut map: HashMap<CelMapKey, Box<dyn Val>> = HashMap::new();
    map.insert(CelMapKey::from("name".to_owned()), Box::new(CelString::from(agent.name.clone())));
    map.insert(CelMapKey::from("namespace".to_owned()), Box::new(CelString::from(agent.namespace.clone())));
    map.insert(CelMapKey::from("serviceAccount".to_owned()), Box::new(CelString::from(agent.service_account.clone())));
    map.insert(CelMapKey::from("labels".to_owned()), labels);
    Box::new(CelMap::from(map))
}

/// JSON to CEL. Integers stay integers, so `args.count > 5` works; a number too large for i64
/// becomes uint or double as CEL would parse it.
pub(crate) fn json_to_val(value: &Tree<'_>) -> Box<dyn Val> {
    match value {
        Tree::Null => Box::new(CelNull),
        Tree::Bool(b) => Box::new(CelBool::from(*b)),
        Tree::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Tree::String(s) => Box::new(CelString::from(s.as_ref().to_owned())),
        Tree::Array(items) => Box::new(CelList::from(items.iter().map(json_to_val).collect::<Vec<_>>())),
        Tree::Object(members) => {
            Box::new(CelMap::from(members.iter().map(|(k, v)| (CelMapKey::from(k.to_owned()), json_to_val(v))).collect::<HashMap<_, _>>()))
        }
    }
}

/// For tests and tools: evaluate `source` against plain values.
pub fn eval_standalone(source: &str, vars: BTreeMap<&str, serde_json::Value>) -> Result<Value, String> {
    let program = env().compile(source).map_err(|e| e.to_string())?;
    let mut ctx = Context::with_env(env());
    for (k, v) in vars {
        ctx.add_variable_as_val(k, json_to_val(&Tree::borrowed(&v)));
    }
    program.execute(&ctx).map_err(|e| e.to_string())
}

fn to_chrono(t: jiff::Timestamp) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).unwrap_or(0)).unwrap_or_default().fixed_offset()
}

/// Both evaluators on one condition, for the differential test: the native answer (`None` when
/// it defers) and cel-rust's.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn evaluate_both(
    source: &str,
    args: &serde_json::Value,
    agent: &crate::policy::input::AgentInfo,
    justification: Option<&str>,
) -> Result<(bool, Option<bool>, Result<bool, String>), String> {
    let condition = Condition::compile(source)?;
    let args = crate::policy::input::Args::value(args);
    let bindings = Bindings::new(&args, "deploy", "github", agent, justification, jiff::Timestamp::UNIX_EPOCH);
    Ok((condition.is_native(), condition.evaluate_native(&bindings), condition.evaluate_cel(&bindings)))
}
