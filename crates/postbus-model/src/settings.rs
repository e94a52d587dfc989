//! Per-destination settings: redelivery, dead-lettering, dedup window, exclusivity.

use serde::{Deserialize, Serialize};

/// The settings a queue carries in `postbus.destinations`. Defaults follow semantics.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSettings {
    /// Deliveries after which a message moves to the dead-letter queue.
    pub max_deliveries: i32,
    /// Delay before the first redelivery, in ms.
    pub redelivery_delay_ms: i64,
    /// Multiplier applied per further redelivery (1.0 = constant delay).
    pub redelivery_backoff: f64,
    /// Cap on the redelivery delay, in ms.
    pub redelivery_max_delay_ms: i64,
    /// Dead-letter queue name; None means `DLQ.<name>`.
    pub dead_letter_queue: Option<String>,
    /// Where expired messages go; None means they are dropped (and counted).
    pub expiry_queue: Option<String>,
    /// How long a dedup id is remembered, in ms.
    pub dedup_window_ms: i64,
    /// One active consumer at a time.
    pub exclusive: bool,
    /// Record every message sent to it and acknowledged from it in the audit log (ids, not
    /// bodies).
    pub audit_messages: bool,
    /// Most messages it holds (0: no limit); a subscription at its limit gets no new copies.
    pub max_depth: i64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_deliveries: 10,
            redelivery_delay_ms: 0,
            redelivery_backoff: 1.0,
            redelivery_max_delay_ms: 60_000,
            dead_letter_queue: None,
            expiry_queue: None,
            dedup_window_ms: 24 * 3600 * 1000,
            exclusive: false,
            audit_messages: false,
            max_depth: 0,
        }
    }
}

impl QueueSettings {
    /// The delay before redelivery number `delivery_count` (1 = first redelivery).
    pub fn redelivery_delay(&self, delivery_count: i32) -> i64 {
        if self.redelivery_delay_ms <= 0 {
            return 0;
        }
        let exp = (delivery_count - 1).clamp(0, 60);
        let delay = self.redelivery_delay_ms as f64 * self.redelivery_backoff.max(1.0).powi(exp);
        (delay as i64).min(self.redelivery_max_delay_ms.max(self.redelivery_delay_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let s = QueueSettings {
            redelivery_delay_ms: 100,
            redelivery_backoff: 2.0,
            redelivery_max_delay_ms: 1000,
            ..Default::default()
        };
        assert_eq!(s.redelivery_delay(1), 100);
        assert_eq!(s.redelivery_delay(2), 200);
        assert_eq!(s.redelivery_delay(4), 800);
        assert_eq!(s.redelivery_delay(5), 1000);
        assert_eq!(QueueSettings::default().redelivery_delay(3), 0);
    }
}
