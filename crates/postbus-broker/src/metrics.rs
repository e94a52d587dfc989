//! Prometheus metrics (docs/operations.md lists them all): one registry per engine, served at
//! `GET /metrics` on the HTTP listener. Names follow Prometheus conventions (`postbus_`
//! prefix, base units, `_total` counters).
//!
//! Cardinality is bounded: destinations get a label of their own in the order they are first
//! seen, up to `broker.metrics_max_destinations`; the rest share `destination="_other"`.
//! Depth gauges come from a sampler (every `broker.metrics_depth_interval_ms`), never from a
//! count per scrape.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label every destination past the limit shares.
pub const OTHER: &str = "_other";

/// Latency buckets, seconds: 0.5 ms to 60 s.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One destination's hot-path counters, looked up once (no label lookup per message).
#[derive(Clone)]
pub struct DestinationCounters {
    pub label: String,
    pub enqueued: IntCounter,
    pub delivered: IntCounter,
    pub redelivered: IntCounter,
    pub acked: IntCounter,
    pub nacked: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    labels: Mutex<HashMap<String, String>>,
    max_destinations: usize,
    pub enqueued: IntCounterVec,
    pub delivered: IntCounterVec,
    pub redelivered: IntCounterVec,
    pub acked: IntCounterVec,
    pub nacked: IntCounterVec,
    pub expired: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub deduplicated: IntCounterVec,
    pub discarded: IntCounterVec,
    pub depth: IntGaugeVec,
    pub oldest_ready_age: GaugeVec,
    pub consumers: IntGaugeVec,
    pub producers: IntGaugeVec,
    pub destinations_aggregated: IntGauge,
    pub send_commit: Histogram,
    pub enqueue_to_delivery: Histogram,
    pub delivery_to_ack: Histogram,
    pub batch_units: Histogram,
    pub connections: IntGauge,
    pub connections_max: IntGauge,
    pub connections_opened: IntCounter,
    pub auth_failures: IntCounterVec,
    pub policy_denials: IntCounterVec,
    pub db_pool: IntGaugeVec,
    pub db_pool_max: IntGauge,
    pub db_pool_waiting: IntGauge,
    pub db_query: HistogramVec,
    pub db_errors: IntCounterVec,
    pub tls_expiry: Gauge,
    pub db_fsync: IntGauge,
    pub db_synchronous_commit: IntGaugeVec,
    pub db_sync_standbys: IntGauge,
    pub receipts_durable: IntGauge,
    pub db_clock_skew: Gauge,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("a valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    pub fn new(max_destinations: usize, max_connections: usize) -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics registered once");
        let d = &["destination"];
        let m = Metrics {
            enqueued: counter(
                &r,
                "postbus_messages_enqueued_total",
                "Messages committed to a destination (topic publishes count once, at the topic).",
                d,
            ),
            delivered: counter(
                &r,
                "postbus_messages_delivered_total",
                "Messages handed to consumers (MESSAGE frames written).",
                d,
            ),
            redelivered: counter(
                &r,
                "postbus_messages_redelivered_total",
                "Deliveries of messages delivered before.",
                d,
            ),
            acked: counter(
                &r,
                "postbus_messages_acked_total",
                "Messages acknowledged (committed).",
                d,
            ),
            nacked: counter(
                &r,
                "postbus_messages_nacked_total",
                "Messages negatively acknowledged.",
                d,
            ),
            expired: counter(
                &r,
                "postbus_messages_expired_total",
                "Messages removed or moved by the expiry sweep.",
                d,
            ),
            dead_lettered: counter(
                &r,
                "postbus_messages_dead_lettered_total",
                "Messages moved to a dead-letter queue, by the destination they left.",
                d,
            ),
            deduplicated: counter(
                &r,
                "postbus_messages_deduplicated_total",
                "Sends confirmed as duplicates of an accepted dedup id (not enqueued again).",
                d,
            ),
            discarded: counter(
                &r,
                "postbus_messages_discarded_total",
                "Copies of publications not made because the subscription was at its depth limit.",
                d,
            ),
            depth: gauge_vec(
                &r,
                "postbus_destination_messages",
                "Messages in a destination by state (ready, in_flight, scheduled), as last sampled.",
                &["destination", "state"],
            ),
            oldest_ready_age: {
                let g = GaugeVec::new(
                    Opts::new(
                        "postbus_destination_oldest_ready_age_seconds",
                        "Age of the oldest ready message (0 when none), as last sampled.",
                    ),
                    d,
                )
                .expect("a valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            consumers: gauge_vec(
                &r,
                "postbus_destination_consumers",
                "Consumers attached on this broker.",
                d,
            ),
            producers: gauge_vec(
                &r,
                "postbus_destination_producers",
                "Connections on this broker that have sent to the destination.",
                d,
            ),
            destinations_aggregated: gauge(
                &r,
                "postbus_metrics_destinations_aggregated",
                "Destinations past broker.metrics_max_destinations, counted under destination=\"_other\".",
            ),
            send_commit: histogram(
                &r,
                "postbus_send_commit_duration_seconds",
                "From a send (or commit) arriving to its transaction committing.",
                LATENCY,
            ),
            enqueue_to_delivery: histogram(
                &r,
                "postbus_enqueue_to_delivery_seconds",
                "From a message's JMSTimestamp to its delivery.",
                LATENCY,
            ),
            delivery_to_ack: histogram(
                &r,
                "postbus_delivery_to_ack_seconds",
                "From a delivery to its acknowledgement arriving.",
                LATENCY,
            ),
            batch_units: histogram(
                &r,
                "postbus_group_commit_units",
                "Units (sends, acks, commits) per group-commit transaction.",
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
            connections: gauge(&r, "postbus_connections", "Open STOMP connections."),
            connections_max: gauge(
                &r,
                "postbus_connections_max",
                "The STOMP connection limit (broker.max_connections).",
            ),
            connections_opened: {
                let c = IntCounter::new(
                    "postbus_connections_opened_total",
                    "STOMP connections accepted.",
                )
                .expect("a valid metric");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            auth_failures: counter(
                &r,
                "postbus_authentication_failures_total",
                "Clients refused at authentication.",
                &["protocol"],
            ),
            policy_denials: counter(
                &r,
                "postbus_authorization_denials_total",
                "Requests the policies denied.",
                &["action"],
            ),
            db_pool: gauge_vec(
                &r,
                "postbus_db_pool_connections",
                "Database pool connections by state (in_use, idle).",
                &["state"],
            ),
            db_pool_max: gauge(&r, "postbus_db_pool_max", "The database pool's size limit."),
            db_pool_waiting: gauge(
                &r,
                "postbus_db_pool_waiting",
                "Tasks waiting for a database connection.",
            ),
            db_query: {
                let h = HistogramVec::new(
                    HistogramOpts::new("postbus_db_query_duration_seconds", "Database work by operation (batch: a group commit; claim: taking messages for consumers).").buckets(LATENCY.to_vec()),
                    &["operation"],
                )
                .expect("a valid metric");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            db_errors: counter(
                &r,
                "postbus_db_errors_total",
                "Database operations that failed.",
                &["operation"],
            ),
            db_fsync: gauge(
                &r,
                "postbus_database_fsync",
                "1 when the database's fsync is on.",
            ),
            db_synchronous_commit: gauge_vec(
                &r,
                "postbus_database_synchronous_commit",
                "The database's synchronous_commit setting (the series whose label is in force is 1).",
                &["setting"],
            ),
            db_sync_standbys: gauge(
                &r,
                "postbus_database_synchronous_standbys",
                "Standbys attached to the database as synchronous (sync or quorum).",
            ),
            receipts_durable: gauge(
                &r,
                "postbus_receipts_durable",
                "1 when a RECEIPT means the commit is flushed (and on a synchronous standby when one is named); 0 when the settings say otherwise (see the broker's log).",
            ),
            db_clock_skew: {
                let g = Gauge::new(
                    "postbus_database_clock_skew_seconds",
                    "How far the database's clock, which postbus keeps time by, is ahead of this host's (negative: behind), as of the last node heartbeat.",
                )
                .expect("a valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            tls_expiry: Gauge::new(
                "postbus_tls_certificate_expiry_timestamp_seconds",
                "When the listeners' TLS certificate expires (absent without TLS).",
            )
            .expect("a valid metric"),
            registry: r,
            labels: Mutex::new(HashMap::new()),
            max_destinations,
        };
        m.connections_max.set(max_connections as i64);
        // Known label values start at zero, so rates and alerts see them before the first event.
        for p in ["stomp", "http"] {
            m.auth_failures.with_label_values(&[p]);
        }
        for a in [
            "send", "consume", "browse", "create", "delete", "purge", "admin",
        ] {
            m.policy_denials.with_label_values(&[a]);
        }
        for op in ["batch", "claim", "depth"] {
            m.db_errors.with_label_values(&[op]);
        }
        m
    }

    /// Starts exporting the TLS certificate's expiry (only brokers with TLS have the series).
    pub fn set_tls_expiry(&self, not_after: i64) {
        let _ = self.registry.register(Box::new(self.tls_expiry.clone()));
        self.tls_expiry.set(not_after as f64);
    }

    /// The label for a destination (`/queue/NAME`, `/topic/NAME`, ...): its own while there is
    /// room, `_other` after.
    pub fn label(&self, destination: &str) -> String {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = labels.get(destination) {
            return l.clone();
        }
        let own = labels.values().filter(|l| l.as_str() != OTHER).count();
        let l = if own < self.max_destinations {
            destination.to_owned()
        } else {
            self.destinations_aggregated.inc();
            OTHER.to_owned()
        };
        labels.insert(destination.to_owned(), l.clone());
        l
    }

    /// The counters of a destination (`/queue/NAME`...), for a runtime to keep.
    pub fn counters(&self, destination: &str) -> DestinationCounters {
        let label = self.label(destination);
        let l = [label.as_str()];
        DestinationCounters {
            enqueued: self.enqueued.with_label_values(&l),
            delivered: self.delivered.with_label_values(&l),
            redelivered: self.redelivered.with_label_values(&l),
            acked: self.acked.with_label_values(&l),
            nacked: self.nacked.with_label_values(&l),
            label,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
