//! The shape of the generated SQL. Its meaning (the superset contract) was
//! checked against PostgreSQL 15 during development; these tests pin the
//! forms, the parameter numbering and what is and is not pushed down.

use postbus_selector::{
    HeaderField, JsonbPropertiesOnly, Selector, SqlFilter, SqlMapping, SqlType,
};

struct Store;

impl SqlMapping for Store {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        match h {
            HeaderField::JMSPriority => Some("m.priority".into()),
            HeaderField::JMSType => Some("m.jms_type".into()),
            HeaderField::JMSTimestamp => Some("m.ts_millis".into()),
            _ => None,
        }
    }
    fn column_for_property(&self, name: &str) -> Option<(String, SqlType)> {
        match name {
            "JMSXGroupID" => Some(("m.group_id".into(), SqlType::Text)),
            "JMSXGroupSeq" => Some(("m.group_seq".into(), SqlType::Integer)),
            "urgent" => Some(("m.urgent".into(), SqlType::Boolean)),
            "score" => Some(("m.score".into(), SqlType::Double)),
            _ => None,
        }
    }
    fn properties_column(&self) -> String {
        "m.properties".into()
    }
}

fn sql(s: &str) -> SqlFilter {
    Selector::parse(s).unwrap().to_sql(&Store, 1)
}

#[test]
fn banking_example() {
    let f = Selector::parse("currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'")
        .unwrap()
        .to_sql(
            &JsonbPropertiesOnly {
                column: "m.properties".into(),
            },
            3,
        );
    assert_eq!(
        f.sql,
        "((jsonb_typeof(m.properties -> $3::text) = 'string' AND ((m.properties ->> $3::text) IN ($4::text, $5::text))) \
         AND (CASE jsonb_typeof(m.properties -> $6::text) WHEN 'string' THEN FALSE \
         WHEN 'number' THEN ((m.properties ->> $6::text)::numeric > $7::text::numeric) \
         WHEN 'boolean' THEN FALSE ELSE ((m.properties -> $6::text) ->> 'nonfinite') IN ('inf') END) \
         AND (jsonb_typeof(m.properties -> $8::text) = 'string' AND ((m.properties ->> $8::text) LIKE $9::text ESCAPE E'\\\\')))"
    );
    assert_eq!(
        f.params,
        [
            "currency", "EUR", "USD", "amount", "10000", "region", "EU-%"
        ]
    );
}

#[test]
fn equality_uses_containment() {
    let f = sql("cur = 'EUR' AND n = 5 AND flag AND NOT off");
    assert_eq!(
        f.sql,
        "((m.properties @> jsonb_build_object($1::text, $2::text)) \
         AND (m.properties @> jsonb_build_object($3::text, $4::text::numeric)) \
         AND (m.properties @> jsonb_build_object($5::text, TRUE)) \
         AND (m.properties @> jsonb_build_object($6::text, FALSE)))"
    );
    assert_eq!(f.params, ["cur", "EUR", "n", "5", "flag", "off"]);
}

#[test]
fn parameters_are_shared_and_start_where_asked() {
    let f = Selector::parse("a = 'x' OR b = 'x' OR a IS NULL")
        .unwrap()
        .to_sql(&Store, 10);
    assert_eq!(f.params, ["a", "x", "b"]);
    assert!(f.sql.contains("$10::text") && f.sql.contains("$12::text"));
    assert!(!f.sql.contains("$13"));
}

#[test]
fn columns_and_headers() {
    let f = sql(
        "JMSPriority >= 5 AND JMSType = 'trade' AND JMSXGroupID IN ('g1') AND JMSXGroupSeq = 3 AND urgent AND JMSTimestamp < 1.5",
    );
    assert_eq!(
        f.sql,
        "(((m.priority) >= $1::text::bigint) AND ((m.jms_type) = $2::text) \
         AND ((m.group_id) IN ($3::text)) AND ((m.group_seq) = $4::text::bigint) \
         AND ((m.urgent) = TRUE) AND ((m.ts_millis) < $5::text::numeric))"
    );
    assert_eq!(f.params, ["5", "trade", "g1", "3", "1.5"]);
}

#[test]
fn double_columns_let_nan_through_where_java_may_match() {
    let f = sql("NOT (score > 1.5)");
    assert_eq!(
        f.sql,
        "(((m.score) <= $1::text::float8) OR ((m.score) = 'NaN'::float8))"
    );
    let f = sql("score = 1.5");
    assert_eq!(f.sql, "((m.score) = $1::text::float8)");
}

#[test]
fn unmapped_headers_arithmetic_and_identifier_pairs_are_not_pushed() {
    for s in [
        "JMSMessageID = 'x'",
        "JMSCorrelationID IS NULL",
        "a + 1 > 2",
        "a = b",
        "-a = 1",
        "JMSDeliveryMode = 'PERSISTENT'",
    ] {
        assert_eq!(sql(s).sql, "TRUE", "{s}");
        assert!(sql(s).params.is_empty());
    }
    // Partially pushable: the pushable part stays.
    let f = sql("a + 1 > 2 AND b = 'x'");
    assert_eq!(
        f.sql,
        "(m.properties @> jsonb_build_object($1::text, $2::text))"
    );
}

#[test]
fn constants_fold() {
    assert_eq!(sql("1 = 1").sql, "TRUE");
    assert_eq!(sql("1 = 2").sql, "FALSE");
    assert_eq!(sql("a = 1 AND 1 = 2").sql, "FALSE");
    assert_eq!(sql("a = 1 OR 2 > 1").sql, "TRUE");
    assert_eq!(sql("JMSExpiration > 0").sql, "FALSE");
    assert_eq!(sql("JMSExpiration IS NULL").sql, "TRUE");
    assert_eq!(sql("a = 1 / 0").sql, "FALSE");
    assert_eq!(sql("NOT (a = 1 / 0)").sql, "FALSE");
    assert_eq!(sql("").sql, "TRUE");
    // Constant arithmetic is folded into the bound.
    let f = sql("a > 2 * 1000");
    assert_eq!(f.params, ["a", "2000"]);
}

#[test]
fn negation_is_pushed_to_the_leaves() {
    let f = sql("NOT (a = 'x' AND (b IN ('y') OR c LIKE 'z%'))");
    assert!(!f.sql.contains("NOT ("), "{}", f.sql);
    assert!(
        f.sql.contains(" NOT IN (") && f.sql.contains(" NOT LIKE "),
        "{}",
        f.sql
    );
    assert!(
        f.sql.contains(" OR ") && f.sql.contains(" AND "),
        "{}",
        f.sql
    );
}

#[test]
fn null_tests() {
    assert_eq!(
        sql("a IS NULL").sql,
        "((m.properties ? $1::text) IS NOT TRUE)"
    );
    assert_eq!(sql("a IS NOT NULL").sql, "(m.properties ? $1::text)");
    assert_eq!(sql("NOT (a IS NULL)").sql, "(m.properties ? $1::text)");
    assert_eq!(sql("JMSType IS NULL").sql, "((m.jms_type) IS NULL)");
}

#[test]
fn negated_comparisons_keep_unlike_types() {
    // NOT (a = 'x') is TRUE when a is a number or boolean.
    assert_eq!(
        sql("NOT (a = 'x')").sql,
        "(CASE jsonb_typeof(m.properties -> $1::text) WHEN 'string' THEN ((m.properties ->> $1::text) <> $2::text) ELSE (m.properties ? $1::text) END)"
    );
    // Ordering strings is UNKNOWN either way.
    assert_eq!(sql("NOT (a < b)").sql, "TRUE");
}

#[test]
fn like_patterns_are_re_escaped() {
    let f = sql(r"a LIKE '50\%!_x\' ESCAPE '!'");
    assert_eq!(f.params, ["a", r"50\\%\_x\\"]);
    let f = sql(r"a LIKE '50!%' ESCAPE '!'");
    assert_eq!(f.params, ["a", r"50\%"]);
}

#[test]
fn nul_characters_are_never_sent() {
    for s in [
        "a = 'x\u{0}'",
        "a IN ('\u{0}')",
        "a LIKE '%\u{0}%'",
        "NOT (a = '\u{0}')",
    ] {
        let f = sql(s);
        assert_eq!(f.sql, "TRUE", "{s}");
        assert!(f.params.iter().all(|p| !p.contains('\0')));
    }
}

#[test]
fn large_numbers_widen() {
    // Above 2^23 a float property could round onto the literal.
    let f = sql("a = 20000000");
    assert!(f.sql.contains(">= $2::text::numeric AND"), "{}", f.sql);
    assert_eq!(f.params.len(), 3);
    let lo: f64 = f.params[1].parse().unwrap();
    let hi: f64 = f.params[2].parse().unwrap();
    assert!(lo < 19_999_999.0 && hi > 20_000_001.0 && hi - lo < 100.0);
    // <> cannot be filtered on the value.
    let f = sql("a <> 20000000");
    assert!(!f.sql.contains("<>"), "{}", f.sql);
    // Small exact values stay exact.
    assert_eq!(sql("a < 8388607").params, ["a", "8388607"]);
    // A long column is exact up to 2^63 against long literals.
    assert_eq!(
        sql("JMSTimestamp = 9007199254740993").params,
        ["9007199254740993"]
    );
}

#[test]
fn explain_mentions_pushdown() {
    let e = Selector::parse(
        "amount > 10000000 AND (a + 1 = 2 OR JMSPriority > 4) AND JMSExpiration = 1",
    )
    .unwrap()
    .explain();
    assert!(e.starts_with("selector:   ((amount > 10000000) AND"), "{e}");
    assert!(e.contains("properties: a, amount"), "{e}");
    assert!(e.contains("headers:    JMSPriority"), "{e}");
    assert!(
        e.contains("always NULL (not selectable JMS headers): JMSExpiration"),
        "{e}"
    );
    assert!(e.contains("widened numeric bounds"), "{e}");
    assert!(e.contains("evaluator only"), "{e}");
    assert!(e.contains("constant"), "{e}");
}
