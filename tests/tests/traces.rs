//! OpenTelemetry traces: a producer's W3C trace context continues through the broker to the
//! consumer. An OTLP/HTTP receiver runs in the test (axum, decoding the protobuf request) and
//! the broker exports to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use postbus_tests::{TestBroker, test_config};
use prost::Message;

type Received = Arc<Mutex<Vec<Span>>>;

async fn collect(State(spans): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut spans = spans.lock().unwrap();
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            spans.extend(ss.spans);
        }
    }
    ""
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_trace_continues_through_the_broker_to_the_consumer() {
    let spans: Received = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        otlp_endpoint: Some(endpoint),
        ..test_config()
    })
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let mut c = b.client().await;
    c.subscribe("/queue/traced", "s", "client-individual", &[])
        .await
        .unwrap();
    c.send(
        "/queue/traced",
        "payment",
        &[("traceparent", &format!("00-{trace}-{producer_span}-01"))],
    )
    .await
    .unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the message");
    // The consumer continues the same trace, from the broker's delivery span.
    let tp = m.header("traceparent").expect("a traceparent").to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], trace, "{tp}");
    assert_ne!(
        parts[2], producer_span,
        "the consumer's parent is the broker's span"
    );
    let message_id = m.header("message-id").unwrap().to_owned();
    c.ack(&m, None).await.unwrap();

    // The exporter sends every 500 ms.
    let mut got = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = spans.lock().unwrap().clone();
        if got.len() >= 3 {
            break;
        }
    }
    let in_trace: Vec<&Span> = got.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let find = |op: &str| {
        in_trace
            .iter()
            .find(|s| attribute(s, "messaging.operation.type").as_deref() == Some(op))
            .unwrap_or_else(|| panic!("no {op} span in the trace: {names:?}"))
    };
    let send = find("send");
    let receive = find("receive");
    let settle = find("settle");
    assert_eq!(hex(&send.parent_span_id), producer_span);
    assert_eq!(receive.parent_span_id, send.span_id);
    assert_eq!(hex(&receive.span_id), parts[2]);
    assert_eq!(settle.parent_span_id, receive.span_id);
    for s in [send, receive, settle] {
        assert_eq!(attribute(s, "messaging.system").as_deref(), Some("postbus"));
        assert_eq!(
            attribute(s, "messaging.destination.name").as_deref(),
            Some("/queue/traced")
        );
    }
    assert_eq!(attribute(receive, "messaging.message.id"), Some(message_id));
    assert_eq!(send.name, "send /queue/traced");
}
