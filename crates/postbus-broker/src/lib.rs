//! The postbus broker: the engine that moves messages between producers, PostgreSQL and
//! consumers, and the STOMP 1.2 server that clients talk to.
//!
//! Map (see docs/ARCHITECTURE.md for one message's journey):
//! - [`admin`]: the HTTP admin API (destinations, policy check, audit), with its OpenAPI description.
//! - [`config`]: every limit and timing the broker takes, with defaults.
//! - [`engine`]: the shared broker state: destinations, queue runtimes, node lease, background jobs.
//! - [`queue`]: one queue's consumers, credit, message groups and in-flight bookkeeping.
//! - [`writer`]: group commit: units of many connections written in one transaction.
//! - [`security`]: authentication (JWT) and the policies in force, reloaded on change.
//! - [`selecting`]: a consumer's JMS selector (exact evaluation and SQL narrowing).
//! - [`send`]: turns a SEND frame into a validated message.
//! - [`http`]: the HTTP listener's routes (health, the messaging API).
//! - [`metrics`]: the Prometheus registry, bounded destination labels, the depth sampler's gauges.
//! - [`otel`]: OpenTelemetry spans that continue a producer's trace context to the consumer.
//! - [`rest`]: the HTTP messaging API's logic (send, receive under a lease, ack/nack).
//! - [`session`]: one STOMP connection's state machine.
//! - [`tls`]: TLS for the listeners (rustls), client certificates, reload.
//! - [`server`]: the TCP listener and connection limits.

pub mod admin;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod queue;
pub mod rest;
pub mod security;
pub mod selecting;
pub mod send;
pub mod server;
pub mod session;
pub mod tls;
pub mod writer;

pub use config::BrokerConfig;
pub use engine::Engine;
