//! The native evaluator must agree with cel-rust whenever it answers.
#![allow(clippy::unwrap_used)]

mod common;
use common::agent;
use proptest::prelude::*;
use serde_json::json;
use tollgate_core::policy::expr::evaluate_both;

fn scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        (-3i64..4).prop_map(|i| json!(i)),
        Just(json!(u64::MAX)),
        prop_oneof![Just(0.5f64), Just(-1.0), Just(2.0)].prop_map(|f| json!(f)),
        prop_oneof![Just(""), Just("a"), Just("ab"), Just("x"), Just(" A b "), Just("é🚀"), Just("/etc/passwd")].prop_map(|s| json!(s)),
    ]
}

fn arguments() -> impl Strategy<Value = serde_json::Value> {
    let object = (scalar(), scalar(), scalar(), prop::collection::vec(scalar(), 0..5), prop::option::of(scalar()), any::<bool>(), any::<bool>()).prop_map(
        |(a, b, s, l, x, with_m, many)| {
            let mut args = json!({"a": a, "b": b, "s": s, "l": l});
            if with_m {
                args["m"] = match x {
                    Some(x) => json!({"x": x, "y": 1}),
                    None => json!({"y": 1}),
                };
            }
            // Past eight members an object's keys are searched, not scanned (json_tree.rs).
            if many {
                for (i, key) in ["k0", "k1", "k2", "k3", "zz", "é", "\u{1f680}", "A"].into_iter().enumerate() {
                    args[key] = json!(i);
                }
            }
            args
        },
    );
    // Arguments that are not an object: every `args.x` has nothing to read.
    prop_oneof![8 => object, 1 => scalar(), 1 => prop::collection::vec(scalar(), 0..3).prop_map(|l| json!(l))]
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("args.a"),
        Just("args.b"),
        Just("args.s"),
        Just("args.l"),
        Just("args.m"),
        Just("args.m.x"),
        Just("args.l[0]"),
        Just("args['a']"),
        Just("args.missing"),
        Just("args.zz"),
        Just("args['é']"),
        Just("args.k3"),
        Just("tool.name"),
        Just("tool.server"),
        Just("agent.name"),
        Just("agent.labels.team"),
        Just("agent.labels"),
        Just("justification"),
        Just("1"),
        Just("0"),
        Just("-3"),
        Just("2u"),
        Just("0.5"),
        Just("'x'"),
        Just("'a'"),
        Just("''"),
        Just("'é🚀'"),
        Just("true"),
        Just("false"),
        Just("null"),
    ]
    .prop_map(str::to_owned)
}

fn expression() -> impl Strategy<Value = String> {
    atom().prop_recursive(4, 48, 3, |inner| {
        let pred = inner.clone().prop_map(|p| p.replace("args.a", "v"));
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop_oneof![Just("=="), Just("!="), Just("<"), Just("<="), Just(">"), Just(">="), Just("&&"), Just("||"), Just("in")]
            )
                .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            inner.clone().prop_map(|a| format!("size({a})")),
            inner.clone().prop_map(|a| format!("{a}.size()")),
            (inner.clone(), inner.clone(), prop_oneof![Just("startsWith"), Just("endsWith"), Just("contains")]).prop_map(|(a, b, f)| format!("{a}.{f}({b})")),
            inner.clone().prop_map(|a| format!("{a}.matches('^[a-z]+$')")),
            inner.clone().prop_map(|a| format!("{a}.lowerAscii()")),
            inner.clone().prop_map(|a| format!("{a}.trim()")),
            Just("has(args.m.x)".to_owned()),
            Just("has(args.a)".to_owned()),
            Just("has(args.zz)".to_owned()),
            Just("'é' in args".to_owned()),
            pred.clone().prop_map(|p| format!("args.l.exists(v, {p})")),
            pred.clone().prop_map(|p| format!("args.l.all(v, {p})")),
            pred.clone().prop_map(|p| format!("args.l.exists_one(v, {p})")),
            Just("args.m.exists(k, k == 'x')".to_owned()),
            Just("agent.labels.all(k, k.size() > 1)".to_owned()),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn native_agrees_with_cel(expr in expression(), args in arguments(), justification in prop::option::of(prop_oneof![Just(""), Just("ticket INC-1")])) {
        let Ok((_, native, cel)) = evaluate_both(&expr, &args, &agent(), justification) else {
            return Ok(()); // refused at compile time, e.g. a literal invalid regex
        };
        if let Some(b) = native {
            prop_assert_eq!(cel.clone(), Ok(b), "{} with {}", expr, args);
        }
    }
}

#[test]
fn common_shapes_run_natively() {
    let args = json!({"path": "/etc/passwd", "env": "prod", "files": ["a.rs", "b.pem"], "n": 3, "m": {"k": "v"}});
    let cases = [
        ("args.path.startsWith('/etc/')", true),
        ("args.env == 'production' || args.env.startsWith('prod')", true),
        ("args.files.exists(f, f.endsWith('.pem'))", true),
        ("args.files.all(f, f.endsWith('.rs'))", false),
        ("size(args.files) > 1 && args.n <= 3", true),
        ("has(args.m.k) && args.m['k'] == 'v'", true),
        ("'k' in args.m && !('z' in args.m)", true),
        ("args.path.matches('^/(etc|proc)/')", true),
        ("agent.labels.team == 'a' && tool.server == 'github'", true),
        ("justification == null", true),
        ("args.files.exists_one(f, f.endsWith('.rs'))", true),
        ("args.path.lowerAscii().contains('passwd')", true),
    ];
    for (expr, want) in cases {
        let (is_native, native, cel) = evaluate_both(expr, &args, &agent(), None).unwrap();
        assert!(is_native, "{expr} does not lower");
        assert_eq!(native, Some(want), "{expr}");
        assert_eq!(cel, Ok(want), "{expr}");
    }
    // Outside the subset: cel-rust alone.
    let (is_native, ..) = evaluate_both("now > timestamp('2020-01-01T00:00:00Z')", &args, &agent(), None).unwrap();
    assert!(!is_native);
}

/// The differential test proves something only if the native side answers often.
#[test]
fn the_differential_test_is_not_vacuous() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut answered, mut agreed_on_true, total) = (0, 0, 2000);
    for _ in 0..total {
        let expr = expression().new_tree(&mut runner).unwrap().current();
        let args = arguments().new_tree(&mut runner).unwrap().current();
        if let Ok((_, Some(b), cel)) = evaluate_both(&expr, &args, &agent(), None) {
            assert_eq!(cel, Ok(b), "{expr} with {args}");
            answered += 1;
            agreed_on_true += usize::from(b);
        }
    }
    assert!(answered * 8 > total, "native answered only {answered} of {total}");
    assert!(agreed_on_true * 10 > answered, "native answers are nearly all false: {agreed_on_true}/{answered}");
}
