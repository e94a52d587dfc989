//! The checks the fuzz target runs on every input, shared with the stable test that replays the
//! committed corpus (so a machine without a nightly toolchain still runs every corpus file):
//! arbitrary UTF-8 never panics or overflows the stack, and every selector that parses
//! evaluates the same before and after negation normal form, prints to a canonical form that
//! re-parses to the same tree, and translates to SQL without panicking.

use crate::{HeaderField, JsonbPropertiesOnly, ParseLimits, Selector, SimpleMessage, Value};

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

/// Runs the fuzz checks on one input; panics on a violation.
pub fn check(data: &[u8]) {
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
