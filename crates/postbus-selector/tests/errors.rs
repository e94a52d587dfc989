//! Malformed selectors: every fault names its 1-based character column, and
//! the size and nesting limits reject hostile input without deep recursion.

use postbus_selector::{ParseLimits, Selector};

/// (selector, column, part of the message)
const CASES: &[(&str, usize, &str)] = &[
    ("amount >", 9, "expected a value after '>'"),
    ("amount > 10 AND", 16, "expected a value after 'AND'"),
    ("(a = 1", 7, "expected ')' to close the '(' at column 1"),
    ("a = 'abc", 5, "unterminated string literal"),
    ("a = ')", 5, "unterminated string literal"),
    ("a IN ()", 7, "only string literals"),
    ("a IN ('x' 'y')", 11, "expected ',' or ')'"),
    ("a IN 'x'", 6, "expected '(' after IN"),
    ("a IN ('x', 1)", 12, "only string literals"),
    ("a LIKE 5", 8, "string literal pattern"),
    ("a LIKE 'x' ESCAPE 'ab'", 19, "exactly one character"),
    ("a LIKE 'x' ESCAPE ''", 19, "exactly one character"),
    (
        "a LIKE 'x!y' ESCAPE '!'",
        10,
        "must be followed by '%', '_' or itself",
    ),
    ("a LIKE 'x!' ESCAPE '!'", 10, "at the end of the pattern"),
    (
        "a LIKE 'it''s!' ESCAPE '!'",
        14,
        "at the end of the pattern",
    ),
    (
        "a = 1 b = 2",
        7,
        "expected AND, OR or the end of the selector",
    ),
    ("a = = 1", 5, "expected a value after '='"),
    ("a == 1", 4, "expected a value after '='"),
    ("a IS NUL", 6, "expected NULL after IS"),
    ("a IS NOT 5", 10, "expected NULL after IS NOT"),
    ("a NOT NULL", 7, "expected BETWEEN, IN or LIKE after NOT"),
    ("a BETWEEN 1 OR 2", 13, "expected AND between the bounds"),
    (
        "a BETWEEN 'x' AND 2",
        11,
        "BETWEEN works on arithmetic expressions",
    ),
    ("a = 08", 5, "malformed octal literal"),
    ("a = 1.5L", 5, "malformed numeric literal"),
    ("a = 10abc", 5, "malformed numeric literal"),
    ("a = 1.2.3", 5, "malformed numeric literal"),
    ("a = 0x", 5, "no digits after '0x'"),
    ("a = 1e", 5, "exponent has no digits"),
    (
        "a = 99999999999999999999",
        5,
        "out of the range of a Java long",
    ),
    (
        "a = 9223372036854775808",
        5,
        "out of the range of a Java long",
    ),
    (
        "a = +9223372036854775808",
        6,
        "out of the range of a Java long",
    ),
    ("1e999 < a", 1, "too large"),
    ("a < 1e-999", 5, "too small"),
    ("a # 1", 3, "unexpected character '#'"),
    ("a != 1", 3, "use '<>'"),
    ("a = \"x\"", 5, "single quotes"),
    ("a\u{200B}b = 1", 2, "U+200B"),
    ("a = 1\u{00A0}", 6, "U+00A0"),
    ("a = 1 AND b\u{202E} = 2", 12, "U+202E"),
    ("str > 'a'", 7, "'>' only applies to numbers"),
    ("TRUE < t", 1, "'<' only applies to numbers"),
    ("a + TRUE = 1", 5, "'+' needs numeric operands"),
    ("'x' * 2 = 1", 1, "'*' needs numeric operands"),
    ("-'x' = 1", 2, "unary '-' needs a numeric operand"),
    ("NOT 5", 5, "NOT needs a condition"),
    ("'x'", 1, "a selector must be a condition"),
    ("a + 1", 1, "a selector must be a condition"),
    (
        "a = 1 AND 'x'",
        11,
        "each operand of AND must be a condition",
    ),
    ("5 OR a = 1", 1, "each operand of OR must be a condition"),
    ("(a = 1) = TRUE", 1, "'=' compares values, not conditions"),
    ("(a + 1) IN ('x')", 1, "IN needs an identifier"),
    ("5 IS NULL", 1, "IS NULL needs an identifier"),
    ("'a' LIKE 'a'", 1, "LIKE needs an identifier"),
    ("a = NULL", 5, "NULL is not a value"),
    ("null IS NULL", 1, "NULL is not a value"),
    ("AND = 1", 1, "expected a value, found 'AND'"),
    ("()", 2, "expected a value after '(', found ')'"),
    ("a = -", 6, "expected a value after '-'"),
    ("a = 1 AND\n b >", 15, "expected a value after '>'"),
    ("Zürich > ", 10, "expected a value after '>'"),
    (
        "a = 1)",
        6,
        "expected AND, OR or the end of the selector, found ')'",
    ),
    ("x ESCAPE 'a'", 3, "found 'ESCAPE'"),
    ("in = 1", 1, "expected a value"),
];

#[test]
fn error_positions() {
    for (s, col, msg) in CASES {
        let err = Selector::parse(s).expect_err(s);
        assert_eq!(err.column, *col, "column for {s:?}: {err}");
        assert!(err.message.contains(msg), "message for {s:?}: {err}");
        assert_eq!(
            err.to_string(),
            format!("selector error at column {}: {}", err.column, err.message)
        );
    }
}

#[test]
fn display_format() {
    let err = Selector::parse("currency = 'EUR' AND amount >").unwrap_err();
    assert_eq!(
        err.to_string(),
        "selector error at column 30: expected a value after '>'"
    );
}

#[test]
fn deep_parentheses_are_rejected_without_overflow() {
    let s = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    let limits = ParseLimits {
        max_length: 100_000,
        max_depth: 64,
    };
    let err = Selector::parse_with_limits(&s, &limits).unwrap_err();
    assert_eq!(err.column, 65);
    assert!(err.message.contains("nested too deeply"), "{err}");
}

#[test]
fn long_not_chains_are_rejected() {
    let limits = ParseLimits {
        max_length: 100_000,
        max_depth: 64,
    };
    let s = format!("{}a = 1", "NOT ".repeat(10_000));
    let err = Selector::parse_with_limits(&s, &limits).unwrap_err();
    assert!(err.message.contains("nested too deeply"), "{err}");
    assert_eq!(err.column, 64 * 4 + 1);
    let s = format!("a = {}1", "- ".repeat(10_000));
    assert!(Selector::parse_with_limits(&s, &limits).is_err());
    let s = format!("a = {}1", "-(".repeat(10_000));
    assert!(Selector::parse_with_limits(&s, &limits).is_err());
}

#[test]
fn operator_nesting_counts() {
    let limits = ParseLimits {
        max_length: 100_000,
        max_depth: 64,
    };
    // Arithmetic chains nest left-deep: one level per operator.
    let s = format!("a = 1{}", " + 1".repeat(200));
    assert!(Selector::parse_with_limits(&s, &limits).is_err());
    let s = format!("a = 1{}", " + 1".repeat(50));
    assert!(Selector::parse_with_limits(&s, &limits).is_ok());
    // AND / OR chains are one level however long.
    let s = vec!["a = 1"; 500].join(" OR ");
    assert!(Selector::parse_with_limits(&s, &limits).is_ok());
}

#[test]
fn length_limit() {
    let s = format!("a = '{}'", "x".repeat(5000));
    let err = Selector::parse(&s).unwrap_err();
    assert!(err.message.contains("the limit is 4096 bytes"), "{err}");
    assert_eq!(err.column, 4097);
    // The limit is in bytes, the column in characters.
    let s = format!("a = '{}'", "ü".repeat(3000));
    let err = Selector::parse(&s).unwrap_err();
    assert_eq!(err.column, 5 + (4096 - 5) / 2 + 1);
    let ok = format!("a = '{}'", "x".repeat(4096 - 6));
    assert_eq!(ok.len(), 4096);
    assert!(Selector::parse(&ok).is_ok());
}

#[test]
fn canonical_form_may_outgrow_the_length_limit() {
    let s = vec!["a*b*c*d = 1"; 250].join(" OR ");
    assert!(s.len() <= 4096);
    let sel = Selector::parse(&s).unwrap();
    let printed = sel.to_string();
    assert!(printed.len() > 4096);
    let big = ParseLimits {
        max_length: usize::MAX,
        ..ParseLimits::default()
    };
    assert_eq!(Selector::parse_with_limits(&printed, &big).unwrap(), sel);
}

#[test]
fn default_limits() {
    let d = ParseLimits::default();
    assert_eq!((d.max_length, d.max_depth), (4096, 64));
}
