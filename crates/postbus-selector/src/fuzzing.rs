//! The checks the fuzz targets `selector_parse` and `selector_eval` (fuzz/) run on every input,
//! shared with the stable test that replays the committed corpora (tests/fuzz_corpus.rs), so a
//! machine without a nightly toolchain still runs every corpus file through the same code.
//! Pure: no I/O. Each function panics on a violated property.
//!
//! [`selector_parse`]: arbitrary UTF-8 never panics or overflows the stack, and every selector
//! that parses evaluates the same before and after negation normal form, prints to a canonical
//! form that re-parses to the same tree, and translates to SQL without panicking.
//!
//! [`selector_eval`]: the input is selector text, a NUL, a configuration byte and message
//! bytes. The configuration picks [`ParseLimits`]; the message bytes give every property and
//! header the selector names a value of some type (or none), strings often taken from the
//! selector's own literals. Then: the limits hold (text over `max_length` is refused, a parsed
//! tree is at most `max_depth` deep, what parses under limits parses the same under the
//! defaults); `matches` is `evaluate == TRUE`; negation normal form, the canonical text and
//! `NOT` (Kleene negation) agree with the evaluator; a selector without identifiers evaluates
//! alike on every message; `to_sql` and `to_exact_sql` number their placeholders within their
//! parameters and never inline text, the exact translation is the plain one when it exists, and
//! when it is the constant `TRUE` (or either translation is `FALSE`) the evaluator agrees, for
//! every message the mapping's column types can hold.

use crate::{
    Expr, HeaderField, JsonbPropertiesOnly, Literal, ParseLimits, Selector, SimpleMessage,
    SqlMapping, SqlType, Value, is_nnf,
};

fn message() -> SimpleMessage {
    SimpleMessage::new()
        .with_header(HeaderField::JMSPriority, Value::Int(4))
        .with_header(HeaderField::JMSType, Value::String("trade.v1".into()))
        .with_header(HeaderField::JMSTimestamp, Value::Long(1_700_000_000_000))
        .with_property("a", Value::Int(3))
        .with_property("b", Value::Double(2.5))
        .with_property("f", Value::Float(0.1))
        .with_property("l", Value::Long(9_007_199_254_740_993))
        .with_property("s", Value::String("EU-west".into()))
        .with_property("t", Value::Bool(true))
        .with_property("n", Value::Double(f64::NAN))
        .with_property("amount", Value::Long(15_000))
        .with_property("currency", Value::String("EUR".into()))
}

/// The `selector_parse` target. See the module documentation.
pub fn selector_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = Selector::parse(text) else {
        return;
    };
    let msg = message();
    let v = sel.evaluate(&msg);
    assert_eq!(
        sel.to_nnf().evaluate(&msg),
        v,
        "NNF changed the result of {sel}"
    );
    // The canonical form adds parentheses and spaces, so it may exceed the byte limit the
    // original text met; depth never grows.
    let printed = sel.to_string();
    let limits = ParseLimits {
        max_length: usize::MAX,
        ..ParseLimits::default()
    };
    let again = Selector::parse_with_limits(&printed, &limits)
        .unwrap_or_else(|e| panic!("canonical form {printed:?} does not parse: {e}"));
    assert_eq!(again, sel, "canonical form {printed:?} parses differently");
    let _ = sel.to_sql(
        &JsonbPropertiesOnly {
            column: "m.properties".into(),
        },
        1,
    );
    let _ = sel.explain();
}

/// Limits from a configuration byte: the defaults when the high bit is set, else a depth of 1
/// to 32 and a length of 16, 64, 256 or 4096 bytes.
fn limits(config: u8) -> ParseLimits {
    if config & 0x80 != 0 {
        return ParseLimits::default();
    }
    ParseLimits {
        max_length: [16, 64, 256, 4096][usize::from((config >> 5) & 3)],
        max_depth: 1 + usize::from(config & 31),
    }
}

/// Reads the message bytes: one byte at a time, zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn byte(&mut self) -> u8 {
        self.take::<1>()[0]
    }
}

/// Every string literal of the selector (comparison operands, IN lists, LIKE patterns), so
/// that values often equal what the selector tests for.
fn string_literals<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match e {
        Expr::Literal(Literal::String(s)) => out.push(s),
        Expr::Literal(_) | Expr::Ident(_) | Expr::IsNull { .. } => {}
        Expr::In { list, .. } => out.extend(list.iter().map(String::as_str)),
        Expr::Like { pattern, .. } => out.push(pattern.source()),
        Expr::Unary { operand, .. } | Expr::Not(operand) => string_literals(operand, out),
        Expr::Arith { lhs, rhs, .. } | Expr::Compare { lhs, rhs, .. } => {
            string_literals(lhs, out);
            string_literals(rhs, out);
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            string_literals(expr, out);
            string_literals(low, out);
            string_literals(high, out);
        }
        Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| string_literals(e, out)),
    }
}

/// A string: one of the selector's literals (possibly with its LIKE wildcards standing for
/// themselves), or up to 8 bytes of the input as lossy UTF-8.
fn string(bytes: &mut Bytes<'_>, pool: &[&str]) -> String {
    let pick = bytes.byte();
    if pick & 1 == 0 && !pool.is_empty() {
        return pool[usize::from(pick >> 1) % pool.len()].to_owned();
    }
    let len = usize::from(pick >> 1) % 9;
    let raw: Vec<u8> = (0..len).map(|_| bytes.byte()).collect();
    String::from_utf8_lossy(&raw).into_owned()
}

/// A value of any of the eight types, or None, from the input.
fn value(bytes: &mut Bytes<'_>, pool: &[&str]) -> Option<Value> {
    Some(match bytes.byte() % 10 {
        0 => return None,
        1 => Value::Bool(bytes.byte() & 1 != 0),
        2 => Value::Byte(i8::from_le_bytes(bytes.take())),
        3 => Value::Short(i16::from_le_bytes(bytes.take())),
        4 => Value::Int(i32::from_le_bytes(bytes.take())),
        5 => Value::Long(i64::from_le_bytes(bytes.take())),
        6 => Value::Float(f32::from_le_bytes(bytes.take())),
        7 => Value::Double(f64::from_le_bytes(bytes.take())),
        // Small numbers compare with small literals far more often than random bit patterns.
        8 => Value::Long(i64::from(i8::from_le_bytes(bytes.take()))),
        _ => Value::String(string(bytes, pool)),
    })
}

/// A message giving each property the selector names a value from the input, and each header
/// a value of its documented type (or NULL).
fn message_for(sel: &Selector, mut bytes: Bytes<'_>) -> SimpleMessage {
    let mut pool = Vec::new();
    string_literals(sel.expr(), &mut pool);
    let mut m = SimpleMessage::new();
    for name in sel.properties() {
        if let Some(v) = value(&mut bytes, &pool) {
            m.properties.insert(name, v);
        }
    }
    for h in HeaderField::ALL {
        let present = bytes.byte() & 1 != 0;
        if !present {
            continue;
        }
        let v = match h {
            HeaderField::JMSPriority => Value::Int(i32::from(bytes.byte() % 10)),
            HeaderField::JMSTimestamp => Value::Long(i64::from_le_bytes(bytes.take())),
            HeaderField::JMSDeliveryMode if bytes.byte() & 1 == 0 => {
                Value::String("PERSISTENT".into())
            }
            HeaderField::JMSDeliveryMode => Value::String("NON_PERSISTENT".into()),
            _ => Value::String(string(&mut bytes, &pool)),
        };
        m.headers.insert(h, v);
    }
    m
}

/// A store mapping like postbus's own: headers in columns, some properties in typed columns,
/// the rest in jsonb.
struct Columns;

impl SqlMapping for Columns {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        match h {
            HeaderField::JMSMessageID => None,
            _ => Some(format!("c.{}", h.name().to_ascii_lowercase())),
        }
    }
    fn column_for_property(&self, name: &str) -> Option<(String, SqlType)> {
        let ty = match name {
            "JMSXGroupID" | "s" => SqlType::Text,
            "JMSXGroupSeq" | "a" => SqlType::Integer,
            "t" => SqlType::Boolean,
            "b" => SqlType::Double,
            _ => return None,
        };
        Some((format!("c.col_{}", name.to_ascii_lowercase()), ty))
    }
    fn properties_column(&self) -> String {
        "c.properties".to_owned()
    }
}

/// Whether every column-mapped property of `msg` has a type its column can hold.
fn fits(msg: &SimpleMessage, mapping: &dyn SqlMapping) -> bool {
    msg.properties.iter().all(|(name, v)| {
        let Some((_, ty)) = mapping.column_for_property(name) else {
            return true;
        };
        match ty {
            SqlType::Text => matches!(v, Value::String(_)),
            SqlType::Boolean => matches!(v, Value::Bool(_)),
            SqlType::Integer => matches!(
                v,
                Value::Byte(_) | Value::Short(_) | Value::Int(_) | Value::Long(_)
            ),
            SqlType::Double => matches!(v, Value::Float(_) | Value::Double(_)),
        }
    })
}

/// Every `$n` lies in `first..first + params`, is typed `::text`, every parameter is used, and
/// outside the generator's fixed tokens the SQL text holds no quote or semicolon: selector text
/// only ever reaches PostgreSQL as a parameter.
fn check_sql(sql: &str, params: usize, first: usize) {
    let bytes = sql.as_bytes();
    let mut used = vec![false; params];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        let n: usize = sql[i + 1..j]
            .parse()
            .unwrap_or_else(|_| panic!("a $ that is no placeholder in {sql}"));
        assert!(
            n >= first && n < first + params,
            "placeholder ${n} out of range in {sql}"
        );
        used[n - first] = true;
        assert!(
            sql[j..].starts_with("::text"),
            "untyped placeholder in {sql}"
        );
        i = j;
    }
    assert!(used.iter().all(|u| *u), "unused parameter in {sql}");
    let mut rest = sql.to_owned();
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
    assert!(!rest.contains('\''), "stray quote in {sql}");
    assert!(!rest.contains(';'), "semicolon in {sql}");
}

/// The `selector_eval` target. See the module documentation.
pub fn selector_eval(data: &[u8]) {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (config, message_bytes) = match rest {
        [config, message @ ..] => (*config, message),
        [] => (0x80, rest),
    };
    let limits = limits(config);
    let parsed = Selector::parse_with_limits(text, &limits);
    if text.len() > limits.max_length {
        assert!(parsed.is_err(), "{} bytes passed max_length", text.len());
    }
    let Ok(sel) = parsed else {
        return;
    };
    assert!(
        sel.expr().depth() <= limits.max_depth,
        "depth {} passed max_depth {}",
        sel.expr().depth(),
        limits.max_depth
    );
    let roomier = ParseLimits {
        max_length: limits.max_length.max(ParseLimits::default().max_length),
        max_depth: limits.max_depth.max(ParseLimits::default().max_depth),
    };
    assert_eq!(
        Selector::parse_with_limits(text, &roomier).as_ref(),
        Ok(&sel),
        "looser limits parse differently"
    );

    let msg = message_for(&sel, Bytes(message_bytes));
    let v = sel.evaluate(&msg);
    assert_eq!(sel.matches(&msg), v == Some(true), "matches is not TRUE");
    assert_eq!(sel.evaluate(&msg), v, "evaluation is not deterministic");
    let nnf = sel.to_nnf();
    assert!(
        is_nnf(nnf.expr()),
        "to_nnf left a NOT above a compound: {nnf}"
    );
    assert_eq!(nnf.evaluate(&msg), v, "NNF changed the result of {sel}");
    let not = Selector::from_expr(Expr::Not(Box::new(sel.expr().clone())));
    assert_eq!(
        not.evaluate(&msg),
        v.map(|b| !b),
        "NOT is not Kleene negation"
    );
    if sel.expr().is_constant() {
        assert_eq!(
            sel.evaluate(&SimpleMessage::new()),
            v,
            "a constant selector depends on the message"
        );
    }
    let printed = sel.to_string();
    let canonical_limits = ParseLimits {
        max_length: usize::MAX,
        max_depth: limits.max_depth,
    };
    let again = Selector::parse_with_limits(&printed, &canonical_limits)
        .unwrap_or_else(|e| panic!("canonical form {printed:?} does not parse: {e}"));
    assert_eq!(
        again.evaluate(&msg),
        v,
        "canonical form {printed:?} evaluates differently"
    );

    let first = 1 + usize::from(message_bytes.first().copied().unwrap_or(0) % 8);
    let jsonb = JsonbPropertiesOnly {
        column: "m.properties".into(),
    };
    for mapping in [&jsonb as &dyn SqlMapping, &Columns] {
        let plain = sel.to_sql(mapping, first);
        check_sql(&plain.sql, plain.params.len(), first);
        // The translation may rely on a column's type; a message that breaks it (a boolean
        // in a text column) is one no store built on that mapping can hold.
        if !fits(&msg, mapping) {
            continue;
        }
        if plain.sql == "FALSE" {
            assert_ne!(v, Some(true), "SQL FALSE for a match of {sel}");
        }
        if let Some(exact) = sel.to_exact_sql(mapping, first) {
            assert_eq!(
                exact, plain,
                "the exact translation differs from the plain one"
            );
            if exact.sql == "TRUE" {
                assert_eq!(v, Some(true), "exact SQL TRUE for a non-match of {sel}");
            }
        }
    }
    let _ = sel.explain_with(&Columns);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cover_the_defaults_and_small_ones() {
        assert_eq!(limits(0x80), ParseLimits::default());
        assert_eq!(
            limits(0),
            ParseLimits {
                max_length: 16,
                max_depth: 1
            }
        );
        assert_eq!(limits(0x7f).max_length, 4096);
        assert_eq!(limits(0x7f).max_depth, 32);
    }

    #[test]
    fn messages_draw_values_and_literals_from_the_input() {
        let sel = Selector::parse("a = 'EUR' AND b > 1 AND c IS NULL").unwrap();
        // a: string from the pool (tag 9, pick 0); b: int 7; c: absent; headers: none.
        let m = message_for(&sel, Bytes(&[9, 0, 4, 7, 0, 0, 0, 0]));
        assert_eq!(m.properties.get("a"), Some(&Value::String("EUR".into())));
        assert_eq!(m.properties.get("b"), Some(&Value::Int(7)));
        assert_eq!(m.properties.get("c"), None);
        assert!(m.headers.is_empty());
        assert!(sel.matches(&m));
    }

    #[test]
    fn sql_checks_catch_inlined_text_and_bad_placeholders() {
        check_sql("(m.properties @> $3::text::jsonb)", 1, 3);
        for (sql, params) in [
            ("m.x = 'inlined'", 0),
            ("m.x = $1::text", 1),
            ("m.x = $2", 1),
            ("TRUE", 1),
        ] {
            let r = std::panic::catch_unwind(|| check_sql(sql, params, 2));
            assert!(r.is_err(), "{sql} passed");
        }
    }
}
