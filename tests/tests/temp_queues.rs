//! Request/reply and temporary queues (docs/semantics.md, "Request/reply and temporary
//! queues") against a real broker and a real PostgreSQL.

use std::time::Duration;

use postbus_client::Client;
use postbus_stomp::Frame;
use postbus_tests::{TestBroker, body};

const WAIT: Duration = Duration::from_secs(10);

async fn recv(c: &mut Client) -> Frame {
    c.recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("a message within 10 s")
}

async fn count(b: &TestBroker, query: &str) -> i64 {
    postbus_tests::count(&b.url, query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_through_a_temporary_queue() {
    let b = TestBroker::start().await;
    let mut requester = b.client().await;
    requester
        .subscribe("/temp-queue/replies", "r", "auto", &[])
        .await
        .unwrap();
    let mut responder = b.client().await;
    responder
        .subscribe("/queue/seats", "s", "client-individual", &[])
        .await
        .unwrap();
    requester
        .send(
            "/queue/seats",
            "reserve 12A",
            &[
                ("reply-to", "/temp-queue/replies"),
                ("correlation-id", "req-1"),
            ],
        )
        .await
        .unwrap();

    let request = recv(&mut responder).await;
    assert_eq!(body(&request), "reserve 12A");
    assert_eq!(request.header("correlation-id"), Some("req-1"));
    let reply_to = request.header("reply-to").unwrap().to_owned();
    assert!(
        reply_to.starts_with("/temp-queue/tmp."),
        "reply-to is the queue's global name: {reply_to}"
    );
    responder
        .send(&reply_to, "12A is yours", &[("correlation-id", "req-1")])
        .await
        .unwrap();
    responder.ack(&request, None).await.unwrap();

    let reply = recv(&mut requester).await;
    assert_eq!(body(&reply), "12A is yours");
    assert_eq!(reply.header("correlation-id"), Some("req-1"));
    assert_eq!(reply.header("destination"), Some(reply_to.as_str()));

    // Nobody else may consume from it.
    let mut thief = b.client().await;
    let err = thief
        .subscribe(&reply_to, "t", "auto", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another connection"), "{err}");

    // It goes with its connection, and sending to it then is an error.
    requester.disconnect().await.unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if count(
            &b,
            "SELECT count(*) FROM postbus.destinations WHERE kind = 'temp-queue'",
        )
        .await
            == 0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the temporary queue is deleted with its connection");
    let err = responder
        .send(&reply_to, "too late", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// After a broker crash its connections' temporary queues are removed by whichever broker
/// notices it is gone (here: its node row is gone, as after it was declared dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_queues_of_a_gone_broker_are_removed() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    c.send("/temp-queue/mine", "left behind", &[])
        .await
        .unwrap();
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM postbus.destinations WHERE kind = 'temp-queue'"
        )
        .await,
        1
    );
    postbus_tests::sql(
        &b.url,
        "UPDATE postbus.destinations SET node_id = 987654321 WHERE kind = 'temp-queue'",
    )
    .await;
    let mut left = (1, 1);
    for _ in 0..50 {
        left = (
            count(
                &b,
                "SELECT count(*) FROM postbus.destinations WHERE kind = 'temp-queue'",
            )
            .await,
            count(&b, "SELECT count(*) FROM postbus.messages").await,
        );
        if left == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, (0, 0), "queue and message removed");
}
