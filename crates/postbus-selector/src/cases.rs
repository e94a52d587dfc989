//! The test-case runner behind `postbus selector test FILE`: pure, so the
//! CLI only reads the file and prints the results.
//!
//! Input is JSON lines, one case per line; blank lines are skipped:
//!
//! ```json
//! {"id": "c1", "selector": "amount > 10",
//!  "message": {"headers": {"JMSPriority": 4, "JMSCorrelationID": null},
//!              "properties": {"amount": {"type": "double", "value": 15000.5}}},
//!  "expect": "match"}
//! ```
//!
//! - `expect` is `match`, `nomatch` or `invalid` (the selector must fail to
//!   parse). Unknown keys anywhere are ignored, as are header names other than
//!   the six selectable headers (a selector cannot see them anyway).
//! - `id` is a string (a number is accepted and printed); without one the
//!   case is called `line N`.
//! - Property `type` is one of `string`, `boolean`, `byte`, `short`, `int`,
//!   `long`, `float`, `double`. Integer types must be JSON integers within
//!   range: `long` is read as a 64-bit integer, never through `f64`. `float`
//!   and `double` also accept the strings `"NaN"`, `"Infinity"` and
//!   `"-Infinity"`. A `float` is read as the `double` nearest to the JSON text
//!   and then rounded to `float` via its shortest text, which equals direct
//!   decimal-to-float rounding for any JSON text of up to 15 significant
//!   digits. A property given as `null` is absent.
//! - Headers: `JMSPriority` an int, `JMSTimestamp` a long, `JMSDeliveryMode`
//!   `"PERSISTENT"` or `"NON_PERSISTENT"`, the others strings; `null` is NULL.
//!
//! A line that is not valid JSON or breaks these rules is a failing case
//! (`outcome` `invalid`, `pass` false) whose `error` names the line number.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::Selector;
use crate::error::ParseLimits;
use crate::value::{HeaderField, SimpleMessage, Value};

/// The result of a case, or what it is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The selector parsed and matched the message.
    Match,
    /// The selector parsed and did not match (FALSE or UNKNOWN).
    NoMatch,
    /// The selector did not parse (or the case itself was malformed).
    Invalid,
}

impl Outcome {
    /// The spelling used in case files.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::NoMatch => "nomatch",
            Outcome::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "match" => Some(Outcome::Match),
            "nomatch" => Some(Outcome::NoMatch),
            "invalid" => Some(Outcome::Invalid),
            _ => None,
        }
    }
}

/// One case's result. Serialises as
/// `{"id": ..., "outcome": ..., "expected": ..., "pass": ..., "error": ...}`;
/// `expected` is null only for a malformed line whose `expect` could not be
/// read, `error` is null when there is nothing to report (it carries the
/// parse error for invalid selectors, expected or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// The case id, or `line N` when the case has none.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
    /// What the case expected.
    pub expected: Option<Outcome>,
    /// Whether `outcome` equals `expected`.
    pub pass: bool,
    /// The selector's parse error, or what is wrong with the line.
    pub error: Option<String>,
    /// 1-based line number in the input (not serialised).
    #[serde(skip)]
    pub line: usize,
}

/// Runs every case in `input` (JSON lines). Never fails as a whole: each bad
/// line becomes a failing result.
pub fn run_cases(input: &str, limits: &ParseLimits) -> Vec<CaseResult> {
    input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| run_line(l, i + 1, limits))
        .collect()
}

/// `"N passed, M failed"`: the closing line test harnesses recognise.
pub fn summary_line(results: &[CaseResult]) -> String {
    let passed = results.iter().filter(|r| r.pass).count();
    format!("{passed} passed, {} failed", results.len() - passed)
}

fn run_line(line: &str, n: usize, limits: &ParseLimits) -> CaseResult {
    let malformed = |id: Option<String>, expected: Option<Outcome>, msg: String| CaseResult {
        id: id.unwrap_or_else(|| format!("line {n}")),
        outcome: Outcome::Invalid,
        expected,
        pass: false,
        error: Some(format!("line {n}: {msg}")),
        line: n,
    };
    let json: Json = match serde_json::from_str(line) {
        Ok(j) => j,
        Err(e) => return malformed(None, None, format!("invalid JSON: {e}")),
    };
    let Some(obj) = json.as_object() else {
        return malformed(None, None, "a case must be a JSON object".to_owned());
    };
    let id = match obj.get("id") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(x)) => Some(x.to_string()),
        Some(_) => return malformed(None, None, "\"id\" must be a string".to_owned()),
    };
    let expected = match obj.get("expect") {
        Some(Json::String(s)) => match Outcome::parse(s) {
            Some(o) => o,
            None => {
                return malformed(
                    id,
                    None,
                    format!("\"expect\" must be \"match\", \"nomatch\" or \"invalid\", not {s:?}"),
                );
            }
        },
        _ => {
            return malformed(
                id,
                None,
                "\"expect\" is required: \"match\", \"nomatch\" or \"invalid\"".to_owned(),
            );
        }
    };
    let Some(Json::String(selector)) = obj.get("selector") else {
        return malformed(
            id,
            Some(expected),
            "\"selector\" must be a string".to_owned(),
        );
    };
    let message = match obj.get("message") {
        None | Some(Json::Null) => SimpleMessage::new(),
        Some(m) => match message_from_json(m) {
            Ok(m) => m,
            Err(e) => return malformed(id, Some(expected), e),
        },
    };
    let (outcome, error) = match Selector::parse_with_limits(selector, limits) {
        Ok(sel) if sel.matches(&message) => (Outcome::Match, None),
        Ok(_) => (Outcome::NoMatch, None),
        Err(e) => (Outcome::Invalid, Some(e.to_string())),
    };
    CaseResult {
        id: id.unwrap_or_else(|| format!("line {n}")),
        outcome,
        expected: Some(expected),
        pass: outcome == expected,
        error,
        line: n,
    }
}

/// Builds a message from the case format's `message` object
/// (`{"headers": {...}, "properties": {...}}`).
pub fn message_from_json(m: &Json) -> Result<SimpleMessage, String> {
    let obj = m
        .as_object()
        .ok_or_else(|| "\"message\" must be an object".to_owned())?;
    let mut msg = SimpleMessage::new();
    if let Some(h) = obj.get("headers").filter(|h| !h.is_null()) {
        let h = h
            .as_object()
            .ok_or_else(|| "\"headers\" must be an object".to_owned())?;
        for field in HeaderField::ALL {
            let Some(v) = h.get(field.name()) else {
                continue;
            };
            if let Some(v) = header_value(field, v)? {
                msg.headers.insert(field, v);
            }
        }
    }
    if let Some(p) = obj.get("properties").filter(|p| !p.is_null()) {
        let p = p
            .as_object()
            .ok_or_else(|| "\"properties\" must be an object".to_owned())?;
        for (name, desc) in p {
            if let Some(v) = property_value(name, desc)? {
                msg.properties.insert(name.clone(), v);
            }
        }
    }
    Ok(msg)
}

fn header_value(h: HeaderField, v: &Json) -> Result<Option<Value>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let bad = |what: &str| format!("header {h}: expected {what}, found {v}");
    Ok(Some(match h {
        HeaderField::JMSPriority => Value::Int(
            v.as_i64()
                .and_then(|x| i32::try_from(x).ok())
                .ok_or_else(|| bad("an int"))?,
        ),
        HeaderField::JMSTimestamp => Value::Long(v.as_i64().ok_or_else(|| bad("a long"))?),
        HeaderField::JMSDeliveryMode => match v.as_str() {
            Some(s @ ("PERSISTENT" | "NON_PERSISTENT")) => Value::String(s.to_owned()),
            _ => return Err(bad("\"PERSISTENT\" or \"NON_PERSISTENT\"")),
        },
        _ => Value::String(v.as_str().ok_or_else(|| bad("a string"))?.to_owned()),
    }))
}

fn property_value(name: &str, desc: &Json) -> Result<Option<Value>, String> {
    if desc.is_null() {
        return Ok(None);
    }
    let Some(d) = desc.as_object() else {
        return Err(format!(
            "property {name:?}: expected {{\"type\": ..., \"value\": ...}}, found {desc}"
        ));
    };
    let ty =
        field_str(d, "type").ok_or_else(|| format!("property {name:?}: \"type\" is required"))?;
    let v = d
        .get("value")
        .ok_or_else(|| format!("property {name:?}: \"value\" is required"))?;
    let bad = |what: String| format!("property {name:?} ({ty}): {what}");
    let int = |min: i64, max: i64| -> Result<i64, String> {
        match v.as_i64() {
            Some(x) if (min..=max).contains(&x) => Ok(x),
            Some(x) => Err(bad(format!("value {x} is out of range"))),
            None if v.as_u64().is_some() => Err(bad(format!("value {v} is out of range"))),
            None => Err(bad(format!("expected an integer, found {v}"))),
        }
    };
    let special = |s: &str| match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    };
    let float = || -> Result<f64, String> {
        match v {
            Json::Number(x) => x
                .as_f64()
                .ok_or_else(|| bad(format!("expected a number, found {v}"))),
            Json::String(s) => special(s).ok_or_else(|| {
                bad(format!(
                    "expected a number or \"NaN\"/\"Infinity\"/\"-Infinity\", found {v}"
                ))
            }),
            _ => Err(bad(format!("expected a number, found {v}"))),
        }
    };
    Ok(Some(match ty {
        "string" => Value::String(
            v.as_str()
                .ok_or_else(|| bad(format!("expected a string, found {v}")))?
                .to_owned(),
        ),
        "boolean" => Value::Bool(
            v.as_bool()
                .ok_or_else(|| bad(format!("expected true or false, found {v}")))?,
        ),
        "byte" => Value::Byte(int(i8::MIN.into(), i8::MAX.into())? as i8),
        "short" => Value::Short(int(i16::MIN.into(), i16::MAX.into())? as i16),
        "int" => Value::Int(int(i32::MIN.into(), i32::MAX.into())? as i32),
        "long" => Value::Long(int(i64::MIN, i64::MAX)?),
        "double" => Value::Double(float()?),
        "float" => {
            let d = float()?;
            if d.is_finite() {
                // Shortest double text, then correctly rounded to float.
                let f: f32 = format!("{d:?}")
                    .parse()
                    .map_err(|_| bad(format!("bad float {v}")))?;
                if !f.is_finite() {
                    return Err(bad(format!("value {v} is out of range")));
                }
                Value::Float(f)
            } else {
                Value::Float(d as f32)
            }
        }
        other => {
            return Err(format!(
                "property {name:?}: unknown type {other:?} (expected string, boolean, byte, short, int, long, float or double)"
            ));
        }
    }))
}

fn field_str<'a>(d: &'a Map<String, Json>, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Json::as_str)
}
