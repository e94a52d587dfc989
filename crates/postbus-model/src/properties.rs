//! Typed JMS application properties and their two encodings.
//!
//! In PostgreSQL a message's properties are a flat JSON object (`name -> JSON value`), so that
//! selectors can be pushed down as SQL over `properties->>'name'`; the exact Java type of each
//! numeric property (byte, short, int, float) is kept beside it in a small `name -> type` map that
//! is only present when some property is not a string, boolean, long or double.
//!
//! Over STOMP every header is a string. A producer declares types with one header,
//! `postbus-types: amount:double,qty:int` (see docs/stomp.md); headers it does not name are
//! strings, exactly as strict JMS requires.

use std::collections::BTreeMap;
use std::fmt;

/// The STOMP header that declares property types.
pub const TYPES_HEADER: &str = "postbus-types";

/// The Java type of a property value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyType {
    String,
    Boolean,
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
}

impl PropertyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Boolean => "boolean",
            PropertyType::Byte => "byte",
            PropertyType::Short => "short",
            PropertyType::Int => "int",
            PropertyType::Long => "long",
            PropertyType::Float => "float",
            PropertyType::Double => "double",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => PropertyType::String,
            "boolean" => PropertyType::Boolean,
            "byte" => PropertyType::Byte,
            "short" => PropertyType::Short,
            "int" => PropertyType::Int,
            "long" => PropertyType::Long,
            "float" => PropertyType::Float,
            "double" => PropertyType::Double,
            _ => return None,
        })
    }
}

/// One typed property value.
#[derive(Clone, Debug, PartialEq)]
pub enum PropertyValue {
    String(String),
    Boolean(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
}

impl PropertyValue {
    pub fn property_type(&self) -> PropertyType {
        match self {
            PropertyValue::String(_) => PropertyType::String,
            PropertyValue::Boolean(_) => PropertyType::Boolean,
            PropertyValue::Byte(_) => PropertyType::Byte,
            PropertyValue::Short(_) => PropertyType::Short,
            PropertyValue::Int(_) => PropertyType::Int,
            PropertyValue::Long(_) => PropertyType::Long,
            PropertyValue::Float(_) => PropertyType::Float,
            PropertyValue::Double(_) => PropertyType::Double,
        }
    }

    /// Parses the text form of a value of type `ty` (as a STOMP header carries it).
    pub fn parse_as(ty: PropertyType, text: &str) -> Result<Self, String> {
        let bad = |_| format!("{text:?} is not a valid {}", ty.as_str());
        Ok(match ty {
            PropertyType::String => PropertyValue::String(text.to_owned()),
            PropertyType::Boolean => match text {
                "true" => PropertyValue::Boolean(true),
                "false" => PropertyValue::Boolean(false),
                _ => return Err(format!("{text:?} is not a valid boolean (true or false)")),
            },
            PropertyType::Byte => PropertyValue::Byte(text.parse().map_err(bad)?),
            PropertyType::Short => PropertyValue::Short(text.parse().map_err(bad)?),
            PropertyType::Int => PropertyValue::Int(text.parse().map_err(bad)?),
            PropertyType::Long => PropertyValue::Long(text.parse().map_err(bad)?),
            PropertyType::Float => {
                let v: f32 = text
                    .parse()
                    .map_err(|_| format!("{text:?} is not a valid float"))?;
                PropertyValue::Float(v)
            }
            PropertyType::Double => {
                let v: f64 = text
                    .parse()
                    .map_err(|_| format!("{text:?} is not a valid double"))?;
                PropertyValue::Double(v)
            }
        })
    }

    /// The flat JSON form stored in the `properties` column. Floats are stored as the exact
    /// double they promote to, so SQL comparisons see the value Java would compare.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            PropertyValue::String(s) => J::String(s.clone()),
            PropertyValue::Boolean(b) => J::Bool(*b),
            PropertyValue::Byte(v) => J::from(*v),
            PropertyValue::Short(v) => J::from(*v),
            PropertyValue::Int(v) => J::from(*v),
            PropertyValue::Long(v) => J::from(*v),
            // Non-finite numbers have no JSON number form: an object marks them, which the
            // selector pushdown treats as "any number" (NaN or an infinity), never as a string.
            PropertyValue::Float(v) if v.is_finite() => J::from(*v as f64),
            PropertyValue::Double(v) if v.is_finite() => J::from(*v),
            PropertyValue::Float(v) => non_finite(*v as f64),
            PropertyValue::Double(v) => non_finite(*v),
        }
    }

    /// Rebuilds a value from its stored JSON and (optional) declared type.
    pub fn from_json(value: &serde_json::Value, ty: Option<PropertyType>) -> Result<Self, String> {
        use serde_json::Value as J;
        match (value, ty) {
            (J::String(s), None | Some(PropertyType::String)) => {
                Ok(PropertyValue::String(s.clone()))
            }
            (J::String(s), Some(t)) => PropertyValue::parse_as(t, s),
            (J::Bool(b), None | Some(PropertyType::Boolean)) => Ok(PropertyValue::Boolean(*b)),
            (J::Object(o), Some(t @ (PropertyType::Float | PropertyType::Double))) => {
                let v = match o.get(NON_FINITE_KEY).and_then(|v| v.as_str()) {
                    Some("NaN") => f64::NAN,
                    Some("inf") => f64::INFINITY,
                    Some("-inf") => f64::NEG_INFINITY,
                    _ => {
                        return Err(format!(
                            "{} is not a stored non-finite number",
                            J::Object(o.clone())
                        ));
                    }
                };
                Ok(if t == PropertyType::Float {
                    PropertyValue::Float(v as f32)
                } else {
                    PropertyValue::Double(v)
                })
            }
            (J::Number(n), ty) => {
                let ty = ty.unwrap_or(if n.is_i64() {
                    PropertyType::Long
                } else {
                    PropertyType::Double
                });
                // An integral number written with a fraction (5.0) still reads as the integer.
                let int = || {
                    n.as_i64()
                        .or_else(|| {
                            n.as_f64()
                                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                                .map(|f| f as i64)
                        })
                        .ok_or_else(|| format!("{n} is not an integer"))
                };
                Ok(match ty {
                    PropertyType::Byte => PropertyValue::Byte(
                        int()?
                            .try_into()
                            .map_err(|_| format!("{n} out of range for byte"))?,
                    ),
                    PropertyType::Short => PropertyValue::Short(
                        int()?
                            .try_into()
                            .map_err(|_| format!("{n} out of range for short"))?,
                    ),
                    PropertyType::Int => PropertyValue::Int(
                        int()?
                            .try_into()
                            .map_err(|_| format!("{n} out of range for int"))?,
                    ),
                    PropertyType::Long => PropertyValue::Long(int()?),
                    PropertyType::Float => {
                        PropertyValue::Float(n.as_f64().unwrap_or(f64::NAN) as f32)
                    }
                    PropertyType::Double => PropertyValue::Double(n.as_f64().unwrap_or(f64::NAN)),
                    other => return Err(format!("a number cannot be a {}", other.as_str())),
                })
            }
            (other, ty) => Err(format!(
                "{other} cannot be a property value of type {}",
                ty.map(PropertyType::as_str).unwrap_or("(unspecified)")
            )),
        }
    }
}

impl fmt::Display for PropertyValue {
    /// The text form used in STOMP headers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::String(s) => f.write_str(s),
            PropertyValue::Boolean(b) => write!(f, "{b}"),
            PropertyValue::Byte(v) => write!(f, "{v}"),
            PropertyValue::Short(v) => write!(f, "{v}"),
            PropertyValue::Int(v) => write!(f, "{v}"),
            PropertyValue::Long(v) => write!(f, "{v}"),
            PropertyValue::Float(v) => write!(f, "{v}"),
            PropertyValue::Double(v) => write!(f, "{v}"),
        }
    }
}

/// The key of the object that stores a NaN or an infinity: `{"nonfinite": "NaN"|"inf"|"-inf"}`.
pub const NON_FINITE_KEY: &str = "nonfinite";

fn non_finite(v: f64) -> serde_json::Value {
    let text = if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    };
    serde_json::json!({ NON_FINITE_KEY: text })
}

/// Why a property set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("property name {0:?} is not a Java identifier")]
    BadName(String),
    #[error("property name {0:?} is reserved: names starting with JMS belong to the broker")]
    Reserved(String),
    #[error("bad {TYPES_HEADER} entry {entry:?}: {reason}")]
    BadTypeDeclaration { entry: String, reason: String },
    #[error("property {name:?}: {reason}")]
    BadValue { name: String, reason: String },
}

/// A message's application properties, ordered by name for a stable encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties(pub BTreeMap<String, PropertyValue>);

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&PropertyValue> {
        self.0.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, value: PropertyValue) {
        self.0.insert(name.into(), value);
    }

    /// The flat JSON object for the `properties` column, or None when there are none.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        if self.0.is_empty() {
            return None;
        }
        Some(serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ))
    }

    /// The type map for the `property_types` column: only the types the JSON form cannot tell
    /// (byte, short, int, float, and non-finite doubles); None when the JSON says it all.
    pub fn types_json(&self) -> Option<serde_json::Value> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .filter(|(_, v)| match v {
                PropertyValue::Byte(_)
                | PropertyValue::Short(_)
                | PropertyValue::Int(_)
                | PropertyValue::Float(_) => true,
                PropertyValue::Double(d) => !d.is_finite(),
                _ => false,
            })
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::Value::String(v.property_type().as_str().to_owned()),
                )
            })
            .collect();
        if map.is_empty() {
            None
        } else {
            Some(serde_json::Value::Object(map))
        }
    }

    /// Rebuilds properties from the two stored columns.
    pub fn from_json(
        values: Option<&serde_json::Value>,
        types: Option<&serde_json::Value>,
    ) -> Result<Self, String> {
        let mut out = Properties::default();
        let Some(serde_json::Value::Object(values)) = values else {
            return Ok(out);
        };
        for (name, value) in values {
            let ty = types
                .and_then(|t| t.get(name))
                .and_then(|t| t.as_str())
                .and_then(PropertyType::parse);
            out.0.insert(
                name.clone(),
                PropertyValue::from_json(value, ty).map_err(|e| format!("property {name}: {e}"))?,
            );
        }
        Ok(out)
    }

    /// The `postbus-types` header value for these properties (non-string ones), or None.
    pub fn types_header(&self) -> Option<String> {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, v)| !matches!(v, PropertyValue::String(_)))
            .map(|(k, v)| format!("{k}:{}", v.property_type().as_str()))
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(","))
        }
    }
}

/// Parses a `postbus-types` header: `name:type` pairs separated by commas.
pub fn parse_types_header(value: &str) -> Result<BTreeMap<String, PropertyType>, PropertyError> {
    let mut out = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| PropertyError::BadTypeDeclaration {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, ty) = entry
            .split_once(':')
            .ok_or_else(|| bad("expected name:type"))?;
        let ty = PropertyType::parse(ty.trim()).ok_or_else(|| {
            bad("type must be one of string, boolean, byte, short, int, long, float, double")
        })?;
        out.insert(name.trim().to_owned(), ty);
    }
    Ok(out)
}

/// Checks a property name: a Java identifier that does not start with `JMS`.
pub fn validate_property_name(name: &str) -> Result<(), PropertyError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$');
    if !first_ok || !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
        return Err(PropertyError::BadName(name.to_owned()));
    }
    if name.starts_with("JMS") {
        return Err(PropertyError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_types() {
        let mut p = Properties::default();
        p.insert("s", PropertyValue::String("EUR".into()));
        p.insert("b", PropertyValue::Boolean(true));
        p.insert("i", PropertyValue::Int(7));
        p.insert("l", PropertyValue::Long(9_007_199_254_740_993));
        p.insert("f", PropertyValue::Float(0.1));
        p.insert("d", PropertyValue::Double(15000.5));
        p.insert("y", PropertyValue::Byte(-3));
        p.insert("h", PropertyValue::Short(300));
        p.insert("nan", PropertyValue::Double(f64::NAN));
        p.insert("inf", PropertyValue::Float(f32::INFINITY));
        p.insert("ninf", PropertyValue::Double(f64::NEG_INFINITY));
        let values = p.to_json().unwrap();
        let types = p.types_json().unwrap();
        assert_eq!(values["l"].as_i64(), Some(9_007_199_254_740_993));
        assert_eq!(values["f"].as_f64(), Some(0.1f32 as f64));
        assert!(
            values["nan"].is_object(),
            "non-finite numbers are never JSON strings"
        );
        let back = Properties::from_json(Some(&values), Some(&types)).unwrap();
        // NaN != NaN, so compare the text forms.
        assert_eq!(format!("{back:?}"), format!("{p:?}"));
    }

    #[test]
    fn types_header_parses_and_rejects() {
        let t = parse_types_header("amount:double, qty:int").unwrap();
        assert_eq!(t["amount"], PropertyType::Double);
        assert_eq!(t["qty"], PropertyType::Int);
        assert!(parse_types_header("amount").is_err());
        assert!(parse_types_header("amount:decimal").is_err());
    }

    #[test]
    fn names() {
        assert!(validate_property_name("amount_2").is_ok());
        assert!(validate_property_name("région").is_ok());
        assert!(validate_property_name("2x").is_err());
        assert!(validate_property_name("a-b").is_err());
        assert!(matches!(
            validate_property_name("JMSFoo"),
            Err(PropertyError::Reserved(_))
        ));
    }

    #[test]
    fn parse_as_checks_ranges() {
        assert_eq!(
            PropertyValue::parse_as(PropertyType::Byte, "127").unwrap(),
            PropertyValue::Byte(127)
        );
        assert!(PropertyValue::parse_as(PropertyType::Byte, "128").is_err());
        assert!(PropertyValue::parse_as(PropertyType::Boolean, "yes").is_err());
    }
}
