//! Shared fixtures for the integration tests: one message that carries a
//! value of every type the selector semantics distinguish, so a table row
//! is just a selector and its expected truth value.

#![allow(dead_code)]

use postbus_selector::{HeaderField, Selector, SimpleMessage, Value};

/// The fixture message. Numeric properties come in every Java type with the
/// same values (`b3 s3 i3 l3 f3 d3` are 3, `b4 ... d4` are 4) so every type
/// pair can be compared.
pub fn fixture() -> SimpleMessage {
    let mut m = SimpleMessage::new()
        .with_header(HeaderField::JMSPriority, Value::Int(4))
        .with_header(HeaderField::JMSType, Value::String("trade.v1".into()))
        .with_header(
            HeaderField::JMSDeliveryMode,
            Value::String("PERSISTENT".into()),
        )
        .with_header(HeaderField::JMSMessageID, Value::String("ID:1".into()))
        .with_header(HeaderField::JMSTimestamp, Value::Long(1_700_000_000_000));
    let props: Vec<(&str, Value)> = vec![
        ("t", Value::Bool(true)),
        ("f", Value::Bool(false)),
        ("b3", Value::Byte(3)),
        ("s3", Value::Short(3)),
        ("i3", Value::Int(3)),
        ("l3", Value::Long(3)),
        ("f3", Value::Float(3.0)),
        ("d3", Value::Double(3.0)),
        ("b4", Value::Byte(4)),
        ("s4", Value::Short(4)),
        ("i4", Value::Int(4)),
        ("l4", Value::Long(4)),
        ("f4", Value::Float(4.0)),
        ("d4", Value::Double(4.0)),
        ("i7", Value::Int(7)),
        ("l7", Value::Long(7)),
        ("d7", Value::Double(7.0)),
        ("f7", Value::Float(7.0)),
        ("in7", Value::Int(-7)),
        ("i0", Value::Int(0)),
        ("f01", Value::Float(0.1)),
        ("d01", Value::Double(0.1)),
        ("big1", Value::Long(9_007_199_254_740_993)),
        ("big2", Value::Long(9_007_199_254_740_992)),
        ("i16m", Value::Int(16_777_217)),
        ("imax", Value::Int(i32::MAX)),
        ("imin", Value::Int(i32::MIN)),
        ("lmax", Value::Long(i64::MAX)),
        ("lmin", Value::Long(i64::MIN)),
        ("nan", Value::Double(f64::NAN)),
        ("fnan", Value::Float(f32::NAN)),
        ("inf", Value::Double(f64::INFINITY)),
        ("str", Value::String("abc".into())),
        ("five", Value::String("5".into())),
        ("three", Value::String("3".into())),
        ("tru", Value::String("true".into())),
        ("cur", Value::String("EUR".into())),
        ("region", Value::String("EU-west".into())),
        ("city", Value::String("Zürich ✓".into())),
        ("pct", Value::String("100%".into())),
        ("under", Value::String("a_b".into())),
        ("quote", Value::String("it's".into())),
        ("empty", Value::String(String::new())),
        ("nl", Value::String("line1\nline2".into())),
        ("JMSXGroupID", Value::String("g1".into())),
        ("JMSXDeliveryCount", Value::Int(2)),
        ("JMS_vendor", Value::String("x".into())),
        // A property that shadows a non-selectable header name: the
        // selector must still see NULL.
        ("JMSExpiration", Value::Long(5)),
        ("jmsPriority", Value::Int(9)),
        ("Größe", Value::Int(42)),
        ("$cost", Value::Int(10)),
        ("_id", Value::String("u1".into())),
    ];
    for (k, v) in props {
        m = m.with_property(k, v);
    }
    m
}

/// Parses, panicking with the selector in the message.
pub fn sel(s: &str) -> Selector {
    match Selector::parse(s) {
        Ok(x) => x,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}
