//! Values a selector sees: typed property values, the six selectable header
//! fields, and the [`MessageView`] trait through which the evaluator reads a
//! message without this crate knowing how messages are stored.

use std::collections::BTreeMap;
use std::fmt;

/// A typed JMS property or header value.
///
/// The variants mirror the Java types a JMS property can have, because the
/// selector semantics depend on them: `7 / 2` is `3` for `int` operands but
/// `3.5` for `double`, and a `float` compares as the float it is. Strings are
/// owned: values come from [`MessageView`], which hands out owned data, and the
/// evaluator borrows them for the duration of one comparison, so a borrowed
/// (`Cow`) variant would only move the allocation, not remove it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `boolean`.
    Bool(bool),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `String`.
    String(String),
}

impl Value {
    /// The Java type name, used in messages and by the test-case format.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Byte(_) => "byte",
            Value::Short(_) => "short",
            Value::Int(_) => "int",
            Value::Long(_) => "long",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::String(_) => "string",
        }
    }

    /// Whether the value is one of the six numeric types.
    pub fn is_numeric(&self) -> bool {
        !matches!(self, Value::Bool(_) | Value::String(_))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Byte(v) => write!(f, "{v}"),
            Value::Short(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::String(s) => write!(f, "{s}"),
        }
    }
}

/// The header fields a selector may reference (JMS 2.0 section 3.8.1.1).
///
/// Other JMS headers (`JMSDestination`, `JMSReplyTo`, `JMSExpiration`,
/// `JMSRedelivered`, `JMSDeliveryTime`) are not selectable; identifiers naming
/// them evaluate to NULL (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeaderField {
    /// String `"PERSISTENT"` or `"NON_PERSISTENT"`.
    JMSDeliveryMode,
    /// Int, 0 to 9.
    JMSPriority,
    /// String, may be NULL.
    JMSMessageID,
    /// Long, milliseconds since the Unix epoch.
    JMSTimestamp,
    /// String, may be NULL.
    JMSCorrelationID,
    /// String, may be NULL.
    JMSType,
}

impl HeaderField {
    /// All selectable headers, in declaration order.
    pub const ALL: [HeaderField; 6] = [
        HeaderField::JMSDeliveryMode,
        HeaderField::JMSPriority,
        HeaderField::JMSMessageID,
        HeaderField::JMSTimestamp,
        HeaderField::JMSCorrelationID,
        HeaderField::JMSType,
    ];

    /// The identifier that names this header in a selector (case-sensitive).
    pub fn name(self) -> &'static str {
        match self {
            HeaderField::JMSDeliveryMode => "JMSDeliveryMode",
            HeaderField::JMSPriority => "JMSPriority",
            HeaderField::JMSMessageID => "JMSMessageID",
            HeaderField::JMSTimestamp => "JMSTimestamp",
            HeaderField::JMSCorrelationID => "JMSCorrelationID",
            HeaderField::JMSType => "JMSType",
        }
    }

    /// The header named exactly `name`, if it is one of the six.
    pub fn from_name(name: &str) -> Option<HeaderField> {
        HeaderField::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an identifier in a selector refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentKind {
    /// One of the six selectable headers.
    Header(HeaderField),
    /// A message property, looked up with [`MessageView::property`]. This
    /// includes the JMS-defined `JMSX*` properties and provider-specific
    /// `JMS_*` properties.
    Property,
    /// A name starting with `JMS` that is neither a selectable header nor a
    /// `JMSX`/`JMS_` property: always NULL.
    AlwaysNull,
}

impl IdentKind {
    /// Classifies an identifier. Case matters: `jmsPriority` is a property.
    pub fn of(name: &str) -> IdentKind {
        if let Some(h) = HeaderField::from_name(name) {
            IdentKind::Header(h)
        } else if name.starts_with("JMSX") || name.starts_with("JMS_") {
            IdentKind::Property
        } else if name.starts_with("JMS") {
            IdentKind::AlwaysNull
        } else {
            IdentKind::Property
        }
    }
}

/// Read access to a message for selector evaluation.
///
/// Implementations return `None` for a missing property or a NULL header;
/// the evaluator turns that into SQL NULL semantics.
pub trait MessageView {
    /// The property named exactly `name`, with the type it was set with.
    fn property(&self, name: &str) -> Option<Value>;
    /// A header value: `JMSPriority` as [`Value::Int`], `JMSTimestamp` as
    /// [`Value::Long`], the others as [`Value::String`].
    fn header(&self, h: HeaderField) -> Option<Value>;
}

/// A message held in maps: for tests, the case runner and callers that
/// already have the values at hand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimpleMessage {
    /// Header values; an absent header is NULL.
    pub headers: BTreeMap<HeaderField, Value>,
    /// Property values by exact name.
    pub properties: BTreeMap<String, Value>,
}

impl SimpleMessage {
    /// An empty message: no headers, no properties.
    pub fn new() -> SimpleMessage {
        SimpleMessage::default()
    }

    /// Builder-style: sets a property.
    pub fn with_property(mut self, name: impl Into<String>, value: Value) -> SimpleMessage {
        self.properties.insert(name.into(), value);
        self
    }

    /// Builder-style: sets a header.
    pub fn with_header(mut self, h: HeaderField, value: Value) -> SimpleMessage {
        self.headers.insert(h, value);
        self
    }
}

impl MessageView for SimpleMessage {
    fn property(&self, name: &str) -> Option<Value> {
        self.properties.get(name).cloned()
    }

    fn header(&self, h: HeaderField) -> Option<Value> {
        self.headers.get(&h).cloned()
    }
}
