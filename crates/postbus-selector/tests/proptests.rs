//! Property tests: printing round-trips, negation normal form preserves
//! meaning, SQL generation is well-formed and injection-free, the LIKE
//! matcher agrees with a reference, and no input makes anything panic.

mod common;

use postbus_selector::{
    ArithOp, CmpOp, Expr, HeaderField, JsonbPropertiesOnly, LikePattern, Literal, ParseLimits,
    Selector, SimpleMessage, SqlMapping, SqlType, UnaryOp, Value, is_nnf,
};
use proptest::prelude::*;
use proptest::sample::select;

const NAMES: &[&str] = &[
    "a",
    "b",
    "amount",
    "Zürich",
    "$x",
    "_y",
    "JMSPriority",
    "JMSType",
    "JMSTimestamp",
    "JMSCorrelationID",
    "JMSXGroupID",
    "JMSExpiration",
    "JMS_v",
];

fn ident() -> impl Strategy<Value = String> {
    select(NAMES).prop_map(String::from)
}

fn interesting_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        select(vec![
            0.0,
            -0.0,
            0.1,
            1.0,
            -1.0,
            3.0,
            2.5,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            16_777_216.0,
            1e300,
            -1e300,
            5e-324,
            1e-7,
        ]),
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        (-100i32..100).prop_map(|x| f64::from(x) / 4.0),
    ]
}

fn interesting_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        -20i64..20,
        select(vec![
            i64::MIN,
            i64::MAX,
            9_007_199_254_740_993,
            9_007_199_254_740_992,
            16_777_217,
            8_388_609,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
        ]),
        any::<i64>(),
    ]
}

fn num_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        3 => interesting_i64().prop_map(Literal::Long),
        2 => interesting_f64().prop_map(Literal::Double),
        1 => interesting_f64()
            .prop_map(|x| x as f32)
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Literal::Float),
    ]
}

fn string() -> impl Strategy<Value = String> {
    "[a-cA'%_!\\\\ü✓\n ]{0,5}"
}

fn num_expr() -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        num_literal().prop_map(Expr::Literal),
        ident().prop_map(Expr::Ident),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (select(vec![UnaryOp::Neg, UnaryOp::Plus]), inner.clone()).prop_map(|(op, e)| {
                Expr::Unary {
                    op,
                    operand: Box::new(e),
                }
            }),
            (
                select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div]),
                inner.clone(),
                inner
            )
                .prop_map(|(op, l, r)| Expr::Arith {
                    op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                }),
        ]
    })
    .boxed()
}

fn any_operand() -> BoxedStrategy<Expr> {
    prop_oneof![
        3 => num_expr(),
        2 => string().prop_map(|s| Expr::Literal(Literal::String(s))),
        1 => any::<bool>().prop_map(|b| Expr::Literal(Literal::Bool(b))),
    ]
    .boxed()
}

fn like_pattern() -> impl Strategy<Value = LikePattern> {
    #[derive(Debug, Clone)]
    enum T {
        C(char),
        One,
        Many,
    }
    let tok = prop_oneof![
        3 => select(vec!['a', 'b', '%', '_', '!', '\\', 'ü']).prop_map(T::C),
        1 => Just(T::One),
        1 => Just(T::Many),
    ];
    (
        select(vec![None, Some('!'), Some('\\'), Some('a')]),
        prop::collection::vec(tok, 0..6),
    )
        .prop_map(|(esc, toks)| {
            let mut s = String::new();
            for t in toks {
                match t {
                    T::One => s.push('_'),
                    T::Many => s.push('%'),
                    T::C(c) => match esc {
                        Some(e) if c == e || c == '%' || c == '_' => {
                            s.push(e);
                            s.push(c);
                        }
                        // Without an escape a literal % or _ cannot be written.
                        None if c == '%' || c == '_' => s.push('x'),
                        _ => s.push(c),
                    },
                }
            }
            LikePattern::new(&s, esc).expect("generated pattern is valid")
        })
}

fn condition() -> BoxedStrategy<Expr> {
    let cmp = prop_oneof![
        (
            select(vec![CmpOp::Eq, CmpOp::Ne]),
            any_operand(),
            any_operand()
        ),
        (
            select(vec![CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]),
            num_expr(),
            num_expr()
        ),
    ]
    .prop_map(|(op, l, r)| Expr::Compare {
        op,
        lhs: Box::new(l),
        rhs: Box::new(r),
    });
    let leaf = prop_oneof![
        4 => cmp,
        1 => (any::<bool>(), num_expr(), num_expr(), num_expr()).prop_map(|(n, e, l, h)| {
            Expr::Between {
                negated: n,
                expr: Box::new(e),
                low: Box::new(l),
                high: Box::new(h),
            }
        }),
        1 => (any::<bool>(), ident(), prop::collection::vec(string(), 1..4))
            .prop_map(|(negated, ident, list)| Expr::In { negated, ident, list }),
        1 => (any::<bool>(), ident(), like_pattern())
            .prop_map(|(negated, ident, pattern)| Expr::Like { negated, ident, pattern }),
        1 => (any::<bool>(), ident()).prop_map(|(negated, ident)| Expr::IsNull { negated, ident }),
        1 => ident().prop_map(Expr::Ident),
        1 => any::<bool>().prop_map(|b| Expr::Literal(Literal::Bool(b))),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
    .boxed()
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i8>().prop_map(Value::Byte),
        (-5i16..5).prop_map(Value::Short),
        prop_oneof![-5i32..5, any::<i32>()].prop_map(Value::Int),
        interesting_i64().prop_map(Value::Long),
        prop_oneof![
            interesting_f64().prop_map(|x| x as f32),
            Just(f32::NAN),
            Just(f32::INFINITY)
        ]
        .prop_map(Value::Float),
        prop_oneof![interesting_f64(), Just(f64::NAN), Just(f64::NEG_INFINITY)]
            .prop_map(Value::Double),
        string().prop_map(Value::String),
    ]
}

fn message() -> impl Strategy<Value = SimpleMessage> {
    (
        prop::collection::btree_map(ident(), value(), 0..8),
        prop::option::of(0i32..10),
        prop::option::of(string()),
    )
        .prop_map(|(props, prio, ty)| {
            let mut m = SimpleMessage::new();
            m.properties = props;
            if let Some(p) = prio {
                m.headers.insert(HeaderField::JMSPriority, Value::Int(p));
            }
            if let Some(t) = ty {
                m.headers.insert(HeaderField::JMSType, Value::String(t));
            }
            m
        })
}

struct Columns;

impl SqlMapping for Columns {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        match h {
            HeaderField::JMSPriority => Some("m.priority".into()),
            HeaderField::JMSType => Some("m.jms_type".into()),
            _ => None,
        }
    }
    fn column_for_property(&self, name: &str) -> Option<(String, SqlType)> {
        (name == "JMSXGroupID").then(|| ("m.group_id".into(), SqlType::Text))
    }
    fn properties_column(&self) -> String {
        "m.properties".into()
    }
}

/// Every `$n` lies in `first..first+len`, every parameter is used, and the
/// SQL text holds no quote except in the generator's own fixed tokens.
fn check_sql(sel: &Selector, mapping: &dyn SqlMapping, first: usize) {
    let f = sel.to_sql(mapping, first);
    let mut used = vec![false; f.params.len()];
    let bytes = f.sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            let n: usize = f.sql[i + 1..j].parse().expect("placeholder number");
            assert!(
                n >= first && n < first + f.params.len(),
                "{} in {}",
                n,
                f.sql
            );
            used[n - first] = true;
            assert!(
                f.sql[j..].starts_with("::text"),
                "untyped placeholder in {}",
                f.sql
            );
            i = j;
        } else {
            i += 1;
        }
    }
    assert!(
        used.iter().all(|u| *u),
        "unused parameter in {} {:?}",
        f.sql,
        f.params
    );
    let mut rest = f.sql.clone();
    for fixed in [
        "'string'",
        "'number'",
        "'boolean'",
        "'NaN'",
        "'nonfinite'",
        "'inf'",
        "'-inf'",
        "E'\\\\'",
    ] {
        rest = rest.replace(fixed, "");
    }
    assert!(!rest.contains('\''), "stray quote in {}", f.sql);
    assert!(!rest.contains(';'), "semicolon in {}", f.sql);
    for name in ["Zürich", "$x", "amount", "_y"] {
        assert!(
            !rest.contains(name),
            "identifier {name} inlined in {}",
            f.sql
        );
    }
}

/// Reference LIKE: dynamic programming over (pattern, text) prefixes.
fn like_reference(p: &LikePattern, s: &str) -> bool {
    let esc = p.escape();
    let mut toks: Vec<Option<Option<char>>> = Vec::new(); // None = %, Some(None) = _, Some(Some(c))
    let mut it = p.source().chars();
    while let Some(c) = it.next() {
        if Some(c) == esc {
            toks.push(Some(it.next()));
        } else if c == '%' {
            toks.push(None);
        } else if c == '_' {
            toks.push(Some(None));
        } else {
            toks.push(Some(Some(c)));
        }
    }
    let text: Vec<char> = s.chars().collect();
    let mut dp = vec![vec![false; text.len() + 1]; toks.len() + 1];
    dp[0][0] = true;
    for i in 1..=toks.len() {
        for j in 0..=text.len() {
            dp[i][j] = match toks[i - 1] {
                None => dp[i - 1][j] || (j > 0 && dp[i][j - 1]),
                Some(None) => j > 0 && dp[i - 1][j - 1],
                Some(Some(c)) => j > 0 && text[j - 1] == c && dp[i - 1][j - 1],
            };
        }
    }
    dp[toks.len()][text.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn display_reparses_to_same_ast(e in condition()) {
        let printed = e.to_string();
        let parsed = Selector::parse(&printed)
            .unwrap_or_else(|err| panic!("{printed:?} does not parse: {err}"));
        prop_assert_eq!(parsed.expr(), &e, "via {}", printed);
        // And the canonical form is a fixed point.
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn nnf_preserves_evaluation(e in condition(), m in message()) {
        let sel = Selector::from_expr(e);
        let nnf = sel.to_nnf();
        prop_assert!(is_nnf(nnf.expr()), "{} is not in NNF", nnf);
        prop_assert_eq!(sel.evaluate(&m), nnf.evaluate(&m), "{} vs {}", sel, nnf);
        // Double negation is the identity too.
        let not_not = Selector::from_expr(Expr::Not(Box::new(Expr::Not(Box::new(sel.expr().clone())))));
        prop_assert_eq!(sel.evaluate(&m), not_not.to_nnf().evaluate(&m));
        // And NNF of the negation is the negation.
        let neg = Selector::from_expr(Expr::Not(Box::new(sel.expr().clone())));
        prop_assert_eq!(neg.evaluate(&m), neg.to_nnf().evaluate(&m));
        prop_assert_eq!(neg.evaluate(&m), sel.evaluate(&m).map(|b| !b));
    }

    #[test]
    fn sql_is_well_formed(e in condition(), first in 1usize..5) {
        let sel = Selector::from_expr(e);
        check_sql(&sel, &Columns, first);
        check_sql(&sel, &JsonbPropertiesOnly { column: "p".into() }, first);
        let _ = sel.explain();
    }

    #[test]
    fn like_matches_reference(p in like_pattern(), s in "[ab%_!\\\\ü]{0,8}") {
        prop_assert_eq!(p.matches(&s), like_reference(&p, &s), "{:?} {:?}", p, s);
    }

    #[test]
    fn no_panic_on_arbitrary_text(s in any::<String>()) {
        if let Ok(sel) = Selector::parse(&s) {
            exercise(&sel);
        }
    }

    #[test]
    fn no_panic_on_selector_like_text(
        parts in prop::collection::vec(
            select(vec![
                "a", "b", "JMSPriority", "NOT", "AND", "OR", "BETWEEN", "LIKE", "IN", "IS",
                "NULL", "TRUE", "FALSE", "ESCAPE", "(", ")", ",", "=", "<>", "<", "<=", ">",
                ">=", "+", "-", "*", "/", "1", "0x1F", "017", "1.5", "1e3", "2F", "'x'",
                "'%'", "'!'", "''", "9223372036854775808", "-",
            ]),
            0..14,
        )
    ) {
        let s = parts.join(" ");
        if let Ok(sel) = Selector::parse(&s) {
            exercise(&sel);
        }
    }
}

fn exercise(sel: &Selector) {
    let m = common::fixture();
    let v = sel.evaluate(&m);
    assert_eq!(sel.to_nnf().evaluate(&m), v, "{sel}");
    let printed = sel.to_string();
    let again = Selector::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(&again, sel);
    check_sql(sel, &Columns, 1);
    let _ = sel.explain();
}

#[test]
fn limits_hold_for_generated_depths() {
    // A selector exactly at the depth limit parses; one level more does not.
    let limits = ParseLimits {
        max_length: 100_000,
        max_depth: 10,
    };
    let at = format!("{}a = 1{}", "(".repeat(9), ")".repeat(9));
    assert!(Selector::parse_with_limits(&at, &limits).is_ok());
    let nots = format!("{}a", "NOT ".repeat(9));
    assert!(Selector::parse_with_limits(&nots, &limits).is_ok());
    let nots = format!("{}a", "NOT ".repeat(10));
    assert!(Selector::parse_with_limits(&nots, &limits).is_err());
}
