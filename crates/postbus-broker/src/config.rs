//! Broker settings. Every field has a default that suits a development machine; docs/
//! configuration.md lists them all with their TOML keys and POSTBUS_* variables.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the broker engine and its STOMP listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Name of this broker node; a restarted broker with the same name takes over the messages
    /// its previous incarnation held at once instead of waiting for the lease to lapse.
    pub node_name: Option<String>,
    /// How long a silent broker node keeps its in-flight messages before others take them, ms.
    pub node_lease_ms: u32,
    /// Create queues on first use; when false, an unknown queue is an error.
    pub auto_create_queues: bool,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Largest frame (headers and body) accepted, bytes.
    pub max_frame_bytes: usize,
    /// Largest body accepted, bytes.
    pub max_body_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line, bytes.
    pub max_header_line_bytes: usize,
    /// Most connections one principal may have open at once on this broker (0: no limit).
    pub max_connections_per_principal: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions_per_connection: usize,
    /// Most transactions open at once on one connection.
    pub max_open_transactions: usize,
    /// Most sends and acks in one transaction.
    pub max_transaction_operations: usize,
    /// Prefetch (unacknowledged messages in flight) of a subscription that does not say.
    pub default_prefetch: u32,
    /// Largest prefetch a subscription may ask for.
    pub max_prefetch: u32,
    /// Heart-beat the server offers and wants, ms (0 = none).
    pub heartbeat_ms: u32,
    /// A client silent for its heart-beat interval times this factor is dropped.
    pub heartbeat_grace: f64,
    /// Time a new connection has to send CONNECT, ms.
    pub connect_timeout_ms: u64,
    /// Most CONNECT frames processed at once (authentication, registration, the CONNECTED
    /// answer); the rest wait their turn. A storm of new connections then cannot queue
    /// thousands of handshakes in front of the established sessions' work.
    pub max_concurrent_handshakes: usize,
    /// Group-commit batches committing in parallel.
    pub writers: usize,
    /// Most units (sends, acks, commits) in one group commit.
    pub max_batch_units: usize,
    /// Most message bytes in one group commit.
    pub max_batch_bytes: usize,
    /// How long a write is retried while the database is unreachable before the client gets an ERROR, ms.
    pub write_retry_ms: u64,
    /// Most messages one claim takes from a queue.
    pub claim_batch: u32,
    /// How often queues with consumers look for messages written by other brokers or by SQL, ms.
    pub poll_interval_ms: u64,
    /// How long committed client transaction ids are remembered for COMMIT retries, ms.
    pub transaction_record_ms: i64,
    /// Most messages a subscription holds (0: no limit): past it, new publications are not
    /// copied to it (discarded for it, counted in postbus_messages_discarded_total).
    pub subscription_max_depth: i64,
    /// OTLP/HTTP collector for traces (e.g. `http://127.0.0.1:4318`); None: no tracing.
    pub otlp_endpoint: Option<String>,
    /// Destinations with metric series of their own; the rest share `destination="_other"`.
    pub metrics_max_destinations: usize,
    /// How often destination depths are sampled for the metrics, ms.
    pub metrics_depth_interval_ms: u64,
    /// Longest selector accepted on SUBSCRIBE, bytes.
    pub max_selector_bytes: usize,
    /// Deepest nesting accepted in a selector.
    pub max_selector_depth: usize,
    /// Most fresh messages a queue holds in memory beyond its consumers' credit (see
    /// docs/configuration.md, "Dispatch buffer and producer flow control").
    pub dispatch_buffer_messages: usize,
    /// Most body bytes in that buffer.
    pub dispatch_buffer_bytes: usize,
    /// Longest a producer is held back while a queue's dispatch buffer is full, ms (0 = never).
    pub producer_flow_control_ms: u64,
    /// Most frames of one connection whose writes have not finished (sends awaiting their
    /// commit); past it the broker stops reading that connection until some finish.
    pub max_unconfirmed_frames: usize,
    /// Most messages one browse (SUBSCRIBE with `browse:true`) sends.
    pub max_browse_messages: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_name: None,
            node_lease_ms: 10_000,
            auto_create_queues: true,
            max_connections: 10_000,
            max_frame_bytes: 4 * 1024 * 1024 + 64 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            max_headers: 256,
            max_header_line_bytes: 64 * 1024,
            max_connections_per_principal: 1_000,
            max_subscriptions_per_connection: 1_000,
            max_open_transactions: 16,
            max_transaction_operations: 10_000,
            default_prefetch: 100,
            max_prefetch: 10_000,
            heartbeat_ms: 10_000,
            heartbeat_grace: 2.0,
            connect_timeout_ms: 10_000,
            max_concurrent_handshakes: 16,
            writers: 2,
            max_batch_units: 1_000,
            max_batch_bytes: 16 * 1024 * 1024,
            write_retry_ms: 10_000,
            claim_batch: 500,
            poll_interval_ms: 2_000,
            transaction_record_ms: 24 * 3600 * 1000,
            otlp_endpoint: None,
            subscription_max_depth: 1_000_000,
            metrics_max_destinations: 200,
            metrics_depth_interval_ms: 10_000,
            max_selector_bytes: 4096,
            max_selector_depth: 64,
            dispatch_buffer_messages: 1_000,
            dispatch_buffer_bytes: 8 * 1024 * 1024,
            producer_flow_control_ms: 1_000,
            max_unconfirmed_frames: 1_000,
            max_browse_messages: 10_000,
        }
    }
}

impl BrokerConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms as u64)
    }

    pub fn selector_limits(&self) -> postbus_selector::ParseLimits {
        postbus_selector::ParseLimits {
            max_length: self.max_selector_bytes,
            max_depth: self.max_selector_depth,
        }
    }

    pub fn dispatch_buffer(&self) -> crate::queue::DispatchBuffer {
        crate::queue::DispatchBuffer {
            messages: self.dispatch_buffer_messages,
            bytes: self.dispatch_buffer_bytes,
        }
    }

    pub fn codec_limits(&self) -> postbus_stomp::Limits {
        postbus_stomp::Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_headers: self.max_headers,
            max_header_line_bytes: self.max_header_line_bytes,
            max_body_bytes: self.max_body_bytes,
        }
    }
}
