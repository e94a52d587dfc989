//! SEND frames to messages: the header mapping of docs/stomp.md, validated. Every bad value is
//! refused with a message that names the header and what would be accepted.

use std::collections::BTreeMap;

use postbus_model::properties::{TYPES_HEADER, parse_types_header};
use postbus_model::{Destination, NewMessage, PropertyType, PropertyValue};
use postbus_stomp::Frame;

/// Headers with a meaning of their own: never application properties.
const RESERVED: &[&str] = &[
    "destination",
    "transaction",
    "receipt",
    "content-length",
    "content-type",
    "persistent",
    "priority",
    "expires",
    "expiration",
    "ttl",
    "correlation-id",
    "reply-to",
    "type",
    "JMSXGroupID",
    "JMSXGroupSeq",
    "delay",
    "AMQ_SCHEDULED_DELAY",
    "deliver-at",
    "AMQ_SCHEDULED_TIME",
    "dedup-id",
    "_AMQ_DUPL_ID",
    "traceparent",
    "tracestate",
    TYPES_HEADER,
    // Set by the broker; a client's value is ignored (JMSXUserID is always the principal).
    "message-id",
    "timestamp",
    "redelivered",
    "JMSXDeliveryCount",
    "JMSXUserID",
    "subscription",
    "ack",
];

/// A parsed SEND.
pub struct SendRequest {
    pub destination: Destination,
    pub message: NewMessage,
    pub transaction: Option<String>,
    pub receipt: Option<String>,
}

/// Parses and validates a SEND frame. `user` is the authenticated principal (JMSXUserID).
pub fn parse_send(frame: &Frame, user: Option<&str>, now_ms: i64) -> Result<SendRequest, String> {
    let dest = frame
        .header("destination")
        .ok_or("SEND needs a destination header, e.g. destination:/queue/orders")?;
    let destination = Destination::parse_stomp(dest).map_err(|e| e.to_string())?;
    let mut m = NewMessage::new(frame.body.clone());
    m.sent_at = now_ms;
    m.content_type = frame.header("content-type").map(str::to_owned);
    if let Some(p) = frame.header("persistent") {
        m.persistent = match p {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "persistent:{other} is not valid: use true or false"
                ));
            }
        };
    }
    if let Some(p) = frame.header("priority") {
        m.priority = p
            .parse::<i16>()
            .ok()
            .filter(|p| (0..=9).contains(p))
            .ok_or_else(|| format!("priority:{p} is not valid: use an integer from 0 to 9"))?;
    }
    if let Some(e) = frame.header("expires") {
        let v = parse_ms("expires", e)?;
        m.expires_at = v;
    } else if let Some(t) = frame.header("ttl").or_else(|| frame.header("expiration")) {
        let v = parse_ms("ttl", t)?;
        m.expires_at = if v == 0 { 0 } else { now_ms.saturating_add(v) };
    }
    if let Some(d) = frame
        .header("delay")
        .or_else(|| frame.header("AMQ_SCHEDULED_DELAY"))
    {
        let v = parse_ms("delay", d)?;
        if v > 0 {
            m.deliver_at = Some(now_ms.saturating_add(v));
        }
    } else if let Some(t) = frame
        .header("deliver-at")
        .or_else(|| frame.header("AMQ_SCHEDULED_TIME"))
    {
        m.deliver_at = Some(parse_ms("deliver-at", t)?);
    }
    m.correlation_id = frame.header("correlation-id").map(str::to_owned);
    m.reply_to = frame.header("reply-to").map(str::to_owned);
    m.jms_type = frame.header("type").map(str::to_owned);
    m.group_id = frame
        .header("JMSXGroupID")
        .filter(|g| !g.is_empty())
        .map(str::to_owned);
    if let Some(s) = frame.header("JMSXGroupSeq") {
        m.group_seq = Some(
            s.parse()
                .map_err(|_| format!("JMSXGroupSeq:{s} is not valid: use a 32-bit integer"))?,
        );
    }
    m.dedup_id = frame
        .header("dedup-id")
        .or_else(|| frame.header("_AMQ_DUPL_ID"))
        .map(str::to_owned);
    if m.dedup_id
        .as_deref()
        .is_some_and(|d| d.is_empty() || d.len() > 1024)
    {
        return Err("dedup-id must be 1 to 1024 bytes".into());
    }
    m.traceparent = frame.header("traceparent").map(str::to_owned);
    m.tracestate = frame
        .header("tracestate")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    m.user_id = user.map(str::to_owned);

    let types: BTreeMap<String, PropertyType> = match frame.header(TYPES_HEADER) {
        Some(t) => parse_types_header(t).map_err(|e| e.to_string())?,
        None => BTreeMap::new(),
    };
    for (name, value) in &frame.headers {
        if RESERVED.contains(&name.as_str()) || m.properties.get(name).is_some() {
            // Reserved, or a repeated header (the first occurrence wins, as STOMP 1.2 says).
            continue;
        }
        let ty = types.get(name).copied().unwrap_or(PropertyType::String);
        let v = PropertyValue::parse_as(ty, value).map_err(|e| format!("header {name}: {e}"))?;
        m.properties.insert(name.clone(), v);
    }
    if let Some(missing) = types.keys().find(|k| m.properties.get(k).is_none()) {
        return Err(format!(
            "{TYPES_HEADER} declares {missing:?} but the frame has no such header"
        ));
    }
    Ok(SendRequest {
        destination,
        message: m,
        transaction: frame.header("transaction").map(str::to_owned),
        receipt: frame.header("receipt").map(str::to_owned),
    })
}

fn parse_ms(name: &str, v: &str) -> Result<i64, String> {
    v.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        format!("{name}:{v} is not valid: use a non-negative integer number of milliseconds")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postbus_stomp::Command;

    fn send(headers: &[(&str, &str)]) -> Frame {
        let mut f = Frame::new(Command::Send)
            .with_header("destination", "/queue/q")
            .with_body("hi");
        for (k, v) in headers {
            f.push_header(*k, *v);
        }
        f
    }

    #[test]
    fn maps_headers() {
        let f = send(&[
            ("priority", "7"),
            ("persistent", "false"),
            ("ttl", "1000"),
            ("delay", "500"),
            ("correlation-id", "c1"),
            ("JMSXGroupID", "g"),
            ("JMSXGroupSeq", "3"),
            ("_AMQ_DUPL_ID", "d1"),
            ("amount", "12.5"),
            ("qty", "3"),
            ("postbus-types", "amount:double,qty:int"),
            ("region", "EU"),
            ("JMSXUserID", "mallory"),
        ]);
        let r = parse_send(&f, Some("alice"), 1_000).unwrap();
        let m = r.message;
        assert_eq!(m.priority, 7);
        assert!(!m.persistent);
        assert_eq!(m.expires_at, 2_000);
        assert_eq!(m.deliver_at, Some(1_500));
        assert_eq!(m.group_seq, Some(3));
        assert_eq!(m.dedup_id.as_deref(), Some("d1"));
        assert_eq!(m.user_id.as_deref(), Some("alice"));
        assert_eq!(
            m.properties.get("amount"),
            Some(&PropertyValue::Double(12.5))
        );
        assert_eq!(m.properties.get("qty"), Some(&PropertyValue::Int(3)));
        assert_eq!(
            m.properties.get("region"),
            Some(&PropertyValue::String("EU".into()))
        );
        assert!(m.properties.get("JMSXUserID").is_none());
    }

    #[test]
    fn refuses_bad_values() {
        for (h, v, needle) in [
            ("priority", "12", "priority:12"),
            ("priority", "x", "priority:x"),
            ("delay", "-5", "delay:-5"),
            ("persistent", "yes", "persistent:yes"),
            ("JMSXGroupSeq", "x", "JMSXGroupSeq"),
            ("postbus-types", "qty:int", "no such header"),
        ] {
            let err = parse_send(&send(&[(h, v)]), None, 0).err().unwrap();
            assert!(err.contains(needle), "{err}");
        }
        let no_dest = Frame::new(Command::Send);
        assert!(
            parse_send(&no_dest, None, 0)
                .err()
                .unwrap()
                .contains("destination")
        );
    }
}
