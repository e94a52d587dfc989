//! A consumer's JMS selector: the parsed expression for the exact decision, and its SQL
//! translation that narrows the claim. Also the view of a stored message the evaluator reads.

use postbus_model::{PropertyValue, StoredMessage};
use postbus_selector::{HeaderField, MessageView, ParseLimits, Selector, SqlFilter, Value};
use postbus_store::{FILTER_FIRST_PARAM, MessagesMapping};

/// A subscription's selector, ready for claims.
pub struct ConsumerSelector {
    pub text: String,
    pub selector: Selector,
    pub filter: SqlFilter,
}

impl ConsumerSelector {
    /// Parses a selector; the error names the column of the fault.
    pub fn parse(text: &str, limits: &ParseLimits) -> Result<ConsumerSelector, String> {
        let selector = Selector::parse_with_limits(text, limits).map_err(|e| e.to_string())?;
        let filter = selector.to_sql(&MessagesMapping, FILTER_FIRST_PARAM);
        Ok(ConsumerSelector {
            text: text.to_owned(),
            selector,
            filter,
        })
    }

    /// The exact decision.
    pub fn matches(&self, m: &StoredMessage) -> bool {
        self.selector.matches(&View(m))
    }
}

/// A stored message as the selector evaluator sees it.
struct View<'a>(&'a StoredMessage);

impl MessageView for View<'_> {
    fn property(&self, name: &str) -> Option<Value> {
        let m = self.0;
        match name {
            "JMSXGroupID" => return m.group_id.clone().map(Value::String),
            "JMSXGroupSeq" => return m.group_seq.map(Value::Int),
            "JMSXUserID" => return m.user_id.clone().map(Value::String),
            "JMSXDeliveryCount" => return Some(Value::Int(m.delivery_count + 1)),
            _ => {}
        }
        Some(match m.properties.get(name)? {
            PropertyValue::String(s) => Value::String(s.clone()),
            PropertyValue::Boolean(b) => Value::Bool(*b),
            PropertyValue::Byte(v) => Value::Byte(*v),
            PropertyValue::Short(v) => Value::Short(*v),
            PropertyValue::Int(v) => Value::Int(*v),
            PropertyValue::Long(v) => Value::Long(*v),
            PropertyValue::Float(v) => Value::Float(*v),
            PropertyValue::Double(v) => Value::Double(*v),
        })
    }

    fn header(&self, h: HeaderField) -> Option<Value> {
        let m = self.0;
        match h {
            HeaderField::JMSDeliveryMode => Some(Value::String(
                if m.persistent {
                    "PERSISTENT"
                } else {
                    "NON_PERSISTENT"
                }
                .into(),
            )),
            HeaderField::JMSPriority => Some(Value::Int(m.priority as i32)),
            HeaderField::JMSMessageID => Some(Value::String(m.message_id().to_string())),
            HeaderField::JMSTimestamp => Some(Value::Long(m.sent_at)),
            HeaderField::JMSCorrelationID => m.correlation_id.clone().map(Value::String),
            HeaderField::JMSType => m.jms_type.clone().map(Value::String),
        }
    }
}
