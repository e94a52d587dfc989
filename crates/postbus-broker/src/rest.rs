//! The HTTP messaging API's logic, apart from the web framework: JSON send requests become
//! messages written through the same group commit as STOMP sends; receives take messages
//! under a lease through the SQL API (schema V6), long-polling on the engine's wake-ups; acks
//! and nacks name the receipt a receive returned. docs/http-api.md is the contract.

use std::time::Duration;

use base64::Engine as _;
use postbus_model::{Destination, DestinationKind, NewMessage, Properties};
use postbus_store::{InsertOutcome, InsertRow, LeasedMessage, StoreError, Unit, UnitOutcome};
use serde::{Deserialize, Serialize};

use crate::Engine;
use crate::engine::EngineError;
use crate::selecting::ConsumerSelector;

/// Why a request failed, and so which HTTP status it gets.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the destination does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 503: the database could not be reached or did not answer; nothing was written.
    #[error("{0}")]
    Unavailable(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoSuchQueue(_)
            | EngineError::NoSuchTopic(_)
            | EngineError::TempQueue(_) => ApiError::NotFound(e.to_string()),
            EngineError::BadDestination(_) | EngineError::Subscription(_) => {
                ApiError::BadRequest(e.to_string())
            }
            EngineError::Store(s) => s.into(),
            EngineError::Config(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(m) if m.contains("does not exist") => ApiError::NotFound(m),
            StoreError::Refused(m) | StoreError::NotFound(m) => ApiError::BadRequest(m),
            other => ApiError::Unavailable(format!("{other}; retry later")),
        }
    }
}

/// A message to send, as JSON. The body is `body` (text) or `body_base64` (bytes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub body: Option<String>,
    pub body_base64: Option<String>,
    /// Application properties: strings, booleans and numbers (integers are longs, others
    /// doubles, unless `property_types` says otherwise).
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// Java types of properties: string, boolean, byte, short, int, long, float, double.
    #[serde(default)]
    pub property_types: serde_json::Map<String, serde_json::Value>,
    pub content_type: Option<String>,
    /// Idempotent producer id: a second send with it within the queue's window is confirmed
    /// with the first message's id and not enqueued again.
    pub dedup_id: Option<String>,
    pub delay_ms: Option<i64>,
    pub time_to_live_ms: Option<i64>,
    pub priority: Option<i16>,
    pub persistent: Option<bool>,
    pub group_id: Option<String>,
    pub group_seq: Option<i32>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    #[serde(rename = "type")]
    pub jms_type: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Sent {
    pub message_id: String,
    /// True when the dedup id was seen before: nothing was enqueued this time.
    pub duplicate: bool,
}

/// A receive: how many, for how long they are held, how long to wait for the first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    pub max_messages: Option<i32>,
    pub lease_ms: Option<i32>,
    pub wait_ms: Option<u64>,
    pub selector: Option<String>,
}

/// A received message, as JSON: the body as text when it is UTF-8, else base64.
#[derive(Debug, Serialize)]
pub struct Received {
    #[serde(flatten)]
    pub message: LeasedMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// A body as JSON shows it: (text, when it is UTF-8; else base64).
pub fn body_as_json(body: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    }
}

impl From<LeasedMessage> for Received {
    fn from(message: LeasedMessage) -> Self {
        let (body, body_base64) = body_as_json(&message.body);
        Received {
            message,
            body,
            body_base64,
        }
    }
}

/// The longest a receive may wait for a message.
pub const MAX_WAIT_MS: u64 = 60_000;

/// Builds the message of a send request; `user` is the authenticated principal (JMSXUserID).
pub fn new_message(
    req: SendRequest,
    user: Option<&str>,
    now_ms: i64,
) -> Result<NewMessage, ApiError> {
    let bad = ApiError::BadRequest;
    let body = match (req.body, req.body_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| bad(format!("body_base64 is not base64: {e}")))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => return Err(bad("give body or body_base64, not both".into())),
    };
    let mut m = NewMessage::new(body);
    m.sent_at = now_ms;
    for name in req.properties.keys() {
        postbus_model::properties::validate_property_name(name).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(k) = req
        .property_types
        .keys()
        .find(|k| !req.properties.contains_key(*k))
    {
        return Err(bad(format!(
            "property_types names {k:?}, which is not among the properties"
        )));
    }
    m.properties = Properties::from_json(
        Some(&serde_json::Value::Object(req.properties)),
        Some(&serde_json::Value::Object(req.property_types)),
    )
    .map_err(bad)?;
    m.content_type = req.content_type;
    if let Some(p) = req.priority {
        if !(0..=9).contains(&p) {
            return Err(bad(format!("priority {p} is not between 0 and 9")));
        }
        m.priority = p;
    }
    m.persistent = req.persistent.unwrap_or(true);
    match req.delay_ms {
        Some(d) if d < 0 => return Err(bad("delay_ms must be 0 or more".into())),
        Some(d) if d > 0 => m.deliver_at = Some(now_ms.saturating_add(d)),
        _ => {}
    }
    match req.time_to_live_ms {
        Some(t) if t < 0 => return Err(bad("time_to_live_ms must be 0 or more".into())),
        Some(t) if t > 0 => m.expires_at = now_ms.saturating_add(t),
        _ => {}
    }
    if req
        .dedup_id
        .as_deref()
        .is_some_and(|d| d.is_empty() || d.len() > 1024)
    {
        return Err(bad("dedup_id must be 1 to 1024 bytes".into()));
    }
    m.dedup_id = req.dedup_id;
    m.group_id = req.group_id.filter(|g| !g.is_empty());
    m.group_seq = req.group_seq;
    m.correlation_id = req.correlation_id;
    m.reply_to = req.reply_to;
    m.jms_type = req.jms_type;
    m.traceparent = req.traceparent;
    m.tracestate = req.tracestate.filter(|s| !s.is_empty());
    m.user_id = user.map(str::to_owned);
    Ok(m)
}

/// Sends one message to a queue, topic or (existing) temporary queue and waits for the commit.
pub async fn send(
    engine: &Engine,
    destination: &Destination,
    mut message: NewMessage,
) -> Result<Sent, ApiError> {
    // A traced message: the broker's send span continues the caller's trace (as for STOMP).
    let mut span = None;
    if let (Some(otel), Some(tp)) = (engine.otel(), message.traceparent.clone())
        && let Some((s, ours)) =
            otel.send(&destination.to_stomp(), &tp, message.tracestate.as_deref())
    {
        message.traceparent = Some(ours);
        span = Some(s);
    }
    let row = match destination.kind {
        DestinationKind::Queue => {
            let q = engine.resolve_send_target(destination).await?;
            q.insert_row(message, destination)
        }
        DestinationKind::TempQueue => {
            let q = engine.temp_queue(&destination.name, false).await?;
            q.insert_row(message, destination)
        }
        DestinationKind::Topic => {
            let t = engine.topic(&destination.name).await?;
            InsertRow {
                queue_id: t.id,
                dedup_window_ms: t.settings.dedup_window_ms,
                message,
                pre_claimed: false,
                audited: t.settings.audit_messages.then(|| destination.to_stomp()),
                topic: Some(t.name),
            }
        }
        DestinationKind::Subscription => {
            return Err(ApiError::BadRequest(
                "cannot send to a subscription: send to its topic".into(),
            ));
        }
    };
    let unit = Unit {
        inserts: vec![row],
        ..Default::default()
    };
    let written = engine.write(engine.next_id(), unit).await;
    if let Some(mut span) = span {
        use opentelemetry::trace::Span as _;
        if written.is_err() {
            span.set_status(opentelemetry::trace::Status::error("not committed"));
        }
        span.end();
    }
    let outcome =
        written.map_err(|e| ApiError::Unavailable(format!("{e}; retry with the same dedup_id")))?;
    match outcome {
        UnitOutcome::Committed { inserted, .. } => match inserted.first() {
            Some(InsertOutcome::Stored(id)) => Ok(Sent {
                message_id: id.to_string(),
                duplicate: false,
            }),
            Some(InsertOutcome::Duplicate(first)) => Ok(Sent {
                message_id: first.map(|id| id.to_string()).unwrap_or_default(),
                duplicate: true,
            }),
            None => Err(ApiError::Unavailable("the send was not recorded".into())),
        },
        UnitOutcome::Rejected(why) => Err(ApiError::BadRequest(why)),
        UnitOutcome::AlreadyCommitted => Err(ApiError::BadRequest(
            "the send was recorded as committed before".into(),
        )),
    }
}

/// Receives from a queue, temporary queue or subscription (`destination` in the SQL API's
/// form, e.g. `/queue/orders`), waiting up to `wait_ms` for the first message.
pub async fn receive(
    engine: &Engine,
    destination: &str,
    req: ReceiveRequest,
) -> Result<Vec<Received>, ApiError> {
    let max = req.max_messages.unwrap_or(1);
    if !(1..=1000).contains(&max) {
        return Err(ApiError::BadRequest(format!(
            "max_messages {max} is not between 1 and 1000"
        )));
    }
    let lease_ms = req.lease_ms.unwrap_or(30_000);
    if !(1..=postbus_store::MAX_LEASE_MS).contains(&lease_ms) {
        return Err(ApiError::BadRequest(format!(
            "lease_ms {lease_ms} is not between 1 and {} (12 hours)",
            postbus_store::MAX_LEASE_MS
        )));
    }
    let wait = Duration::from_millis(req.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let selector = match req.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(text) => Some(
            ConsumerSelector::parse(text, &engine.config().selector_limits())
                .map_err(ApiError::BadRequest)?,
        ),
        None => None,
    };
    let store = engine.store();
    let deadline = tokio::time::Instant::now() + wait;
    // A queue nobody sent to yet has no id to wait on: then only the poll looks again.
    let signal = match store.destination_id(destination).await? {
        Some(id) => engine.messages_signal(id),
        None => std::sync::Arc::new(tokio::sync::Notify::new()),
    };
    loop {
        // Listen before looking, so a wake-up between the look and the wait is not missed.
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let got = match &selector {
            Some(s) => {
                store
                    .lease_receive_selected(destination, max, lease_ms, &s.selector, &s.filter)
                    .await?
            }
            None => store.lease_receive(destination, max, lease_ms).await?,
        };
        let now = tokio::time::Instant::now();
        if !got.is_empty() || now >= deadline {
            return Ok(got.into_iter().map(Received::from).collect());
        }
        // Wake-ups are hints: look again at least every second (the poll behind them).
        let nap = (deadline - now).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(nap, notified).await;
    }
}

/// Acknowledges (`ack`) or negatively acknowledges a received message by its receipt; false
/// when it was no longer held (already settled, or its lease ran out).
pub async fn settle(
    engine: &Engine,
    receipt: &str,
    ack: bool,
    error: Option<&str>,
) -> Result<bool, ApiError> {
    // Over HTTP only receipts settle: they are fenced to the delivery that returned them.
    if receipt.starts_with("ID:") {
        return Err(ApiError::BadRequest(format!(
            "{receipt} is a message id: acknowledge by the receipt the receive returned"
        )));
    }
    let store = engine.store();
    Ok(if ack {
        store.lease_ack(receipt).await?
    } else {
        store.lease_nack(receipt, error).await?
    })
}
