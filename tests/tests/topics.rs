//! Topics and subscriptions (docs/semantics.md, "Topics and subscriptions") against a real
//! broker and a real PostgreSQL: each test fails if its promise breaks.

use std::collections::BTreeSet;
use std::time::Duration;

use postbus_client::{Client, ConnectOptions, send_frame};
use postbus_stomp::{Command, Frame};
use postbus_tests::{TestBroker, body};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

async fn recv(c: &mut Client) -> Frame {
    c.recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("a message within 10 s")
}

async fn recv_bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(body(&recv(c).await));
    }
    out
}

async fn nothing(c: &mut Client) {
    if let Some(f) = c.recv_timeout(QUIET).await.expect("recv") {
        panic!("expected no message, got {:?} {}", f.headers, body(&f));
    }
}

async fn with_client_id(b: &TestBroker, id: &str) -> Client {
    b.client_with(ConnectOptions {
        client_id: Some(id.into()),
        ..Default::default()
    })
    .await
}

async fn count(b: &TestBroker, query: &str) -> i64 {
    postbus_tests::count(&b.url, query).await
}

/// Pipelines `n` SENDs and waits for the receipt of the last one (all are committed then).
async fn publish_many(c: &mut Client, dest: &str, n: usize) {
    for i in 0..n {
        let mut f = send_frame(dest, format!("{i}"), &[]);
        if i + 1 == n {
            f.push_header("receipt", "last");
        }
        c.feed_frame(f).await.unwrap();
    }
    c.flush().await.unwrap();
    c.wait_receipt("last").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_gets_each_message_published_after_it_was_created() {
    let b = TestBroker::start().await;
    let mut s1 = b.client().await;
    let mut s2 = b.client().await;
    s1.subscribe("/topic/news", "a", "client-individual", &[])
        .await
        .unwrap();
    s2.subscribe("/topic/news", "b", "client-individual", &[])
        .await
        .unwrap();
    let mut p = b.client().await;
    let receipt = p.send("/topic/news", "first", &[]).await.unwrap();
    let published_id = receipt.header("message-id").unwrap().to_owned();
    for m in ["second", "third"] {
        p.send("/topic/news", m, &[]).await.unwrap();
    }
    // A subscription made now gets only what is published from now on.
    let mut late = b.client().await;
    late.subscribe("/topic/news", "c", "auto", &[])
        .await
        .unwrap();
    p.send("/topic/news", "fourth", &[]).await.unwrap();

    let mut firsts = Vec::new();
    for s in [&mut s1, &mut s2] {
        let got: Vec<Frame> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(recv(s).await);
            }
            v
        };
        assert_eq!(
            got.iter().map(body).collect::<Vec<_>>(),
            ["first", "second", "third", "fourth"]
        );
        assert_eq!(got[0].header("destination"), Some("/topic/news"));
        // JMSMessageID is the published message's, the same for every subscriber; the ack
        // id is the subscription's own copy.
        assert_eq!(got[0].header("message-id"), Some(published_id.as_str()));
        assert_ne!(got[0].header("ack"), Some(published_id.as_str()));
        firsts.push(got[0].header("ack").unwrap().to_owned());
        for f in &got {
            s.ack(f, None).await.unwrap();
        }
        nothing(s).await;
    }
    assert_ne!(firsts[0], firsts[1]);
    assert_eq!(body(&recv(&mut late).await), "fourth");
    nothing(&mut late).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_to_several_subscriptions_is_stored_once() {
    let b = TestBroker::start().await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = b.client().await;
        s.subscribe("/topic/once", &format!("s{i}"), "client-individual", &[])
            .await
            .unwrap();
        subs.push(s);
    }
    let mut p = b.client().await;
    p.send("/topic/once", "x".repeat(5000), &[]).await.unwrap();
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM postbus.messages WHERE topic = 'once'"
        )
        .await,
        3,
        "one copy per subscription"
    );
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM postbus.messages WHERE topic = 'once' AND body IS NULL"
        )
        .await,
        3,
        "no copy holds the body"
    );
    assert_eq!(
        count(&b, "SELECT count(*) FROM postbus.payloads").await,
        1,
        "the body is stored once"
    );
    for s in &mut subs {
        let m = recv(s).await;
        assert_eq!(m.body.len(), 5000);
        s.ack(&m, None).await.unwrap();
    }
    assert_eq!(count(&b, "SELECT count(*) FROM postbus.messages").await, 0);
    // The sweep removes the payload once no copy points at it (it leaves recent ones alone).
    let removed = b
        .store
        .sweep_payloads(postbus_model::now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(removed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_away_during_10000_publications_gets_them_all_in_order() {
    let b = TestBroker::start().await;
    let mut s = with_client_id(&b, "ledger").await;
    s.subscribe(
        "/topic/payments",
        "d",
        "client-individual",
        &[("durable-subscription-name", "books")],
    )
    .await
    .unwrap();
    s.disconnect().await.unwrap();

    let mut p = b.client().await;
    publish_many(&mut p, "/topic/payments", 10_000).await;

    let mut s = with_client_id(&b, "ledger").await;
    s.subscribe(
        "/topic/payments",
        "d",
        "client",
        &[("durable-subscription-name", "books"), ("prefetch", "1000")],
    )
    .await
    .unwrap();
    for i in 0..10_000 {
        let f = recv(&mut s).await;
        assert_eq!(body(&f), i.to_string(), "in order");
        // Cumulative acks, the last one at message 9,999.
        if i % 500 == 499 {
            s.ack(&f, None).await.unwrap();
        }
    }
    nothing(&mut s).await;

    // UNSUBSCRIBE with the durable name removes the subscription for good.
    s.request(
        Frame::new(Command::Unsubscribe)
            .with_header("id", "d")
            .with_header("durable-subscription-name", "books"),
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM postbus.destinations WHERE kind = 'subscription'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_needs_a_client_id() {
    let b = TestBroker::start().await;
    let mut s = b.client().await;
    let err = s
        .subscribe(
            "/topic/t",
            "d",
            "auto",
            &[("durable-subscription-name", "x")],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("client-id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_the_load_and_loses_nothing_when_a_consumer_dies() {
    let b = TestBroker::start().await;
    let shared = [
        ("shared", "true"),
        ("subscription-name", "workers"),
        ("prefetch", "10"),
    ];
    let mut w1 = b.client().await;
    let mut w2 = b.client().await;
    w1.subscribe("/topic/jobs", "w", "client-individual", &shared)
        .await
        .unwrap();
    w2.subscribe("/topic/jobs", "w", "client-individual", &shared)
        .await
        .unwrap();
    let mut p = b.client().await;
    publish_many(&mut p, "/topic/jobs", 100).await;

    // w1 takes a few and dies without acknowledging them.
    let mut w1_took = Vec::new();
    for _ in 0..3 {
        w1_took.push(body(&recv(&mut w1).await));
    }
    drop(w1);

    let mut got = BTreeSet::new();
    while got.len() < 100 {
        let f = recv(&mut w2).await;
        got.insert(body(&f).parse::<u32>().unwrap());
        w2.ack(&f, None).await.unwrap();
    }
    assert_eq!(got, (0..100).collect::<BTreeSet<u32>>());
    nothing(&mut w2).await;
    assert!(!w1_took.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_selector_decides_which_messages_it_gets() {
    let b = TestBroker::start().await;
    let mut big = b.client().await;
    big.subscribe(
        "/topic/pay",
        "s",
        "auto",
        &[("selector", "amount > 100 AND currency IN ('EUR', 'USD')")],
    )
    .await
    .unwrap();
    let mut all = b.client().await;
    all.subscribe("/topic/pay", "s", "auto", &[]).await.unwrap();
    let mut p = b.client().await;
    for (amount, currency) in [
        ("50", "EUR"),
        ("150", "EUR"),
        ("150", "GBP"),
        ("101", "USD"),
    ] {
        p.send(
            "/topic/pay",
            format!("{amount} {currency}"),
            &[
                ("amount", amount),
                ("currency", currency),
                ("postbus-types", "amount:int"),
            ],
        )
        .await
        .unwrap();
    }
    assert_eq!(recv_bodies(&mut big, 2).await, ["150 EUR", "101 USD"]);
    nothing(&mut big).await;
    assert_eq!(recv_bodies(&mut all, 4).await.len(), 4);

    // A bad selector is refused when subscribing, with its position.
    let mut bad = b.client().await;
    let err = bad
        .subscribe("/topic/pay", "s", "auto", &[("selector", "amount >")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("column"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscriptions_match_topic_names() {
    let b = TestBroker::start().await;
    let mut one = b.client().await;
    one.subscribe("/topic/orders.*", "s", "auto", &[])
        .await
        .unwrap();
    let mut many = b.client().await;
    many.subscribe("/topic/orders.>", "s", "auto", &[])
        .await
        .unwrap();
    let mut p = b.client().await;
    for t in ["orders.eu", "orders.eu.new", "payments.eu", "orders"] {
        p.send(&format!("/topic/{t}"), t, &[]).await.unwrap();
    }
    let m = recv(&mut one).await;
    assert_eq!(body(&m), "orders.eu");
    assert_eq!(m.header("destination"), Some("/topic/orders.eu"));
    nothing(&mut one).await;
    assert_eq!(
        recv_bodies(&mut many, 2).await,
        ["orders.eu", "orders.eu.new"]
    );
    nothing(&mut many).await;

    let mut bad = b.client().await;
    assert!(
        bad.subscribe("/topic/orders.>.x", "s", "auto", &[])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_durable_subscription_goes_with_its_connection() {
    let b = TestBroker::start().await;
    let mut s = b.client().await;
    s.subscribe("/topic/tmp", "s", "client-individual", &[])
        .await
        .unwrap();
    let mut p = b.client().await;
    p.send("/topic/tmp", "held", &[]).await.unwrap();
    let _ = recv(&mut s).await;
    s.disconnect().await.unwrap();
    let mut gone = false;
    for _ in 0..50 {
        let subs = count(
            &b,
            "SELECT count(*) FROM postbus.destinations WHERE kind = 'subscription'",
        )
        .await;
        let copies = count(&b, "SELECT count(*) FROM postbus.messages").await;
        if subs == 0 && copies == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the subscription and its copies are removed");
    // Publishing to a topic nobody subscribes to stores nothing.
    p.send("/topic/tmp", "nobody", &[]).await.unwrap();
    assert_eq!(count(&b, "SELECT count(*) FROM postbus.messages").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_subscription_redelivery_and_transacted_publishing() {
    let b = TestBroker::start().await;
    let mut a = b.client().await;
    a.subscribe("/topic/tx", "s", "client-individual", &[])
        .await
        .unwrap();
    let mut other = b.client().await;
    other
        .subscribe("/topic/tx", "s", "auto", &[])
        .await
        .unwrap();
    let mut p = b.client().await;
    p.begin("t1").await.unwrap();
    p.send("/topic/tx", "aborted", &[("transaction", "t1")])
        .await
        .unwrap();
    p.abort("t1").await.unwrap();
    p.begin("t2").await.unwrap();
    p.send("/topic/tx", "committed", &[("transaction", "t2")])
        .await
        .unwrap();
    p.commit("t2").await.unwrap();

    let m = recv(&mut a).await;
    assert_eq!(body(&m), "committed");
    a.nack(&m, None).await.unwrap();
    let again = recv(&mut a).await;
    assert_eq!(body(&again), "committed");
    assert_eq!(again.header("redelivered"), Some("true"));
    a.ack(&again, None).await.unwrap();
    // The other subscription got it once, unaffected by the first one's NACK.
    assert_eq!(body(&recv(&mut other).await), "committed");
    nothing(&mut other).await;
    nothing(&mut a).await;
}

/// A broker that dies takes its non-durable subscriptions with it: once its node is gone, the
/// broker that notices removes them and their copies (durable ones stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_durable_subscriptions_of_a_gone_broker_are_removed() {
    let b = TestBroker::start().await;
    let mut s = b.client().await;
    s.subscribe("/topic/crash", "s", "client-individual", &[])
        .await
        .unwrap();
    let mut d = with_client_id(&b, "keeper").await;
    d.subscribe(
        "/topic/crash",
        "d",
        "client-individual",
        &[("durable-subscription-name", "kept")],
    )
    .await
    .unwrap();
    let mut p = b.client().await;
    p.send("/topic/crash", "m", &[]).await.unwrap();
    // The non-durable subscription now belongs to a broker node that no longer exists (as
    // after that broker was killed and declared dead).
    postbus_tests::sql(
        &b.url,
        "UPDATE postbus.subscription_consumers SET node_id = 987654321 WHERE subscription_id IN \
         (SELECT id FROM postbus.destinations WHERE name LIKE 'nondurable:%')",
    )
    .await;
    let mut left = (0, 0);
    for _ in 0..50 {
        left = (
            count(
                &b,
                "SELECT count(*) FROM postbus.destinations WHERE kind = 'subscription'",
            )
            .await,
            count(&b, "SELECT count(*) FROM postbus.messages").await,
        );
        if left == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left,
        (1, 1),
        "only the durable subscription and its copy remain"
    );
}

/// A shared subscription used from two brokers lives until its last consumer anywhere leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_across_brokers_lives_while_any_consumer_does() {
    let (a, b) = TestBroker::pair("shared", postbus_tests::test_config()).await;
    let shared = [("shared", "true"), ("subscription-name", "pool")];
    let mut on_a = a.client().await;
    on_a.subscribe("/topic/work", "s", "auto", &shared)
        .await
        .unwrap();
    let mut on_b = b.client().await;
    on_b.subscribe("/topic/work", "s", "auto", &shared)
        .await
        .unwrap();
    on_b.request(Frame::new(Command::Unsubscribe).with_header("id", "s"))
        .await
        .unwrap();
    on_b.disconnect().await.unwrap();
    // Let b's leaving finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = b.client().await;
    p.send("/topic/work", "still served", &[]).await.unwrap();
    assert_eq!(body(&recv(&mut on_a).await), "still served");
    on_a.disconnect().await.unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if count(
            &a,
            "SELECT count(*) FROM postbus.destinations WHERE kind = 'subscription'",
        )
        .await
            == 0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the last consumer leaving removes it");
}

/// UNSUBSCRIBE and an immediate SUBSCRIBE again: the new subscription gets what is published
/// after it, whatever the order in which the broker finishes removing the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_at_once_is_not_undone_by_the_old_subscriptions_removal() {
    let b = TestBroker::start().await;
    let mut s = b.client().await;
    let mut p = b.client().await;
    for round in 0..5 {
        s.subscribe("/topic/again", "s", "auto", &[]).await.unwrap();
        p.send("/topic/again", format!("r{round}"), &[])
            .await
            .unwrap();
        assert_eq!(body(&recv(&mut s).await), format!("r{round}"));
        s.feed_frame(Frame::new(Command::Unsubscribe).with_header("id", "s"))
            .await
            .unwrap();
    }
    s.flush().await.unwrap();
    s.subscribe("/topic/again", "s", "auto", &[]).await.unwrap();
    p.send("/topic/again", "last", &[]).await.unwrap();
    assert_eq!(body(&recv(&mut s).await), "last");
}

/// A copy that runs out of deliveries moves to the dead-letter queue as an ordinary queue
/// message, with the topic as its original destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_copy_names_its_topic() {
    let b = TestBroker::start().await;
    let mut s = with_client_id(&b, "dl").await;
    s.subscribe(
        "/topic/fragile",
        "s",
        "client-individual",
        &[("durable-subscription-name", "d")],
    )
    .await
    .unwrap();
    let mut p = b.client().await;
    p.send("/topic/fragile", "poison", &[]).await.unwrap();
    let m = recv(&mut s).await;
    s.request(settle_nack_no_requeue(&m)).await.unwrap();
    let mut dlq = b.client().await;
    dlq.subscribe("/queue/DLQ.fragile", "q", "auto", &[])
        .await
        .unwrap();
    let d = recv(&mut dlq).await;
    assert_eq!(body(&d), "poison");
    assert_eq!(d.header("destination"), Some("/queue/DLQ.fragile"));
    assert_eq!(d.header("original-destination"), Some("/topic/fragile"));
    assert_eq!(d.header("message-id"), m.header("message-id"));
}

fn settle_nack_no_requeue(m: &Frame) -> Frame {
    Frame::new(Command::Nack)
        .with_header("id", m.header("ack").unwrap())
        .with_header("requeue", "false")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_durable_subscription_stops_at_its_depth_limit_and_the_metric_shows_it() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        subscription_max_depth: 5,
        metrics_depth_interval_ms: 100,
        ..postbus_tests::test_config()
    })
    .await;
    let mut away = with_client_id(&b, "forgetful").await;
    away.subscribe(
        "/topic/lim.events",
        "d",
        "client-individual",
        &[("durable-subscription-name", "old")],
    )
    .await
    .unwrap();
    away.disconnect().await.unwrap();
    let mut live = b.client().await;
    live.subscribe("/topic/lim.events", "l", "auto", &[])
        .await
        .unwrap();
    let mut p = b.client().await;
    publish_many(&mut p, "/topic/lim.events", 5).await;
    // Once a sample has seen it full, it gets no more copies; the live subscriber gets all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_many(&mut p, "/topic/lim.events", 10).await;
    assert_eq!(recv_bodies(&mut live, 15).await.len(), 15);
    let depth = count(
        &b,
        "SELECT count(*) FROM postbus.messages m JOIN postbus.destinations d ON d.id = m.queue_id \
         WHERE d.name = 'durable:forgetful:old'",
    )
    .await;
    assert_eq!(depth, 5, "the forgotten subscription stopped at its limit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = reqwest::get(format!("{}/metrics", b.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("postbus_messages_discarded_total{destination=\"/subscription/durable:forgetful:old\"}"))
        .unwrap_or_else(|| panic!("no discard series in {text}"));
    assert!(line.ends_with(" 10"), "{line}");
    assert!(text.contains(
        "postbus_destination_messages{destination=\"/subscription/durable:forgetful:old\",state=\"ready\"} 5"
    ));
    // Drained, it takes copies again.
    let mut back = with_client_id(&b, "forgetful").await;
    back.subscribe(
        "/topic/lim.events",
        "d",
        "auto",
        &[("durable-subscription-name", "old")],
    )
    .await
    .unwrap();
    assert_eq!(recv_bodies(&mut back, 5).await, ["0", "1", "2", "3", "4"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_many(&mut p, "/topic/lim.events", 1).await;
    assert_eq!(recv_bodies(&mut back, 1).await, ["0"]);
}
