//! Messages: what a producer hands the broker, and what the store hands back for delivery.

use std::fmt;

use bytes::Bytes;

use crate::properties::Properties;

/// A broker-assigned message id. Its text form is `ID:<n>`; `n` comes from a PostgreSQL
/// sequence, so an id is never reused, even across restarts and brokers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub i64);

impl MessageId {
    /// Parses `ID:<n>`.
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("ID:")
            .and_then(|n| n.parse().ok())
            .map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ID:{}", self.0)
    }
}

/// JMSDeliveryMode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Persistent,
    NonPersistent,
}

impl DeliveryMode {
    pub fn as_jms_str(self) -> &'static str {
        match self {
            DeliveryMode::Persistent => "PERSISTENT",
            DeliveryMode::NonPersistent => "NON_PERSISTENT",
        }
    }
}

/// A message as a producer sent it, validated, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub persistent: bool,
    /// JMSPriority 0..=9.
    pub priority: i16,
    /// JMSTimestamp, ms.
    pub sent_at: i64,
    /// JMSExpiration, absolute ms; 0 = never.
    pub expires_at: i64,
    /// JMSDeliveryTime, absolute ms; None = now.
    pub deliver_at: Option<i64>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub jms_type: Option<String>,
    pub group_id: Option<String>,
    pub group_seq: Option<i32>,
    /// JMSXUserID: always the authenticated principal, never the client's claim.
    pub user_id: Option<String>,
    /// Idempotent-producer id.
    pub dedup_id: Option<String>,
    /// W3C trace context of the producer.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub properties: Properties,
}

impl NewMessage {
    /// A persistent message with default header fields and the given body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        NewMessage {
            body: body.into(),
            content_type: None,
            persistent: true,
            priority: 4,
            sent_at: crate::now_ms(),
            expires_at: 0,
            deliver_at: None,
            correlation_id: None,
            reply_to: None,
            jms_type: None,
            group_id: None,
            group_seq: None,
            user_id: None,
            dedup_id: None,
            traceparent: None,
            tracestate: None,
            properties: Properties::default(),
        }
    }
}

/// A message read from the store for delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub queue_id: i32,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub persistent: bool,
    pub priority: i16,
    pub sent_at: i64,
    pub expires_at: i64,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub jms_type: Option<String>,
    pub group_id: Option<String>,
    pub group_seq: Option<i32>,
    pub user_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub properties: Properties,
    /// Deliveries that ended without an ack so far; JMSXDeliveryCount = this + 1.
    pub delivery_count: i32,
    /// Why the message is in a dead-letter queue, if it is.
    pub dlq_reason: Option<String>,
    /// The destination it was first sent to, when it has moved (dead-letter, expiry).
    pub original_destination: Option<String>,
    pub last_error: Option<String>,
    /// A topic copy: the id of the published message (its JMSMessageID, the same in every
    /// subscription's copy); `id` is then this copy's own id, which acks name.
    pub publish_id: Option<MessageId>,
    /// A topic copy: the topic it was published to.
    pub topic: Option<String>,
}

impl StoredMessage {
    /// The JMSMessageID: the published message's id for a topic copy, else the row's.
    pub fn message_id(&self) -> MessageId {
        self.publish_id.unwrap_or(self.id)
    }

    /// True when the message has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at > 0 && self.expires_at <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_text_form() {
        assert_eq!(MessageId(42).to_string(), "ID:42");
        assert_eq!(MessageId::parse("ID:42"), Some(MessageId(42)));
        assert_eq!(MessageId::parse("42"), None);
        assert_eq!(MessageId::parse("ID:x"), None);
    }
}
