//! OpenTelemetry traces (off unless `broker.otlp_endpoint` is set): the broker continues the
//! W3C trace context a producer sends with a message. A SEND with a `traceparent` gets a
//! `send` span (child of the producer's), ended when the message commits; the message then
//! carries that span's context, so its delivery is a `receive` span child of it, and the
//! MESSAGE frame carries the delivery span's context to the consumer; an ACK or NACK is a
//! `settle` span. The group commit that writes a traced message is a `batch` span (a `commit`
//! span for a client transaction) under its send span, timed from the batch's start to its
//! commit. One trace shows producer, broker and consumer. Attributes follow the
//! OpenTelemetry messaging semantic conventions. Spans go to an OTLP/HTTP (protobuf)
//! collector in batches from a background thread.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), when it is one.
/// Log lines about a traced message carry it, whether or not spans are exported.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then_some(id)
}

/// The tracer and its exporter.
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// A span in progress (ended when dropped).
pub type OtelSpan = opentelemetry_sdk::trace::Span;

impl Otel {
    /// Starts exporting to `endpoint` (an OTLP/HTTP base URL such as `http://collector:4318`,
    /// or the full traces URL).
    pub fn start(endpoint: &str) -> Result<Otel, String> {
        let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("postbus")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("postbus");
        Ok(Otel {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    fn extract(&self, traceparent: &str, tracestate: Option<&str>) -> Context {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), traceparent.to_owned());
        if let Some(ts) = tracestate {
            carrier.insert("tracestate".to_owned(), ts.to_owned());
        }
        self.propagator.extract(&carrier)
    }

    /// The W3C `traceparent` of a span.
    fn traceparent_of(&self, span: &OtelSpan) -> Option<String> {
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let mut carrier = HashMap::new();
        self.propagator.inject_context(&cx, &mut carrier);
        carrier.remove("traceparent")
    }

    fn span(
        &self,
        name: String,
        kind: SpanKind,
        parent: &Context,
        operation: &str,
        destination: &str,
        message_id: Option<&str>,
    ) -> OtelSpan {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "postbus"),
            KeyValue::new("messaging.operation.type", operation.to_owned()),
            KeyValue::new("messaging.operation.name", operation.to_owned()),
            KeyValue::new("messaging.destination.name", destination.to_owned()),
        ];
        if let Some(id) = message_id {
            attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
        }
        self.tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent)
    }

    /// A SEND that carried a trace context: its `send` span (end it when the message
    /// commits) and the context the stored message carries from now on.
    pub fn send(
        &self,
        destination: &str,
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> Option<(OtelSpan, String)> {
        let parent = self.extract(traceparent, tracestate);
        if !parent.span().span_context().is_valid() {
            return None;
        }
        let span = self.span(
            format!("send {destination}"),
            SpanKind::Server,
            &parent,
            "send",
            destination,
            None,
        );
        let tp = self.traceparent_of(&span)?;
        Some((span, tp))
    }

    /// A delivery of a traced message: a `receive` span; returns the context the MESSAGE
    /// frame carries to the consumer.
    pub fn deliver(
        &self,
        destination: &str,
        message_id: &str,
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> Option<String> {
        let parent = self.extract(traceparent, tracestate);
        if !parent.span().span_context().is_valid() {
            return None;
        }
        let mut span = self.span(
            format!("receive {destination}"),
            SpanKind::Producer,
            &parent,
            "receive",
            destination,
            Some(message_id),
        );
        let tp = self.traceparent_of(&span);
        span.end();
        tp
    }

    /// An ACK or NACK of a traced delivery: a `settle` span.
    pub fn settle(&self, destination: &str, message_id: &str, traceparent: &str, ack: bool) {
        let parent = self.extract(traceparent, None);
        if !parent.span().span_context().is_valid() {
            return;
        }
        let mut span = self.span(
            format!("settle {destination}"),
            SpanKind::Server,
            &parent,
            "settle",
            destination,
            Some(message_id),
        );
        span.set_attribute(KeyValue::new(
            "postbus.settlement",
            if ack { "ack" } else { "nack" },
        ));
        span.end();
    }

    /// A database batch (group commit) that held traced messages: one span per traced message,
    /// child of the message's send span, from the batch's start to its commit (or failure).
    /// `traced` holds each message's context (its `traceparent` and `tracestate`); a batch of
    /// a client transaction is a `commit` span, any other a `batch` span.
    #[allow(clippy::too_many_arguments)]
    pub fn batch(
        &self,
        traced: &[(String, Option<String>)],
        started: std::time::SystemTime,
        ended: std::time::SystemTime,
        units: usize,
        messages: usize,
        transaction: bool,
        error: Option<&str>,
    ) {
        for (traceparent, tracestate) in traced {
            let parent = self.extract(traceparent, tracestate.as_deref());
            if !parent.span().span_context().is_valid() {
                continue;
            }
            let name = if transaction { "commit" } else { "batch" };
            let mut span = self
                .tracer
                .span_builder(format!("{name} postgresql"))
                .with_kind(SpanKind::Client)
                .with_start_time(started)
                .with_attributes(vec![
                    KeyValue::new("messaging.system", "postbus"),
                    KeyValue::new("messaging.batch.message_count", messages as i64),
                    KeyValue::new("db.system.name", "postgresql"),
                    KeyValue::new("db.operation.name", name.to_uppercase()),
                    KeyValue::new("postbus.batch.units", units as i64),
                    KeyValue::new("postbus.transaction", transaction),
                ])
                .start_with_context(&self.tracer, &parent);
            if let Some(e) = error {
                span.set_status(opentelemetry::trace::Status::error(e.to_owned()));
            }
            span.end_with_timestamp(ended);
        }
    }

    /// Sends what is buffered (at shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trace_id_of;

    #[test]
    fn a_trace_id_comes_from_a_well_formed_traceparent_only() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }
}
