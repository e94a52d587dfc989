//! Topic fan-out: a message published to a topic gets one copy per subscription whose pattern
//! matches the topic and whose selector accepts the message, decided inside the publishing
//! transaction (so a subscription whose creation committed before the publish looked them up
//! gets its copy, and one created after the publish committed does not). Also the selector's
//! view of a message, shared with the broker's selective consumers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use postbus_model::{NewMessage, PropertyValue, StoredMessage};
use postbus_selector::{HeaderField, MessageView, Selector, Value};

/// The fields a JMS selector reads, borrowed from a stored or a new message.
pub struct SelectorView<'a> {
    message_id: i64,
    persistent: bool,
    priority: i16,
    sent_at: i64,
    correlation_id: Option<&'a str>,
    jms_type: Option<&'a str>,
    group_id: Option<&'a str>,
    group_seq: Option<i32>,
    user_id: Option<&'a str>,
    delivery_count: i32,
    properties: &'a postbus_model::Properties,
}

impl<'a> SelectorView<'a> {
    pub fn of_stored(m: &'a StoredMessage) -> Self {
        SelectorView {
            message_id: m.message_id().0,
            persistent: m.persistent,
            priority: m.priority,
            sent_at: m.sent_at,
            correlation_id: m.correlation_id.as_deref(),
            jms_type: m.jms_type.as_deref(),
            group_id: m.group_id.as_deref(),
            group_seq: m.group_seq,
            user_id: m.user_id.as_deref(),
            delivery_count: m.delivery_count,
            properties: &m.properties,
        }
    }

    /// A message being published under id `message_id` (never delivered yet).
    pub fn of_new(m: &'a NewMessage, message_id: i64) -> Self {
        SelectorView {
            message_id,
            persistent: m.persistent,
            priority: m.priority,
            sent_at: m.sent_at,
            correlation_id: m.correlation_id.as_deref(),
            jms_type: m.jms_type.as_deref(),
            group_id: m.group_id.as_deref(),
            group_seq: m.group_seq,
            user_id: m.user_id.as_deref(),
            delivery_count: 0,
            properties: &m.properties,
        }
    }
}

impl MessageView for SelectorView<'_> {
    fn property(&self, name: &str) -> Option<Value> {
        let text = |s: Option<&str>| s.map(|s| Value::String(s.to_owned()));
        match name {
            "JMSXGroupID" => return text(self.group_id),
            "JMSXGroupSeq" => return self.group_seq.map(Value::Int),
            "JMSXUserID" => return text(self.user_id),
            "JMSXDeliveryCount" => return Some(Value::Int(self.delivery_count + 1)),
            _ => {}
        }
        Some(match self.properties.get(name)? {
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
        match h {
            HeaderField::JMSDeliveryMode => Some(Value::String(
                if self.persistent {
                    "PERSISTENT"
                } else {
                    "NON_PERSISTENT"
                }
                .into(),
            )),
            HeaderField::JMSPriority => Some(Value::Int(self.priority as i32)),
            HeaderField::JMSMessageID => Some(Value::String(format!("ID:{}", self.message_id))),
            HeaderField::JMSTimestamp => Some(Value::Long(self.sent_at)),
            HeaderField::JMSCorrelationID => self.correlation_id.map(|s| Value::String(s.into())),
            HeaderField::JMSType => self.jms_type.map(|s| Value::String(s.into())),
        }
    }
}

/// Subscription selectors parsed once. A selector that no longer parses (it was checked when
/// the subscription was made, so only a hand-edited row) accepts nothing, and says so in the log.
#[derive(Default)]
pub(crate) struct SelectorCache(Mutex<HashMap<String, Option<Arc<Selector>>>>);

/// Most selectors kept parsed; past it the cache starts over (subscriptions come and go).
const MAX_CACHED: usize = 10_000;

impl SelectorCache {
    pub(crate) fn accepts(&self, selector: &str, view: &SelectorView<'_>) -> bool {
        let parsed = {
            let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED && !cache.contains_key(selector) {
                cache.clear();
            }
            cache
                .entry(selector.to_owned())
                .or_insert_with(|| match Selector::parse(selector) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => {
                        tracing::error!(selector, error = %e, "a stored subscription selector does not parse; the subscription gets nothing");
                        None
                    }
                })
                .clone()
        };
        parsed.is_some_and(|s| s.matches(view))
    }
}

/// A subscription a topic's publish may copy to.
pub(crate) struct Candidate {
    pub topic: String,
    pub subscription: i32,
    pub selector: Option<String>,
    /// At its depth limit: gets no copy (the copy is discarded and counted).
    pub full: bool,
}

/// The copies of one batch's publishes.
pub(crate) struct Copies<'a> {
    /// (index of the publish among the batch's inserts, subscription id), in publish order.
    pub copies: Vec<(usize, i32)>,
    /// Publishes going to more than one subscription: (publish id, body), stored once.
    pub payloads: Vec<(i64, &'a [u8])>,
    /// Every subscription that got a copy.
    pub subscriptions: BTreeSet<i32>,
    /// Copies not made because their subscription was at its depth limit.
    pub discarded: Vec<i32>,
}

/// Decides which subscriptions get a copy of each publish. `publishes` are (index, topic,
/// message, publish id).
pub(crate) fn decide<'a>(
    cache: &SelectorCache,
    candidates: &[Candidate],
    publishes: &[(usize, &str, &'a NewMessage, i64)],
) -> Copies<'a> {
    let mut by_topic: HashMap<&str, Vec<&Candidate>> = HashMap::new();
    for c in candidates {
        by_topic.entry(c.topic.as_str()).or_default().push(c);
    }
    let mut out = Copies {
        copies: Vec::new(),
        payloads: Vec::new(),
        subscriptions: BTreeSet::new(),
        discarded: Vec::new(),
    };
    for &(k, topic, message, publish_id) in publishes {
        let view = SelectorView::of_new(message, publish_id);
        let mut n = 0;
        for c in by_topic.get(topic).into_iter().flatten() {
            let accepted = match &c.selector {
                None => true,
                Some(s) => cache.accepts(s, &view),
            };
            if accepted && c.full {
                out.discarded.push(c.subscription);
            } else if accepted {
                out.copies.push((k, c.subscription));
                out.subscriptions.insert(c.subscription);
                n += 1;
            }
        }
        if n > 1 {
            out.payloads.push((publish_id, message.body.as_ref()));
        }
    }
    out
}
