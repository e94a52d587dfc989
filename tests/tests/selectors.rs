//! JMS selectors on STOMP subscriptions: PostgreSQL narrows each selective consumer's claim
//! with the selector's SQL, the evaluator decides exactly, and nothing a selector does not
//! match is lost or delivered to it.

use std::time::Duration;

use postbus_client::{Client, send_frame};
use postbus_stomp::Frame;
use postbus_tests::TestBroker;

fn body(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

async fn drain(c: &mut Client, ack: bool) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = c.recv_timeout(Duration::from_millis(700)).await.unwrap() {
        out.push(body(&m));
        if ack {
            c.ack(&m, None).await.unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_consumer_gets_exactly_its_messages_in_order() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    for i in 0..60 {
        let currency = ["EUR", "USD", "GBP"][i % 3];
        let amount = (i * 500).to_string();
        let region = if i % 2 == 0 { "EU-west" } else { "US-east" };
        p.send_frame(send_frame(
            "/queue/pay",
            format!("{i}"),
            &[
                ("currency", currency),
                ("amount", &amount),
                ("region", region),
                ("postbus-types", "amount:double"),
            ],
        ))
        .await
        .unwrap();
    }
    p.send("/queue/pay", "end", &[("currency", "JPY")])
        .await
        .unwrap();
    let selector = "currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'";
    let expected: Vec<String> = (0..60)
        .filter(|i| i % 3 != 2 && i * 500 > 10000 && i % 2 == 0)
        .map(|i| i.to_string())
        .collect();
    assert!(!expected.is_empty());

    let mut sel = b.client().await;
    sel.subscribe(
        "/queue/pay",
        "sel",
        "client-individual",
        &[("selector", selector), ("prefetch", "4")],
    )
    .await
    .unwrap();
    let got = drain(&mut sel, true).await;
    assert_eq!(got, expected, "exactly the matching messages, in order");

    // Everything else is still there for a plain consumer.
    let mut rest = b.client().await;
    rest.subscribe("/queue/pay", "all", "client-individual", &[])
        .await
        .unwrap();
    let others = drain(&mut rest, true).await;
    let left = postbus_tests::sql(&b.url, "SELECT id, owner, body FROM postbus.messages").await;
    assert_eq!(
        others.len(),
        61 - expected.len(),
        "left: {left:?} others {others:?}"
    );
    assert!(others.iter().all(|o| !expected.contains(o)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_types_and_selectors_that_sql_cannot_narrow() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    // A string "150" is not a number under JMS rules; a declared double is.
    p.send("/queue/t", "untyped", &[("amount", "150"), ("qty", "7")])
        .await
        .unwrap();
    p.send(
        "/queue/t",
        "typed",
        &[
            ("amount", "150"),
            ("qty", "7"),
            ("postbus-types", "amount:double,qty:int"),
        ],
    )
    .await
    .unwrap();
    p.send(
        "/queue/t",
        "small",
        &[
            ("amount", "50"),
            ("qty", "2"),
            ("postbus-types", "amount:double,qty:int"),
        ],
    )
    .await
    .unwrap();

    let mut c = b.client().await;
    c.subscribe(
        "/queue/t",
        "s",
        "client-individual",
        &[("selector", "amount > 100")],
    )
    .await
    .unwrap();
    assert_eq!(drain(&mut c, true).await, ["typed"]);

    // Arithmetic is not pushed down: the claim is unfiltered, the evaluator decides, and the
    // rejected messages are not claimed for this consumer again.
    let mut a = b.client().await;
    a.subscribe(
        "/queue/t",
        "a",
        "client-individual",
        &[("selector", "qty * 2 > 10")],
    )
    .await
    .unwrap();
    assert!(
        drain(&mut a, true).await.is_empty(),
        "'untyped' has qty as a string; 'small' is 4"
    );
    assert_eq!(
        b.depth("t").await,
        2,
        "non-matching messages stay on the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_selector_is_refused_with_its_position() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    let err = c
        .subscribe(
            "/queue/x",
            "s",
            "auto",
            &[("selector", "amount > AND x = 1")],
        )
        .await
        .unwrap_err();
    let message = err.broker_message().unwrap().to_owned();
    assert!(message.contains("column 10"), "{message}");
    let mut c = b.client().await;
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    let err = c
        .subscribe("/queue/x", "s", "auto", &[("selector", &deep)])
        .await
        .unwrap_err();
    assert!(
        err.broker_message().unwrap().contains("selector error"),
        "{err}"
    );
}
