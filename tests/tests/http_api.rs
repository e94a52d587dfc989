//! The HTTP messaging API (docs/http-api.md) with a real HTTP client (reqwest) against a real
//! broker and PostgreSQL, with STOMP clients on the other side.

use std::time::Duration;

use postbus_model::QueueSettings;
use postbus_tests::{TestBroker, body};
use serde_json::{Value, json};

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn of(b: &TestBroker) -> Http {
        Http {
            base: b.http.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("HTTP request");
        let status = r.status().as_u16();
        let v = r.json().await.expect("a JSON answer");
        (status, v)
    }

    async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_owned())
            .send()
            .await
            .expect("HTTP request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON answer"))
    }

    async fn receive(&self, queue: &str, req: Value) -> Vec<Value> {
        let (status, v) = self.post(&format!("/v1/queues/{queue}/receive"), req).await;
        assert_eq!(status, 200, "{v}");
        v["messages"].as_array().expect("messages").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_send_reaches_stomp_and_stomp_send_reaches_http_with_ack_by_receipt() {
    let b = TestBroker::start().await;
    let h = Http::of(&b);
    let mut c = b.client().await;
    c.subscribe("/queue/h.in", "s", "client-individual", &[])
        .await
        .unwrap();
    let (status, sent) = h
        .post(
            "/v1/queues/h.in/messages",
            json!({"body": "order 1", "properties": {"amount": 12.5, "qty": 3, "region": "EU"},
                   "property_types": {"qty": "int"}, "correlation_id": "c-9", "priority": 6}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(body(&m), "order 1");
    assert_eq!(m.header("message-id"), sent["message_id"].as_str());
    assert_eq!(m.header("amount"), Some("12.5"));
    assert!(m.header("postbus-types").unwrap().contains("qty:int"));
    assert_eq!(m.header("correlation-id"), Some("c-9"));
    assert_eq!(m.header("priority"), Some("6"));
    c.ack(&m, None).await.unwrap();

    c.send("/queue/h.out", "reply", &[("flag", "yes")])
        .await
        .unwrap();
    let got = h.receive("h.out", json!({})).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], "reply");
    assert_eq!(got[0]["properties"]["flag"], "yes");
    assert_eq!(got[0]["delivery_count"], 1);
    let receipt = got[0]["receipt"].as_str().unwrap().to_owned();
    let (status, v) = h
        .post(&format!("/v1/receipts/{receipt}/ack"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = h
        .post(&format!("/v1/receipts/{receipt}/ack"), json!({}))
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no longer holds"));
    assert_eq!(b.depth("h.out").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_when_a_message_arrives() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        poll_interval_ms: 60_000,
        ..postbus_tests::test_config()
    })
    .await;
    let h = Http::of(&b);
    let mut c = b.client().await;
    // The queue exists (so the poll waits on its wake-up) and is empty.
    c.send("/queue/h.poll", "warm-up", &[]).await.unwrap();
    let first = h.receive("h.poll", json!({})).await;
    h.post(
        &format!("/v1/receipts/{}/ack", first[0]["receipt"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let poll = tokio::spawn({
        let base = h.base.clone();
        async move {
            let h = Http {
                base,
                client: reqwest::Client::new(),
            };
            h.receive("h.poll", json!({"wait_ms": 20000})).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the poll returned before any message was sent"
    );
    c.send("/queue/h.poll", "late", &[]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the poll returned well before its 20 s")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_http_receive_takes_only_matches_and_leaves_the_rest() {
    let b = TestBroker::start().await;
    let h = Http::of(&b);
    let (status, v) = h
        .post(
            "/v1/queues/h.sel/receive",
            json!({"selector": "amount > AND x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("column"), "{v}");
    for (i, amount) in [5, 50, 500, 7].iter().enumerate() {
        h.post(
            "/v1/queues/h.sel/messages",
            json!({"body": format!("m{i}"), "properties": {"amount": amount}}),
        )
        .await;
    }
    let got = h
        .receive(
            "h.sel",
            json!({"selector": "amount >= 50", "max_messages": 10}),
        )
        .await;
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["m1", "m2"]);
    // The rejected ones were not delivered: first delivery for whoever takes them.
    let rest = h.receive("h.sel", json!({"max_messages": 10})).await;
    let bodies: Vec<&str> = rest.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["m0", "m3"]);
    assert!(rest.iter().all(|m| m["delivery_count"] == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_a_lapsed_lease_redeliver_with_the_count_and_dead_letter_at_the_limit() {
    let b = TestBroker::start().await;
    b.create_queue(
        "h.nack",
        QueueSettings {
            max_deliveries: 3,
            ..QueueSettings::default()
        },
    )
    .await;
    let h = Http::of(&b);
    h.post(
        "/v1/queues/h.nack/messages",
        json!({"body_base64": "AAEC/w=="}),
    )
    .await;
    let first = h.receive("h.nack", json!({})).await;
    assert_eq!(first[0]["body_base64"], "AAEC/w==");
    let r = first[0]["receipt"].as_str().unwrap();
    let (status, _) = h
        .post(
            &format!("/v1/receipts/{r}/nack"),
            json!({"error": "ledger down"}),
        )
        .await;
    assert_eq!(status, 200);
    let second = h.receive("h.nack", json!({"lease_ms": 200})).await;
    assert_eq!(second[0]["delivery_count"], 2);
    assert_eq!(second[0]["redelivered"], true);
    assert_eq!(second[0]["last_error"], "ledger down");
    // Not settled: the lease lapses and the third delivery is the last one allowed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = h.receive("h.nack", json!({})).await;
    assert_eq!(third[0]["delivery_count"], 3);
    let r = third[0]["receipt"].as_str().unwrap();
    h.post(&format!("/v1/receipts/{r}/nack"), json!({})).await;
    assert_eq!(b.depth("h.nack").await, 0);
    let dead = h.receive("DLQ.h.nack", json!({})).await;
    assert_eq!(dead[0]["body_base64"], "AAEC/w==");
    assert_eq!(dead[0]["origin"], "/queue/h.nack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_dedup_topics_and_errors() {
    let b = TestBroker::start().await;
    let h = Http::of(&b);
    let (s1, v1) = h
        .post(
            "/v1/queues/h.dedup/messages",
            json!({"body": "a", "dedup_id": "p-1"}),
        )
        .await;
    let (s2, v2) = h
        .post(
            "/v1/queues/h.dedup/messages",
            json!({"body": "b", "dedup_id": "p-1"}),
        )
        .await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(v1["message_id"], v2["message_id"]);
    assert_eq!(v2["duplicate"], true);
    assert_eq!(b.depth("h.dedup").await, 1);

    // A topic publication over HTTP reaches a shared subscription, read over HTTP.
    let mut c = b.client().await;
    c.subscribe(
        "/topic/h.news",
        "s",
        "client-individual",
        &[
            ("shared", "true"),
            ("subscription-name", "feed"),
            ("durable-subscription-name", "feed"),
        ],
    )
    .await
    .unwrap();
    c.disconnect().await.unwrap();
    let (status, _) = h
        .post("/v1/topics/h.news/messages", json!({"body": "n1"}))
        .await;
    assert_eq!(status, 201);
    let (status, v) = h
        .post(
            "/v1/subscriptions/shared-durable::feed/receive",
            json!({"wait_ms": 5000}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["messages"][0]["body"], "n1");
    assert_eq!(v["messages"][0]["topic"], "h.news");

    for (path, body, status, needle) in [
        (
            "/v1/queues/h.x/messages",
            "{not json",
            400,
            "not valid JSON",
        ),
        (
            "/v1/queues/h.x/messages",
            r#"{"body": "x", "priority": 11}"#,
            400,
            "priority 11",
        ),
        (
            "/v1/queues/h.x/messages",
            r#"{"body": "x", "properties": {"JMSType": "x"}}"#,
            400,
            "reserved",
        ),
        (
            "/v1/queues/bad%20name/messages",
            r#"{"body": "x"}"#,
            400,
            "bad name",
        ),
        (
            "/v1/temp-queues/tmp.9.9.x/messages",
            r#"{"body": "x"}"#,
            404,
            "does not exist",
        ),
        (
            "/v1/subscriptions/none/receive",
            "{}",
            404,
            "does not exist",
        ),
        (
            "/v1/queues/h.x/receive",
            r#"{"max_messages": 0}"#,
            400,
            "max_messages 0",
        ),
        (
            "/v1/receipts/garbage/ack",
            "",
            400,
            "neither a receipt nor a message id",
        ),
    ] {
        let (s, v) = h.post_raw(path, body).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(needle), "{path} {body}: {e}");
    }
}
