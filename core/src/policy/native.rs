//! A native evaluator for the common shapes of `when` conditions, over the call's JSON as it is.
//!
//! cel-rust interprets with an allocation per step (about 1 µs per comparison, 14 µs for an
//! `exists` over 20 items), which a 10-rule decision cannot afford. At load, a condition whose
//! every node is in the subset below is lowered to [`Node`]; at run time it reads the parsed
//! arguments in place, with no conversion. It answers only when the answer is certain: any
//! error, type mix or shape it does not model returns `None`, and the caller asks cel-rust, so
//! errors and their messages are cel-rust's own. A differential property test holds the two
//! evaluators to the same answers.

use crate::json_tree::{Members, Tree};
use crate::policy::regex_cache::cached_regex;
use cel::common::ast::{Expr, LiteralValue, operators};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Lit(Lit),
    Var(Var),
    Local(usize),
    Select {
        operand: Box<Node>,
        field: String,
        test: bool,
    },
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    NotStrictlyFalse(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    AddInt(Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
    /// `args.field`, most rules' first step, looked up without making `args` a value first.
    ArgsField(String),
    /// `matches` with a pattern the policy spells out: compiled at load, not looked up per call.
    MatchesLit(Box<Node>, std::sync::Arc<regex::Regex>),
    /// `startsWith`, `endsWith` or `contains` with a string the policy spells out: the common
    /// test, and the body of most `exists` loops, evaluated without a second operand.
    StrLit(StrTest, Box<Node>, String),
    Loop(Box<Loop>),
    /// `range.exists(x, pred)` / `range.all(x, pred)`: the macro's accumulator is a plain bool.
    Quantifier {
        all: bool,
        range: Box<Node>,
        iter_slot: usize,
        pred: Box<Node>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Loop {
    range: Node,
    iter_slot: usize,
    accu_slot: usize,
    init: Node,
    cond: Node,
    step: Node,
    result: Node,
}

#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Var {
    Args,
    Tool,
    Agent,
    Justification,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StrTest {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Func {
    StartsWith,
    EndsWith,
    Contains,
    Matches,
    Size,
    LowerAscii,
    UpperAscii,
    Trim,
}

/// `matches(text, pattern)`: a literal pattern that compiles is compiled now; any other is
/// looked up as the call runs (and one that does not compile is an error then, as in cel).
fn matches(args: Vec<Node>) -> Node {
    if let [target, Node::Lit(Lit::Str(pattern))] = args.as_slice()
        && let Ok(re) = cached_regex(pattern)
    {
        return Node::MatchesLit(Box::new(target.clone()), re);
    }
    Node::Call(Func::Matches, args)
}

/// `text.test('literal')` as a [`Node::StrLit`]; any other operand as the general call.
fn str_test(test: StrTest, general: Func, args: Vec<Node>) -> Node {
    match <[Node; 2]>::try_from(args) {
        Ok([target, Node::Lit(Lit::Str(literal))]) => Node::StrLit(test, Box::new(target), literal),
        Ok(pair) => Node::Call(general, pair.into()),
        Err(args) => Node::Call(general, args),
    }
}

/// Lowers a parsed expression, or `None` when any part is outside the subset.
pub(crate) fn lower(e: &cel::IdedExpr) -> Option<Node> {
    Lowering { scope: Vec::new(), slots: 0 }.lower(e)
}

/// Local variable slots a lowered condition needs.
pub(crate) fn slots(node: &Node) -> usize {
    match node {
        Node::Local(i) => i + 1,
        Node::Loop(l) => {
            [l.iter_slot + 1, l.accu_slot + 1, slots(&l.range), slots(&l.init), slots(&l.cond), slots(&l.step), slots(&l.result)].into_iter().max().unwrap_or(0)
        }
        Node::Quantifier { range, iter_slot, pred, .. } => (iter_slot + 1).max(slots(range)).max(slots(pred)),
        Node::Select { operand, .. } | Node::Not(operand) | Node::NotStrictlyFalse(operand) | Node::MatchesLit(operand, _) | Node::StrLit(_, operand, _) => {
            slots(operand)
        }
        Node::Index(a, b) | Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) | Node::In(a, b) | Node::AddInt(a, b) => slots(a).max(slots(b)),
        Node::Cond(a, b, c) => slots(a).max(slots(b)).max(slots(c)),
        Node::Call(_, args) => args.iter().map(slots).max().unwrap_or(0),
        Node::Lit(_) | Node::Var(_) | Node::ArgsField(_) => 0,
    }
}

/// Recognises the expansion of `exists` (init false, step `accu || pred`) and `all` (init true,
/// step `accu && pred`), whose result is the accumulator.
fn quantifier(range: &Node, iter_slot: usize, accu_slot: usize, init: &Node, step: &Node, result: &Node) -> Option<Node> {
    let is_accu = |n: &Node| matches!(n, Node::Local(i) if *i == accu_slot);
    if !is_accu(result) {
        return None;
    }
    let (all, pred) = match (init, step) {
        (Node::Lit(Lit::Bool(false)), Node::Or(a, pred)) if is_accu(a) => (false, pred),
        (Node::Lit(Lit::Bool(true)), Node::And(a, pred)) if is_accu(a) => (true, pred),
        _ => return None,
    };
    if uses_slot(pred, accu_slot) {
        return None;
    }
    Some(Node::Quantifier { all, range: Box::new(range.clone()), iter_slot, pred: pred.clone() })
}

fn uses_slot(node: &Node, slot: usize) -> bool {
    match node {
        Node::Local(i) => *i == slot,
        Node::Loop(l) => [&l.range, &l.init, &l.cond, &l.step, &l.result].into_iter().any(|n| uses_slot(n, slot)),
        Node::Quantifier { range, pred, .. } => uses_slot(range, slot) || uses_slot(pred, slot),
        Node::Select { operand, .. } | Node::Not(operand) | Node::NotStrictlyFalse(operand) | Node::MatchesLit(operand, _) | Node::StrLit(_, operand, _) => {
            uses_slot(operand, slot)
        }
        Node::Index(a, b) | Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) | Node::In(a, b) | Node::AddInt(a, b) => {
            uses_slot(a, slot) || uses_slot(b, slot)
        }
        Node::Cond(a, b, c) => uses_slot(a, slot) || uses_slot(b, slot) || uses_slot(c, slot),
        Node::Call(_, args) => args.iter().any(|a| uses_slot(a, slot)),
        Node::Lit(_) | Node::Var(_) | Node::ArgsField(_) => false,
    }
}

struct Lowering {
    scope: Vec<(String, usize)>,
    slots: usize,
}

impl Lowering {
    fn lower(&mut self, e: &cel::IdedExpr) -> Option<Node> {
        Some(match &e.expr {
            Expr::Literal(l) => Node::Lit(match l {
                LiteralValue::Null => Lit::Null,
                LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
                LiteralValue::Int(i) => Lit::Int(*i.inner()),
                LiteralValue::UInt(u) => Lit::UInt(*u.inner()),
                LiteralValue::Double(d) => Lit::Double(*d.inner()),
                LiteralValue::String(s) => Lit::Str(s.inner().to_owned()),
                LiteralValue::Bytes(_) => return None,
            }),
            Expr::Ident(name) => {
                if let Some((_, slot)) = self.scope.iter().rev().find(|(n, _)| n == name) {
                    Node::Local(*slot)
                } else {
                    Node::Var(match name.as_str() {
                        "args" => Var::Args,
                        "tool" => Var::Tool,
                        "agent" => Var::Agent,
                        "justification" => Var::Justification,
                        _ => return None,
                    })
                }
            }
            Expr::Select(s) => match self.lower(&s.operand)? {
                Node::Var(Var::Args) if !s.test => Node::ArgsField(s.field.clone()),
                operand => Node::Select { operand: Box::new(operand), field: s.field.clone(), test: s.test },
            },
            Expr::Call(c) => self.lower_call(c)?,
            Expr::Comprehension(c) => {
                if c.iter_var2.is_some() {
                    return None;
                }
                let range = self.lower(&c.iter_range)?;
                let init = self.lower(&c.accu_init)?;
                let (iter_slot, accu_slot) = (self.slots, self.slots + 1);
                self.slots += 2;
                let depth = self.scope.len();
                self.scope.push((c.accu_var.clone(), accu_slot));
                self.scope.push((c.iter_var.clone(), iter_slot));
                let lowered = (|| Some((self.lower(&c.loop_cond)?, self.lower(&c.loop_step)?, self.lower(&c.result)?)))();
                self.scope.truncate(depth);
                let (cond, step, result) = lowered?;
                quantifier(&range, iter_slot, accu_slot, &init, &step, &result)
                    .unwrap_or_else(|| Node::Loop(Box::new(Loop { range, iter_slot, accu_slot, init, cond, step, result })))
            }
            Expr::List(_) | Expr::Map(_) | Expr::Struct(_) | Expr::Unspecified => return None,
        })
    }

    fn lower_call(&mut self, c: &cel::common::ast::CallExpr) -> Option<Node> {
        let mut args: Vec<Node> = Vec::with_capacity(c.args.len() + 1);
        if let Some(t) = &c.target {
            args.push(self.lower(t)?);
        }
        for a in &c.args {
            args.push(self.lower(a)?);
        }
        let member = c.target.is_some();
        let two = |args: Vec<Node>| -> Option<(Box<Node>, Box<Node>)> {
            let mut it = args.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) => Some((Box::new(a), Box::new(b))),
                _ => None,
            }
        };
        let one = |args: Vec<Node>| -> Option<Box<Node>> {
            let mut it = args.into_iter();
            match (it.next(), it.next()) {
                (Some(a), None) => Some(Box::new(a)),
                _ => None,
            }
        };
        Some(match (c.func_name.as_str(), member) {
            (operators::LOGICAL_AND, false) => two(args).map(|(a, b)| Node::And(a, b))?,
            (operators::LOGICAL_OR, false) => two(args).map(|(a, b)| Node::Or(a, b))?,
            (operators::LOGICAL_NOT, false) => Node::Not(one(args)?),
            (operators::NOT_STRICTLY_FALSE, false) => Node::NotStrictlyFalse(one(args)?),
            (operators::CONDITIONAL, false) => {
                let mut it = args.into_iter();
                match (it.next(), it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), Some(c), None) => Node::Cond(Box::new(a), Box::new(b), Box::new(c)),
                    _ => return None,
                }
            }
            (operators::EQUALS, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Eq, a, b))?,
            (operators::NOT_EQUALS, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Ne, a, b))?,
            (operators::LESS, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Lt, a, b))?,
            (operators::LESS_EQUALS, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Le, a, b))?,
            (operators::GREATER, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Gt, a, b))?,
            (operators::GREATER_EQUALS, false) => two(args).map(|(a, b)| Node::Cmp(Cmp::Ge, a, b))?,
            (operators::IN, false) => two(args).map(|(a, b)| Node::In(a, b))?,
            (operators::INDEX, false) => two(args).map(|(a, b)| Node::Index(a, b))?,
            (operators::ADD, false) => two(args).map(|(a, b)| Node::AddInt(a, b))?,
            ("startsWith", true) => str_test(StrTest::StartsWith, Func::StartsWith, args),
            ("endsWith", true) => str_test(StrTest::EndsWith, Func::EndsWith, args),
            ("contains", true) => str_test(StrTest::Contains, Func::Contains, args),
            ("matches", _) => matches(args),
            ("size", _) => Node::Call(Func::Size, args),
            ("lowerAscii", true) => Node::Call(Func::LowerAscii, args),
            ("upperAscii", true) => Node::Call(Func::UpperAscii, args),
            ("trim", true) => Node::Call(Func::Trim, args),
            _ => return None,
        })
    }
}

/// A value during native evaluation. JSON scalars are unpacked; lists and maps stay borrowed.
#[derive(Debug, Clone)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    List(&'a [Tree<'a>]),
    Map(&'a Members<'a>),
    Labels(&'a BTreeMap<String, String>),
    Tool,
    Agent,
}

fn from_json<'a>(j: &'a Tree<'a>) -> V<'a> {
    match j {
        Tree::Null => V::Null,
        Tree::Bool(b) => V::Bool(*b),
        Tree::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => V::Int(i),
            (None, Some(u)) => V::UInt(u),
            _ => n.as_f64().map_or(V::Null, V::Double),
        },
        Tree::String(s) => V::Str(Cow::Borrowed(s)),
        Tree::Array(a) => V::List(a),
        Tree::Object(m) => V::Map(m),
    }
}

/// What native evaluation reads.
pub(crate) struct Inputs<'a> {
    pub args: &'a Tree<'a>,
    pub tool_name: &'a str,
    pub server: &'a str,
    pub agent: &'a crate::policy::input::AgentInfo,
    pub justification: Option<&'a str>,
}

pub(crate) struct Eval<'a> {
    inputs: &'a Inputs<'a>,
    locals: Vec<V<'a>>,
}

impl<'a> Eval<'a> {
    pub fn new(inputs: &'a Inputs<'a>, slots: usize) -> Self {
        Eval { inputs, locals: vec![V::Null; slots] }
    }

    /// `Some(b)` when the condition certainly evaluates to the bool `b`; `None` to ask cel-rust.
    pub fn condition(&mut self, node: &'a Node) -> Option<bool> {
        match self.eval(node)? {
            V::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn eval(&mut self, node: &'a Node) -> Option<V<'a>> {
        Some(match node {
            Node::Lit(l) => match l {
                Lit::Null => V::Null,
                Lit::Bool(b) => V::Bool(*b),
                Lit::Int(i) => V::Int(*i),
                Lit::UInt(u) => V::UInt(*u),
                Lit::Double(d) => V::Double(*d),
                Lit::Str(s) => V::Str(Cow::Borrowed(s.as_str())),
            },
            Node::Var(v) => match v {
                Var::Args => from_json(self.inputs.args),
                Var::Tool => V::Tool,
                Var::Agent => V::Agent,
                Var::Justification => self.inputs.justification.map_or(V::Null, |j| V::Str(Cow::Borrowed(j))),
            },
            Node::Local(i) => self.locals.get(*i)?.clone(),
            Node::Select { operand, field, test } => self.select(operand, field, *test)?,
            Node::ArgsField(field) => match self.inputs.args {
                Tree::Object(members) => from_json(members.get(field)?),
                _ => return None,
            },
            Node::Index(target, index) => self.index(target, index)?,
            Node::Not(a) => match self.eval(a)? {
                V::Bool(b) => V::Bool(!b),
                _ => return None,
            },
            Node::NotStrictlyFalse(a) => match self.eval(a)? {
                V::Bool(b) => V::Bool(b),
                _ => return None,
            },
            Node::And(a, b) => match self.eval(a)? {
                V::Bool(false) => V::Bool(false),
                V::Bool(true) => match self.eval(b)? {
                    V::Bool(r) => V::Bool(r),
                    _ => return None,
                },
                _ => return None,
            },
            Node::Or(a, b) => match self.eval(a)? {
                V::Bool(true) => V::Bool(true),
                V::Bool(false) => match self.eval(b)? {
                    V::Bool(r) => V::Bool(r),
                    _ => return None,
                },
                _ => return None,
            },
            Node::Cond(c, a, b) => match self.eval(c)? {
                V::Bool(true) => self.eval(a)?,
                V::Bool(false) => self.eval(b)?,
                _ => return None,
            },
            Node::Cmp(op, a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                V::Bool(compare(*op, &a, &b)?)
            }
            Node::In(x, container) => self.contains(x, container)?,
            Node::AddInt(a, b) => match (self.eval(a)?, self.eval(b)?) {
                (V::Int(a), V::Int(b)) => V::Int(a.checked_add(b)?),
                _ => return None,
            },
            Node::Call(f, args) => self.call(*f, args)?,
            Node::MatchesLit(target, re) => match self.eval(target)? {
                V::Str(s) => V::Bool(re.is_match(&s)),
                _ => return None,
            },
            Node::StrLit(test, target, literal) => match self.eval(target)? {
                V::Str(s) => V::Bool(match test {
                    StrTest::StartsWith => s.starts_with(literal.as_str()),
                    StrTest::EndsWith => s.ends_with(literal.as_str()),
                    StrTest::Contains => s.contains(literal.as_str()),
                }),
                _ => return None,
            },
            Node::Quantifier { all, range, iter_slot, pred } => self.quantify(*all, range, *iter_slot, pred)?,
            Node::Loop(l) => self.fold(l)?,
        })
    }

    /// `operand.field`, or `has(operand.field)` when `test`.
    fn select(&mut self, operand: &'a Node, field: &str, test: bool) -> Option<V<'a>> {
        let target = self.eval(operand)?;
        let found = self.field(&target, field);
        if !test {
            return found;
        }
        match target {
            V::Map(_) | V::Labels(_) => Some(V::Bool(found.is_some())),
            _ => None,
        }
    }

    /// `target[index]`: a list by position, a map by key.
    fn index(&mut self, target: &'a Node, index: &'a Node) -> Option<V<'a>> {
        let target = self.eval(target)?;
        match (target, self.eval(index)?) {
            (V::List(items), V::Int(i)) => Some(from_json(items.get(usize::try_from(i).ok()?)?)),
            (t @ (V::Map(_) | V::Labels(_)), V::Str(k)) => self.field(&t, &k),
            _ => None,
        }
    }

    /// `x in container`: a key of a map, an element of a list.
    fn contains(&mut self, x: &'a Node, container: &'a Node) -> Option<V<'a>> {
        let (x, container) = (self.eval(x)?, self.eval(container)?);
        match (&x, container) {
            (V::Str(k), V::Map(m)) => Some(V::Bool(m.contains_key(k.as_ref()))),
            (V::Str(k), V::Labels(l)) => Some(V::Bool(l.contains_key(k.as_ref()))),
            (_, V::List(items)) => {
                let mut found = false;
                for item in items {
                    // Any element of another kind: leave heterogeneous equality to cel.
                    found |= compare(Cmp::Eq, &x, &from_json(item))?;
                }
                Some(V::Bool(found))
            }
            _ => None,
        }
    }

    /// `all` / `exists` over a range: decided by the first element that settles it.
    fn quantify(&mut self, all: bool, range: &'a Node, iter_slot: usize, pred: &'a Node) -> Option<V<'a>> {
        let range = self.eval(range)?;
        for item in iterate(range)? {
            *self.locals.get_mut(iter_slot)? = item;
            match self.eval(pred)? {
                V::Bool(b) if b != all => return Some(V::Bool(b)),
                V::Bool(_) => {}
                _ => return None,
            }
        }
        Some(V::Bool(all))
    }

    /// A comprehension cel could not reduce to a quantifier: its accumulator folded over the
    /// range while its condition holds.
    fn fold(&mut self, l: &'a Loop) -> Option<V<'a>> {
        let range = self.eval(&l.range)?;
        let mut accu = self.eval(&l.init)?;
        for item in iterate(range)? {
            *self.locals.get_mut(l.accu_slot)? = accu.clone();
            match self.eval(&l.cond)? {
                V::Bool(true) => {}
                V::Bool(false) => break,
                _ => return None,
            }
            *self.locals.get_mut(l.iter_slot)? = item;
            accu = self.eval(&l.step)?;
        }
        *self.locals.get_mut(l.accu_slot)? = accu;
        self.eval(&l.result)
    }

    fn field(&self, target: &V<'a>, field: &str) -> Option<V<'a>> {
        let inputs = self.inputs;
        match target {
            V::Map(m) => m.get(field).map(from_json),
            V::Labels(l) => l.get(field).map(|v| V::Str(Cow::Borrowed(v.as_str()))),
            V::Tool => match field {
                "name" => Some(V::Str(Cow::Borrowed(inputs.tool_name))),
                "server" => Some(V::Str(Cow::Borrowed(inputs.server))),
                _ => None,
            },
            V::Agent => match field {
                "name" => Some(V::Str(Cow::Borrowed(inputs.agent.name.as_str()))),
                "namespace" => Some(V::Str(Cow::Borrowed(inputs.agent.namespace.as_str()))),
                "serviceAccount" => Some(V::Str(Cow::Borrowed(inputs.agent.service_account.as_str()))),
                "labels" => Some(V::Labels(&inputs.agent.labels)),
                _ => None,
            },
            _ => None,
        }
    }

    fn call(&mut self, f: Func, args: &'a [Node]) -> Option<V<'a>> {
        // No Vec: every function here takes one or two values, and this runs per loop item.
        let (first, second) = match args {
            [a] => (self.eval(a)?, None),
            [a, b] => (self.eval(a)?, Some(self.eval(b)?)),
            _ => return None,
        };
        Some(match (f, &first, &second) {
            (Func::StartsWith, V::Str(s), Some(V::Str(p))) => V::Bool(s.starts_with(p.as_ref())),
            (Func::EndsWith, V::Str(s), Some(V::Str(p))) => V::Bool(s.ends_with(p.as_ref())),
            (Func::Contains, V::Str(s), Some(V::Str(p))) => V::Bool(s.contains(p.as_ref())),
            (Func::Matches, V::Str(s), Some(V::Str(p))) => V::Bool(cached_regex(p).ok()?.is_match(s)),
            (Func::Size, V::Str(s), None) => V::Int(i64::try_from(s.chars().count()).ok()?),
            (Func::Size, V::List(l), None) => V::Int(i64::try_from(l.len()).ok()?),
            (Func::Size, V::Map(m), None) => V::Int(i64::try_from(m.len()).ok()?),
            (Func::Size, V::Labels(l), None) => V::Int(i64::try_from(l.len()).ok()?),
            (Func::LowerAscii, V::Str(s), None) => V::Str(Cow::Owned(s.to_ascii_lowercase())),
            (Func::UpperAscii, V::Str(s), None) => V::Str(Cow::Owned(s.to_ascii_uppercase())),
            (Func::Trim, V::Str(s), None) => V::Str(Cow::Owned(s.trim().to_owned())),
            _ => return None,
        })
    }
}

/// What a comprehension ranges over: a list's elements, a map's keys. An enum, not a boxed
/// iterator: an `exists` over a list runs on every call, and the box was an allocation each time.
enum Range<'a> {
    List(std::slice::Iter<'a, Tree<'a>>),
    Map(std::slice::Iter<'a, (Cow<'a, str>, Tree<'a>)>),
    Labels(std::collections::btree_map::Keys<'a, String, String>),
}

impl<'a> Iterator for Range<'a> {
    type Item = V<'a>;

    fn next(&mut self) -> Option<V<'a>> {
        match self {
            Range::List(items) => items.next().map(from_json),
            Range::Map(members) => members.next().map(|(k, _)| V::Str(Cow::Borrowed(k.as_ref()))),
            Range::Labels(keys) => keys.next().map(|k| V::Str(Cow::Borrowed(k.as_str()))),
        }
    }
}

fn iterate(range: V<'_>) -> Option<Range<'_>> {
    Some(match range {
        V::List(items) => Range::List(items.iter()),
        V::Map(m) => Range::Map(m.entries().iter()),
        V::Labels(l) => Range::Labels(l.keys()),
        _ => return None,
    })
}

/// Comparisons of two values of the same kind; anything else is cel-rust's to decide.
fn compare(op: Cmp, a: &V<'_>, b: &V<'_>) -> Option<bool> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (V::Null, V::Null) => Some(Ordering::Equal).filter(|_| matches!(op, Cmp::Eq | Cmp::Ne)),
        // cel-rust's ordering of bools is not modelled; equality is.
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)).filter(|_| matches!(op, Cmp::Eq | Cmp::Ne)),
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::UInt(x), V::UInt(y)) => Some(x.cmp(y)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Str(x), V::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        _ => None,
    };
    let ord = ord?;
    Some(match op {
        Cmp::Eq => ord == Ordering::Equal,
        Cmp::Ne => ord != Ordering::Equal,
        Cmp::Lt => ord == Ordering::Less,
        Cmp::Le => ord != Ordering::Greater,
        Cmp::Gt => ord == Ordering::Greater,
        Cmp::Ge => ord != Ordering::Less,
    })
}
