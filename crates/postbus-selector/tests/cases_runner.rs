//! The `postbus selector test` runner: JSON lines in, one result per case.

use postbus_selector::ParseLimits;
use postbus_selector::cases::{CaseResult, Outcome, message_from_json, run_cases, summary_line};
use postbus_selector::{HeaderField, MessageView, Value};

fn run(input: &str) -> Vec<CaseResult> {
    run_cases(input, &ParseLimits::default())
}

#[test]
fn example_from_the_brief() {
    let input = r#"{"id": "c1", "selector": "amount > 10", "message": {"headers": {"JMSPriority": 4, "JMSType": "trade.v1", "JMSDeliveryMode": "PERSISTENT", "JMSCorrelationID": null, "JMSMessageID": "ID:1", "JMSTimestamp": 1700000000000}, "properties": {"amount": {"type": "double", "value": 15000.5}, "qty": {"type": "int", "value": 7}}}, "expect": "match"}"#;
    let r = run(input);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id, "c1");
    assert_eq!(r[0].outcome, Outcome::Match);
    assert!(r[0].pass);
    assert_eq!(r[0].line, 1);
    assert_eq!(
        serde_json::to_string(&r[0]).unwrap(),
        r#"{"id":"c1","outcome":"match","expected":"match","pass":true,"error":null}"#
    );
}

#[test]
fn every_property_type() {
    let input = r#"
{"id": "string", "selector": "s = 'x'", "message": {"properties": {"s": {"type": "string", "value": "x"}}}, "expect": "match"}
{"id": "boolean", "selector": "b", "message": {"properties": {"b": {"type": "boolean", "value": true}}}, "expect": "match"}
{"id": "byte", "selector": "v / 2 = 63", "message": {"properties": {"v": {"type": "byte", "value": 127}}}, "expect": "match"}
{"id": "short", "selector": "v = -32768", "message": {"properties": {"v": {"type": "short", "value": -32768}}}, "expect": "match"}
{"id": "int", "selector": "v / 2 = 3", "message": {"properties": {"v": {"type": "int", "value": 7}}}, "expect": "match"}
{"id": "long-exact", "selector": "v = 9007199254740993", "message": {"properties": {"v": {"type": "long", "value": 9007199254740993}}}, "expect": "match"}
{"id": "long-not-rounded", "selector": "v = 9007199254740992", "message": {"properties": {"v": {"type": "long", "value": 9007199254740993}}}, "expect": "nomatch"}
{"id": "long-min", "selector": "v = -9223372036854775808", "message": {"properties": {"v": {"type": "long", "value": -9223372036854775808}}}, "expect": "match"}
{"id": "float", "selector": "v = 0.1", "message": {"properties": {"v": {"type": "float", "value": 0.1}}}, "expect": "nomatch"}
{"id": "float-f", "selector": "v = 0.1F", "message": {"properties": {"v": {"type": "float", "value": 0.1}}}, "expect": "match"}
{"id": "double", "selector": "v = 0.1", "message": {"properties": {"v": {"type": "double", "value": 0.1}}}, "expect": "match"}
{"id": "double-int-json", "selector": "v / 2 = 3.5", "message": {"properties": {"v": {"type": "double", "value": 7}}}, "expect": "match"}
{"id": "nan", "selector": "v <> v", "message": {"properties": {"v": {"type": "double", "value": "NaN"}}}, "expect": "match"}
{"id": "inf", "selector": "v > 1E308", "message": {"properties": {"v": {"type": "float", "value": "Infinity"}}}, "expect": "match"}
{"id": "null-property", "selector": "v IS NULL", "message": {"properties": {"v": null}}, "expect": "match"}
{"id": "headers", "selector": "JMSPriority = 4 AND JMSType = 'trade.v1' AND JMSDeliveryMode = 'PERSISTENT' AND JMSMessageID = 'ID:1' AND JMSTimestamp = 1700000000000 AND JMSCorrelationID IS NULL", "message": {"headers": {"JMSPriority": 4, "JMSType": "trade.v1", "JMSDeliveryMode": "PERSISTENT", "JMSCorrelationID": null, "JMSMessageID": "ID:1", "JMSTimestamp": 1700000000000, "JMSExpiration": 0}}, "expect": "match"}
{"id": "no-message", "selector": "x IS NULL", "expect": "match"}
{"id": "unknown-keys", "selector": "TRUE", "comment": "ignored", "message": {"extra": 1, "properties": {"x": {"type": "int", "value": 1, "note": "ignored"}}}, "expect": "match"}
"#;
    let r = run(input);
    assert_eq!(r.len(), 18);
    for c in &r {
        assert!(c.pass, "{c:?}");
        assert_eq!(c.error, None, "{c:?}");
    }
    assert_eq!(r[0].line, 2);
    assert_eq!(summary_line(&r), "18 passed, 0 failed");
}

#[test]
fn invalid_selectors() {
    let input = "{\"id\": \"bad\", \"selector\": \"amount >\", \"expect\": \"invalid\"}\n\
                 {\"id\": \"bad-but-expected-match\", \"selector\": \"a ==\", \"expect\": \"match\"}\n\
                 {\"id\": \"good-but-expected-invalid\", \"selector\": \"a = 1\", \"expect\": \"invalid\"}";
    let r = run(input);
    assert_eq!(r[0].outcome, Outcome::Invalid);
    assert!(r[0].pass);
    assert_eq!(
        r[0].error.as_deref(),
        Some("selector error at column 9: expected a value after '>'")
    );
    assert_eq!(r[1].outcome, Outcome::Invalid);
    assert!(!r[1].pass);
    assert_eq!(r[2].outcome, Outcome::NoMatch);
    assert!(!r[2].pass);
    assert_eq!(summary_line(&r), "1 passed, 2 failed");
    let json = serde_json::to_value(&r[1]).unwrap();
    assert_eq!(json["expected"], "match");
    assert_eq!(json["outcome"], "invalid");
    assert_eq!(json["pass"], false);
}

#[test]
fn malformed_lines_fail_with_their_line_number() {
    let input = [
        r#"not json"#,
        r#"[1, 2]"#,
        r#"{"id": "no-expect", "selector": "TRUE"}"#,
        r#"{"id": "bad-expect", "selector": "TRUE", "expect": "yes"}"#,
        r#"{"id": "no-selector", "expect": "match"}"#,
        r#"{"id": "bad-type", "selector": "TRUE", "message": {"properties": {"x": {"type": "decimal", "value": 1}}}, "expect": "match"}"#,
        r#"{"id": "byte-range", "selector": "TRUE", "message": {"properties": {"x": {"type": "byte", "value": 128}}}, "expect": "match"}"#,
        r#"{"id": "int-range", "selector": "TRUE", "message": {"properties": {"x": {"type": "int", "value": 2147483648}}}, "expect": "match"}"#,
        r#"{"id": "long-range", "selector": "TRUE", "message": {"properties": {"x": {"type": "long", "value": 9223372036854775808}}}, "expect": "match"}"#,
        r#"{"id": "long-fraction", "selector": "TRUE", "message": {"properties": {"x": {"type": "long", "value": 1.5}}}, "expect": "match"}"#,
        r#"{"id": "float-range", "selector": "TRUE", "message": {"properties": {"x": {"type": "float", "value": 1e39}}}, "expect": "match"}"#,
        r#"{"id": "string-type", "selector": "TRUE", "message": {"properties": {"x": {"type": "string", "value": 5}}}, "expect": "match"}"#,
        r#"{"id": "bool-type", "selector": "TRUE", "message": {"properties": {"x": {"type": "boolean", "value": "true"}}}, "expect": "match"}"#,
        r#"{"id": "no-value", "selector": "TRUE", "message": {"properties": {"x": {"type": "int"}}}, "expect": "match"}"#,
        r#"{"id": "bare-value", "selector": "TRUE", "message": {"properties": {"x": 5}}, "expect": "match"}"#,
        r#"{"id": "priority", "selector": "TRUE", "message": {"headers": {"JMSPriority": "high"}}, "expect": "match"}"#,
        r#"{"id": "mode", "selector": "TRUE", "message": {"headers": {"JMSDeliveryMode": "FAST"}}, "expect": "match"}"#,
        r#"{"id": "timestamp", "selector": "TRUE", "message": {"headers": {"JMSTimestamp": 1.5}}, "expect": "match"}"#,
        "",
        r#"{"selector": "TRUE", "message": [], "expect": "match"}"#,
    ]
    .join("\n");
    let r = run(&input);
    assert_eq!(r.len(), 19);
    for c in &r {
        assert!(!c.pass, "{c:?}");
        assert_eq!(c.outcome, Outcome::Invalid);
        let err = c.error.as_deref().unwrap_or_default();
        assert!(err.starts_with(&format!("line {}: ", c.line)), "{c:?}");
    }
    assert_eq!(r[0].id, "line 1");
    assert_eq!(r[0].expected, None);
    assert_eq!(r[2].id, "no-expect");
    assert_eq!(r[4].expected, Some(Outcome::Match));
    assert!(r[6].error.as_deref().unwrap().contains("out of range"));
    assert!(r[8].error.as_deref().unwrap().contains("out of range"));
    assert!(r[9].error.as_deref().unwrap().contains("integer"));
    assert_eq!(r[18].line, 20);
    assert_eq!(r[18].id, "line 20");
    let json = serde_json::to_string(&r[0]).unwrap();
    assert!(json.starts_with(r#"{"id":"line 1","outcome":"invalid","expected":null,"pass":false,"error":"line 1: invalid JSON"#), "{json}");
}

#[test]
fn blank_lines_and_crlf() {
    let input = "\r\n{\"id\":\"a\",\"selector\":\"TRUE\",\"expect\":\"match\"}\r\n   \r\n{\"id\":7,\"selector\":\"FALSE\",\"expect\":\"nomatch\"}\r\n";
    let r = run(input);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|c| c.pass));
    assert_eq!((r[0].line, r[1].line), (2, 4));
    assert_eq!(r[1].id, "7");
}

#[test]
fn limits_are_applied() {
    let input = r#"{"id": "deep", "selector": "((((a = 1))))", "expect": "match"}"#;
    let r = run_cases(
        input,
        &ParseLimits {
            max_length: 100,
            max_depth: 3,
        },
    );
    assert_eq!(r[0].outcome, Outcome::Invalid);
    assert!(r[0].error.as_deref().unwrap().contains("nested too deeply"));
}

#[test]
fn message_builder() {
    let m = message_from_json(&serde_json::json!({
        "headers": {"JMSPriority": 9, "JMSType": null},
        "properties": {"f": {"type": "float", "value": 16777217}, "l": {"type": "long", "value": -1}}
    }))
    .unwrap();
    assert_eq!(m.header(HeaderField::JMSPriority), Some(Value::Int(9)));
    assert_eq!(m.header(HeaderField::JMSType), None);
    assert_eq!(m.property("f"), Some(Value::Float(16_777_216.0)));
    assert_eq!(m.property("l"), Some(Value::Long(-1)));
}
