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
    // The group commit that wrote it: a database span under the send span.
    let batch = in_trace
        .iter()
        .find(|s| s.name == "batch postgresql")
        .unwrap_or_else(|| panic!("no batch span in the trace: {names:?}"));
    assert_eq!(batch.parent_span_id, send.span_id);
    assert_eq!(
        attribute(batch, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert!(batch.end_time_unix_nano >= batch.start_time_unix_nano);
}

/// Starts an OTLP receiver and a broker exporting to it.
async fn traced_broker() -> (TestBroker, Received) {
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
    (b, spans)
}

/// The spans of `trace` once at least `n` have arrived (the exporter sends every 500 ms).
async fn spans_of(spans: &Received, trace: &str, n: usize) -> Vec<Span> {
    let mut got = Vec::new();
    for _ in 0..60 {
        got = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect();
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sends_and_transaction_commits_are_traced() {
    let (b, spans) = traced_broker().await;
    // An HTTP send with a traceparent: a send span under the caller's, and its batch span.
    let http_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/queues/traced.http/messages", b.http))
        .json(&serde_json::json!({
            "body": "over http",
            "traceparent": format!("00-{http_trace}-{caller_span}-01"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let got = spans_of(&spans, http_trace, 2).await;
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    let send = got
        .iter()
        .find(|s| s.name == "send /queue/traced.http")
        .unwrap_or_else(|| panic!("no send span: {names:?}"));
    assert_eq!(hex(&send.parent_span_id), caller_span);
    let batch = got
        .iter()
        .find(|s| s.name == "batch postgresql")
        .unwrap_or_else(|| panic!("no batch span: {names:?}"));
    assert_eq!(batch.parent_span_id, send.span_id);

    // A send in a STOMP transaction: its COMMIT is a commit span under the send span.
    let tx_trace = "11111111111111112222222222222222";
    let mut c = b.client().await;
    c.begin("t1").await.unwrap();
    c.send(
        "/queue/traced.tx",
        "in a transaction",
        &[
            ("transaction", "t1"),
            ("traceparent", &format!("00-{tx_trace}-3333333333333333-01")),
        ],
    )
    .await
    .unwrap();
    c.commit("t1").await.unwrap();
    let got = spans_of(&spans, tx_trace, 2).await;
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    let send = got
        .iter()
        .find(|s| s.name == "send /queue/traced.tx")
        .unwrap_or_else(|| panic!("no send span: {names:?}"));
    let commit = got
        .iter()
        .find(|s| s.name == "commit postgresql")
        .unwrap_or_else(|| panic!("no commit span: {names:?}"));
    assert_eq!(commit.parent_span_id, send.span_id);
    assert!(
        commit
            .attributes
            .iter()
            .any(|kv| kv.key == "postbus.transaction"),
        "{:?}",
        commit.attributes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_id_of_a_traced_message() {
    let url = postbus_tests::fresh_database().await;
    let broker = postbus_tests::BrokerProcess::spawn(
        &url,
        &[
            ("POSTBUS_LOG_FORMAT", "json"),
            ("POSTBUS_BROKER_POLL_INTERVAL_MS", "100"),
        ],
    )
    .await
    .unwrap();
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut c = postbus_tests::connect(&broker.addr).await;
    // A traced SEND the broker refuses: the ERROR's log line names the trace.
    let err = c
        .send(
            "/queue/logged",
            "x",
            &[
                ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
                ("priority", "99"),
            ],
        )
        .await
        .expect_err("priority 99 is refused");
    assert!(err.to_string().contains("priority"), "{err}");
    let mut line = None;
    for _ in 0..50 {
        line = broker
            .log_tail()
            .lines()
            .find(|l| l.contains("connection ended with an ERROR frame"))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = line.unwrap_or_else(|| panic!("no log line: {}", broker.log_tail()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["fields"]["trace_id"], trace, "{line}");
    assert!(
        v["fields"]["error"].as_str().unwrap().contains("priority"),
        "{line}"
    );
}
