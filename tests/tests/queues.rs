//! Every queue guarantee of docs/semantics.md against a real broker and a real PostgreSQL:
//! each test here fails if its promise breaks.

use std::time::Duration;

use postbus_client::{Client, ConnectOptions, send_frame};
use postbus_model::QueueSettings;
use postbus_stomp::{Command, Frame};
use postbus_tests::{TestBroker, body, test_config};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

async fn recv(c: &mut Client) -> Frame {
    c.recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("a message within 5 s")
}

async fn recv_n(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(recv(c).await);
    }
    out
}

async fn nothing(c: &mut Client) {
    if let Some(f) = c.recv_timeout(QUIET).await.expect("recv") {
        panic!("expected no message, got {:?} {}", f.headers, body(&f));
    }
}

async fn send_all(c: &mut Client, dest: &str, bodies: &[&str], headers: &[(&str, &str)]) {
    for b in bodies {
        c.send(dest, b.to_string(), headers).await.expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_with_receipts_then_ack_deletes() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    for m in &bodies {
        let r = p.send("/queue/fifo", m.clone(), &[]).await.unwrap();
        assert!(r.header("message-id").unwrap().starts_with("ID:"));
    }
    let mut c = b.client().await;
    c.subscribe("/queue/fifo", "s", "client-individual", &[])
        .await
        .unwrap();
    let got = recv_n(&mut c, 50).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), bodies);
    for f in &got {
        assert_eq!(f.header("redelivered"), Some("false"));
        assert_eq!(f.header("JMSXDeliveryCount"), Some("1"));
        assert_eq!(f.header("persistent"), Some("true"));
        c.ack(f, None).await.unwrap();
    }
    assert_eq!(b.depth("fifo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_first_then_fifo() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    for (body, prio) in [
        ("a1", "1"),
        ("b9", "9"),
        ("c4", "4"),
        ("d9", "9"),
        ("e1", "1"),
    ] {
        p.send("/queue/prio", body, &[("priority", prio)])
            .await
            .unwrap();
    }
    let mut c = b.client().await;
    c.subscribe("/queue/prio", "s", "auto", &[]).await.unwrap();
    let got: Vec<String> = recv_n(&mut c, 5).await.iter().map(body).collect();
    assert_eq!(got, ["b9", "d9", "c4", "a1", "e1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ack_is_cumulative_and_unacked_are_redelivered() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/cum", &["1", "2", "3", "4", "5"], &[]).await;
    let mut c = b.client().await;
    c.subscribe("/queue/cum", "s", "client", &[]).await.unwrap();
    let got = recv_n(&mut c, 5).await;
    c.ack(&got[2], None).await.unwrap(); // acks 1, 2 and 3
    c.disconnect().await.unwrap();
    let mut c2 = b.client().await;
    c2.subscribe("/queue/cum", "s", "client", &[])
        .await
        .unwrap();
    let again = recv_n(&mut c2, 2).await;
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["4", "5"]);
    for f in &again {
        assert_eq!(f.header("redelivered"), Some("true"));
        assert_eq!(f.header("JMSXDeliveryCount"), Some("2"));
    }
    nothing(&mut c2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_removes_on_delivery() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/auto", &["x", "y"], &[]).await;
    let mut c = b.client().await;
    c.subscribe("/queue/auto", "s", "auto", &[]).await.unwrap();
    recv_n(&mut c, 2).await;
    // The auto-acks commit shortly after the frames are written.
    for _ in 0..50 {
        if b.depth("auto").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.depth("auto").await, 0);
    c.disconnect().await.unwrap();
    let mut c2 = b.client().await;
    c2.subscribe("/queue/auto", "s", "auto", &[]).await.unwrap();
    nothing(&mut c2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_after_the_delay_with_count() {
    let b = TestBroker::start().await;
    b.create_queue(
        "delayed",
        QueueSettings {
            redelivery_delay_ms: 700,
            ..Default::default()
        },
    )
    .await;
    let mut p = b.client().await;
    p.send("/queue/delayed", "m", &[]).await.unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/delayed", "s", "client-individual", &[])
        .await
        .unwrap();
    let first = recv(&mut c).await;
    c.nack(&first, None).await.unwrap();
    let started = std::time::Instant::now();
    let again = recv(&mut c).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "redelivered after {:?}",
        started.elapsed()
    );
    assert_eq!(body(&again), "m");
    assert_eq!(again.header("redelivered"), Some("true"));
    assert_eq!(again.header("JMSXDeliveryCount"), Some("2"));
    assert_eq!(again.header("message-id"), first.header("message-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliveries_moves_to_the_dead_letter_queue() {
    let b = TestBroker::start().await;
    b.create_queue(
        "pay",
        QueueSettings {
            max_deliveries: 2,
            ..Default::default()
        },
    )
    .await;
    let mut p = b.client().await;
    p.send("/queue/pay", "poison", &[("amount", "10")])
        .await
        .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/pay", "s", "client-individual", &[])
        .await
        .unwrap();
    let m1 = recv(&mut c).await;
    c.send_frame(
        Frame::new(Command::Nack)
            .with_header("id", m1.header("ack").unwrap())
            .with_header("error", "cannot parse"),
    )
    .await
    .unwrap();
    let m2 = recv(&mut c).await;
    assert_eq!(m2.header("JMSXDeliveryCount"), Some("2"));
    c.nack(&m2, None).await.unwrap();
    nothing(&mut c).await;
    let mut d = b.client().await;
    d.subscribe("/queue/DLQ.pay", "d", "client-individual", &[])
        .await
        .unwrap();
    let dead = recv(&mut d).await;
    assert_eq!(body(&dead), "poison");
    assert_eq!(dead.header("message-id"), m1.header("message-id"));
    assert_eq!(dead.header("original-destination"), Some("/queue/pay"));
    assert_eq!(dead.header("amount"), Some("10"));
    assert_eq!(dead.header("last-error"), Some("cannot parse"));
    assert!(
        dead.header("dlq-reason")
            .unwrap()
            .contains("max-deliveries 2")
    );
    assert_eq!(b.depth("pay").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_dead_letters_at_once() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    p.send("/queue/rej", "bad", &[]).await.unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/rej", "s", "client-individual", &[])
        .await
        .unwrap();
    let m = recv(&mut c).await;
    c.request(
        Frame::new(Command::Nack)
            .with_header("id", m.header("ack").unwrap())
            .with_header("requeue", "false"),
    )
    .await
    .unwrap();
    nothing(&mut c).await;
    let mut d = b.client().await;
    d.subscribe("/queue/DLQ.rej", "d", "auto", &[])
        .await
        .unwrap();
    let dead = recv(&mut d).await;
    assert!(dead.header("dlq-reason").unwrap().contains("requeue:false"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_never_delivered() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    p.send("/queue/exp", "old", &[("ttl", "100")])
        .await
        .unwrap();
    let past = (postbus_model::now_ms() - 1).to_string();
    p.send("/queue/exp", "older", &[("expires", past.as_str())])
        .await
        .unwrap();
    p.send("/queue/exp", "fresh", &[("ttl", "60000")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = b.client().await;
    c.subscribe("/queue/exp", "s", "auto", &[]).await.unwrap();
    assert_eq!(body(&recv(&mut c).await), "fresh");
    nothing(&mut c).await;
    // The sweep removes them from the database.
    for _ in 0..60 {
        if b.depth("exp").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.depth("exp").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_delivery_waits() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    c.subscribe("/queue/sched", "s", "auto", &[]).await.unwrap();
    let mut p = b.client().await;
    let sent = std::time::Instant::now();
    p.send("/queue/sched", "later", &[("AMQ_SCHEDULED_DELAY", "800")])
        .await
        .unwrap();
    p.send("/queue/sched", "now", &[]).await.unwrap();
    assert_eq!(body(&recv(&mut c).await), "now");
    let later = recv(&mut c).await;
    assert_eq!(body(&later), "later");
    assert!(
        sent.elapsed() >= Duration::from_millis(750),
        "delivered after {:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_id_is_confirmed_but_not_enqueued_twice() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    let r1 = p
        .send("/queue/dd", "one", &[("dedup-id", "order-1")])
        .await
        .unwrap();
    let r2 = p
        .send("/queue/dd", "one again", &[("_AMQ_DUPL_ID", "order-1")])
        .await
        .unwrap();
    assert_eq!(r1.header("duplicate"), None);
    assert_eq!(r2.header("duplicate"), Some("true"));
    assert_eq!(r2.header("message-id"), r1.header("message-id"));
    // The same id on another queue is another message.
    p.send("/queue/dd2", "other queue", &[("dedup-id", "order-1")])
        .await
        .unwrap();
    // Pipelined duplicates within one batch.
    for _ in 0..5 {
        p.send_frame(send_frame("/queue/dd", "burst", &[("dedup-id", "burst-1")]))
            .await
            .unwrap();
    }
    p.send("/queue/dd", "end", &[]).await.unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/dd", "s", "auto", &[]).await.unwrap();
    let got: Vec<String> = recv_n(&mut c, 3).await.iter().map(body).collect();
    assert_eq!(got, ["one", "burst", "end"]);
    nothing(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transacted_sends_commit_atomically_or_not_at_all() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    p.begin("t1").await.unwrap();
    for m in ["a", "b", "c"] {
        p.send("/queue/tx", m, &[("transaction", "t1")])
            .await
            .unwrap();
    }
    p.abort("t1").await.unwrap();
    p.begin("t2").await.unwrap();
    for m in ["d", "e"] {
        p.send("/queue/tx", m, &[("transaction", "t2")])
            .await
            .unwrap();
    }
    let mut c = b.client().await;
    c.subscribe("/queue/tx", "s", "client-individual", &[])
        .await
        .unwrap();
    nothing(&mut c).await; // nothing before COMMIT
    p.commit("t2").await.unwrap();
    let got = recv_n(&mut c, 2).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["d", "e"]);
    nothing(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transacted_acks_apply_at_commit_and_return_on_abort() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/txa", &["1", "2"], &[]).await;
    let mut c = b.client().await;
    c.subscribe("/queue/txa", "s", "client-individual", &[])
        .await
        .unwrap();
    let got = recv_n(&mut c, 2).await;
    c.begin("a").await.unwrap();
    c.ack(&got[0], Some("a")).await.unwrap();
    c.abort("a").await.unwrap();
    let again = recv(&mut c).await;
    assert_eq!(body(&again), "1");
    assert_eq!(again.header("redelivered"), Some("true"));
    // Ack and send in one transaction: both or neither.
    c.begin("b").await.unwrap();
    c.ack(&again, Some("b")).await.unwrap();
    c.ack(&got[1], Some("b")).await.unwrap();
    c.send("/queue/txa.out", "result", &[("transaction", "b")])
        .await
        .unwrap();
    assert_eq!(
        b.depth("txa").await,
        2,
        "acks are not applied before COMMIT"
    );
    c.commit("b").await.unwrap();
    assert_eq!(b.depth("txa").await, 0);
    assert_eq!(b.depth("txa.out").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_retry_is_answered_from_the_record() {
    let b = TestBroker::start().await;
    let opts = ConnectOptions {
        client_id: Some("payments-1".into()),
        ..Default::default()
    };
    let mut p = b.client_with(opts.clone()).await;
    p.begin("tx-42").await.unwrap();
    p.send("/queue/retry", "once", &[("transaction", "tx-42")])
        .await
        .unwrap();
    p.commit("tx-42").await.unwrap();
    // The client reconnects (as if the RECEIPT was lost) and repeats the COMMIT.
    let mut p2 = b.client_with(opts.clone()).await;
    p2.commit("tx-42")
        .await
        .expect("a committed transaction is confirmed again");
    // Replaying the whole transaction with the same id applies nothing twice.
    p2.begin("tx-42").await.unwrap();
    p2.send("/queue/retry", "once", &[("transaction", "tx-42")])
        .await
        .unwrap();
    p2.commit("tx-42").await.unwrap();
    // A transaction that never committed is reported as such.
    let err = p2.commit("tx-43").await.unwrap_err();
    assert!(
        err.broker_message().unwrap().contains("was not committed"),
        "{err}"
    );
    assert_eq!(b.depth("retry").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_takes_over_the_client_id() {
    let b = TestBroker::start().await;
    let opts = ConnectOptions {
        client_id: Some("dup".into()),
        ..Default::default()
    };
    let mut first = b.client_with(opts.clone()).await;
    let _second = b.client_with(opts).await;
    let err = first.recv_timeout(WAIT).await.unwrap_err();
    assert!(
        err.broker_message()
            .unwrap_or_default()
            .contains("took over"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_returns_unacked_messages() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/ret", &["1", "2", "3"], &[]).await;
    let mut c = b.client().await;
    c.subscribe("/queue/ret", "s", "client-individual", &[])
        .await
        .unwrap();
    let got = recv_n(&mut c, 3).await;
    c.ack(&got[1], None).await.unwrap();
    drop(c); // an abrupt close, no DISCONNECT
    let mut c2 = b.client().await;
    c2.subscribe("/queue/ret", "s", "client-individual", &[])
        .await
        .unwrap();
    let again = recv_n(&mut c2, 2).await;
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["1", "3"]);
    nothing(&mut c2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacknowledged_messages() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/pf", &["1", "2", "3", "4"], &[]).await;
    let mut c = b.client().await;
    c.subscribe(
        "/queue/pf",
        "s",
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await
    .unwrap();
    let got = recv_n(&mut c, 2).await;
    nothing(&mut c).await;
    c.ack(&got[0], None).await.unwrap();
    assert_eq!(body(&recv(&mut c).await), "3");
    nothing(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_share_without_duplicates() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    for i in 0..200 {
        p.send_frame(send_frame("/queue/work", format!("{i}"), &[]))
            .await
            .unwrap();
    }
    p.send("/queue/work", "200", &[]).await.unwrap();
    let mut handles = Vec::new();
    for w in 0..3 {
        let addr = b.addr.clone();
        handles.push(tokio::spawn(async move {
            let mut c = postbus_tests::connect(&addr).await;
            c.subscribe(
                "/queue/work",
                &format!("w{w}"),
                "client-individual",
                &[("prefetch", "5")],
            )
            .await
            .unwrap();
            let mut seen = Vec::new();
            while let Some(f) = c.recv_timeout(Duration::from_millis(800)).await.unwrap() {
                seen.push(body(&f).parse::<u32>().unwrap());
                c.ack(&f, None).await.unwrap();
            }
            seen
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for h in handles {
        let seen = h.await.unwrap();
        // Each consumer sees its share in FIFO order.
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "out of order: {seen:?}"
        );
        busy += usize::from(!seen.is_empty());
        all.extend(seen);
    }
    all.sort_unstable();
    assert_eq!(all, (0..=200).collect::<Vec<_>>());
    assert!(busy >= 2, "the load was not shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_groups_stay_on_one_consumer_in_order() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    for i in 0..30 {
        let g = format!("g{}", i % 3);
        let seq = (i / 3).to_string();
        p.send_frame(send_frame(
            "/queue/grp",
            format!("{g}:{seq}"),
            &[("JMSXGroupID", &g), ("JMSXGroupSeq", &seq)],
        ))
        .await
        .unwrap();
    }
    p.send(
        "/queue/grp",
        "end",
        &[("JMSXGroupID", "g0"), ("JMSXGroupSeq", "10")],
    )
    .await
    .unwrap();
    let mut c1 = b.client().await;
    c1.subscribe("/queue/grp", "a", "client-individual", &[("prefetch", "4")])
        .await
        .unwrap();
    let mut c2 = b.client().await;
    c2.subscribe("/queue/grp", "b", "client-individual", &[("prefetch", "4")])
        .await
        .unwrap();
    // c1 takes a few messages and dies without acking: its groups move to c2 starting with
    // their first unacknowledged message.
    let mut first = Vec::new();
    while let Some(f) = c1.recv_timeout(Duration::from_millis(300)).await.unwrap() {
        first.push(body(&f));
        if first.len() == 3 {
            break;
        }
    }
    drop(c1);
    let mut per_group: std::collections::HashMap<String, Vec<u32>> = Default::default();
    while let Some(f) = c2.recv_timeout(Duration::from_millis(1500)).await.unwrap() {
        let g = f.header("JMSXGroupID").unwrap().to_owned();
        per_group
            .entry(g)
            .or_default()
            .push(f.header("JMSXGroupSeq").unwrap().parse().unwrap());
        c2.ack(&f, None).await.unwrap();
    }
    for (g, seqs) in &per_group {
        let expected: Vec<u32> = (0..seqs.len() as u32)
            .map(|i| {
                i + (if g == "g0" {
                    11 - seqs.len() as u32
                } else {
                    10 - seqs.len() as u32
                })
            })
            .collect();
        assert_eq!(
            seqs, &expected,
            "group {g} out of order or with gaps (c1 had {first:?})"
        );
    }
    let total: usize = per_group.values().map(Vec::len).sum();
    assert_eq!(
        total, 31,
        "every message is delivered to c2 after c1 died (c1 had {first:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_takes_over_from_the_first_unacked() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/ex", &["1", "2", "3", "4"], &[]).await;
    let mut c1 = b.client().await;
    c1.subscribe(
        "/queue/ex",
        "a",
        "client-individual",
        &[("exclusive", "true")],
    )
    .await
    .unwrap();
    let mut c2 = b.client().await;
    c2.subscribe(
        "/queue/ex",
        "b",
        "client-individual",
        &[("activemq.exclusive", "true")],
    )
    .await
    .unwrap();
    let got = recv_n(&mut c1, 4).await;
    nothing(&mut c2).await;
    c1.ack(&got[0], None).await.unwrap();
    drop(c1);
    let again = recv_n(&mut c2, 3).await;
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["2", "3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_persistent_messages_are_delivered_as_such() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    p.send("/queue/np", "fast", &[("persistent", "false")])
        .await
        .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/np", "s", "auto", &[]).await.unwrap();
    let m = recv(&mut c).await;
    assert_eq!(m.header("persistent"), Some("false"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_typed_properties_pass_through() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    p.send(
        "/queue/hdr",
        "{\"x\":1}",
        &[
            ("content-type", "application/json"),
            ("correlation-id", "corr-1"),
            ("reply-to", "/queue/replies"),
            ("type", "trade.v1"),
            ("JMSXUserID", "mallory"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("amount", "15000.5"),
            ("qty", "7"),
            ("postbus-types", "amount:double,qty:int"),
            ("region", "EU"),
        ],
    )
    .await
    .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/hdr", "s", "auto", &[]).await.unwrap();
    let m = recv(&mut c).await;
    assert_eq!(m.header("content-type"), Some("application/json"));
    assert_eq!(m.header("correlation-id"), Some("corr-1"));
    assert_eq!(m.header("reply-to"), Some("/queue/replies"));
    assert_eq!(m.header("type"), Some("trade.v1"));
    assert_eq!(
        m.header("JMSXUserID"),
        Some("anonymous"),
        "a client-supplied JMSXUserID is never trusted: it is the authenticated principal"
    );
    assert_eq!(
        m.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(m.header("amount"), Some("15000.5"));
    assert_eq!(m.header("region"), Some("EU"));
    assert_eq!(m.header("postbus-types"), Some("amount:double,qty:int"));
    assert!(m.header("timestamp").unwrap().parse::<i64>().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_nul_bytes_survives() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    p.send(
        "/queue/bin",
        payload.clone(),
        &[("content-type", "application/octet-stream")],
    )
    .await
    .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/bin", "s", "auto", &[]).await.unwrap();
    assert_eq!(recv(&mut c).await.body.as_ref(), payload.as_slice());
}

/// Sends a frame and expects an ERROR naming `needle`; then checks a confirmed message is
/// still there and other connections are unaffected.
async fn expect_error(b: &TestBroker, frame_bytes: &[u8], needle: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        .await
        .unwrap();
    s.write_all(frame_bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let err = text
        .split("ERROR\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no ERROR frame for {needle:?}: {text:?}"));
    // Header values are escaped in STOMP 1.2 (':' is sent as \c).
    let message = err
        .lines()
        .find(|l| l.starts_with("message:"))
        .unwrap_or("")
        .replace("\\c", ":");
    assert!(
        message.contains(needle),
        "ERROR message {message:?} does not name {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_named_error_and_loses_nothing() {
    let mut cfg = test_config();
    cfg.max_headers = 20;
    cfg.max_frame_bytes = 64 * 1024;
    cfg.max_body_bytes = 32 * 1024;
    cfg.auto_create_queues = false;
    let b = TestBroker::start_with(cfg).await;
    b.create_queue("safe", QueueSettings::default()).await;
    let mut other = b.client().await;
    other.send("/queue/safe", "confirmed", &[]).await.unwrap();

    expect_error(
        &b,
        b"SEND\ndestination:/queue/safe\npriority:12\n\nx\0",
        "priority:12",
    )
    .await;
    expect_error(
        &b,
        b"SEND\ndestination:/queue/safe\ndelay:-5\n\nx\0",
        "delay:-5",
    )
    .await;
    expect_error(&b, b"FROB\n\n\0", "FROB").await;
    expect_error(&b, b"ACK\nid:ID:999999\n\n\0", "not in flight").await;
    expect_error(
        &b,
        b"SEND\ndestination:/queue/nope\n\nx\0",
        "does not exist",
    )
    .await;
    expect_error(&b, b"SEND\ndestination:/queue/bad name\n\nx\0", "' '").await;
    expect_error(
        &b,
        b"SEND\ndestination:/queue/safe\ncontent-length:-1\n\nx\0",
        "content-length",
    )
    .await;
    expect_error(
        &b,
        b"SEND\ndestination:/queue/safe\nno colon here\n\nx\0",
        "header",
    )
    .await;
    let many: String = (0..30).map(|i| format!("h{i}:v\n")).collect();
    expect_error(
        &b,
        format!("SEND\ndestination:/queue/safe\n{many}\nx\0").as_bytes(),
        "headers",
    )
    .await;
    let big = vec![b'x'; 40 * 1024];
    let mut frame = b"SEND\ndestination:/queue/safe\n\n".to_vec();
    frame.extend_from_slice(&big);
    frame.push(0);
    expect_error(&b, &frame, "body").await;
    expect_error(
        &b,
        b"SUBSCRIBE\ndestination:/queue/safe\nid:1\nack:sometimes\n\n\0",
        "ack:sometimes",
    )
    .await;
    expect_error(&b, b"COMMIT\ntransaction:nope\n\n\0", "nope").await;
    expect_error(&b, b"MESSAGE\n\n\0", "server frame").await;

    // Nothing confirmed was lost, and the other connection still works.
    other.send("/queue/safe", "still fine", &[]).await.unwrap();
    other
        .subscribe("/queue/safe", "s", "auto", &[])
        .await
        .unwrap();
    assert_eq!(body(&recv(&mut other).await), "confirmed");
    assert_eq!(body(&recv(&mut other).await), "still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_carries_the_receipt_id() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    c.send_frame(send_frame(
        "/queue/q",
        "x",
        &[("priority", "99"), ("receipt", "r-77")],
    ))
    .await
    .unwrap();
    let err = c.next_any().await.unwrap();
    assert_eq!(err.command, Command::Error);
    assert_eq!(err.header("receipt-id"), Some("r-77"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_its_heart_beat_grace() {
    let mut cfg = test_config();
    cfg.heartbeat_ms = 200;
    let b = TestBroker::start_with(cfg).await;
    let mut c = b
        .client_with(ConnectOptions {
            heartbeat: (200, 0),
            ..Default::default()
        })
        .await;
    assert_eq!(c.connected.header("heart-beat"), Some("200,200"));
    // We promised a beat every 200 ms and send none.
    let err = tokio::time::timeout(WAIT, c.next_any())
        .await
        .expect("dropped in time");
    let frame = err.expect("an ERROR frame before the close");
    assert_eq!(frame.command, Command::Error);
    assert!(frame.header("message").unwrap().contains("heart-beat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_heart_beats() {
    let mut cfg = test_config();
    cfg.heartbeat_ms = 100;
    let b = TestBroker::start_with(cfg).await;
    let c = b
        .client_with(ConnectOptions {
            heartbeat: (0, 100),
            ..Default::default()
        })
        .await;
    drop(c);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\nheart-beat:0,100\n\n\0")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = &buf[..n];
    let after = text.split(|b| *b == 0).nth(1).unwrap_or(&[]);
    assert!(
        after.iter().filter(|b| **b == b'\n').count() >= 2,
        "heart-beats after CONNECTED: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    let mut cfg = test_config();
    cfg.max_connections = 2;
    let b = TestBroker::start_with(cfg).await;
    let _a = b.client().await;
    let _b = b.client().await;
    let err = match Client::connect(&b.addr, &ConnectOptions::default()).await {
        Err(e) => e,
        Ok(_) => panic!("a third connection was admitted"),
    };
    assert!(
        err.broker_message()
            .unwrap_or_default()
            .contains("too many connections"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_negotiated() {
    let b = TestBroker::start().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (accept, expect) in [
        ("1.0", "version:1.0"),
        ("1.1,1.0", "version:1.1"),
        ("1.2,1.1", "version:1.2"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
        s.write_all(format!("CONNECT\naccept-version:{accept}\n\n\0").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).contains(expect),
            "{accept}"
        );
    }
    let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    s.write_all(b"CONNECT\naccept-version:2.0\n\n\0")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    assert!(String::from_utf8_lossy(&buf).starts_with("ERROR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_operation_limit_is_enforced() {
    let mut cfg = test_config();
    cfg.max_transaction_operations = 3;
    cfg.max_open_transactions = 1;
    let b = TestBroker::start_with(cfg).await;
    let mut c = b.client().await;
    c.begin("t").await.unwrap();
    for _ in 0..3 {
        c.send("/queue/lim", "x", &[("transaction", "t")])
            .await
            .unwrap();
    }
    let err = c
        .send("/queue/lim", "x", &[("transaction", "t")])
        .await
        .unwrap_err();
    assert!(
        err.broker_message()
            .unwrap()
            .contains("limit of 3 operations"),
        "{err}"
    );
    let mut c2 = b.client().await;
    c2.begin("a").await.unwrap();
    let err = c2.begin("b").await.unwrap_err();
    assert!(
        err.broker_message()
            .unwrap()
            .contains("too many open transactions"),
        "{err}"
    );
    assert_eq!(b.depth("lim").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_move_to_the_expiry_queue_when_one_is_set() {
    let b = TestBroker::start().await;
    b.create_queue(
        "orders",
        QueueSettings {
            expiry_queue: Some("EXPIRED.orders".into()),
            ..Default::default()
        },
    )
    .await;
    let mut p = b.client().await;
    p.send(
        "/queue/orders",
        "too late",
        &[("ttl", "50"), ("region", "EU")],
    )
    .await
    .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/EXPIRED.orders", "s", "auto", &[])
        .await
        .unwrap();
    let m = recv(&mut c).await;
    assert_eq!(body(&m), "too late");
    assert_eq!(m.header("dlq-reason"), Some("expired"));
    assert_eq!(m.header("original-destination"), Some("/queue/orders"));
    assert_eq!(m.header("region"), Some("EU"));
    assert_eq!(
        m.header("expires"),
        Some("0"),
        "a moved expired message does not expire again"
    );
    assert_eq!(b.depth("orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_delay_backs_off_exponentially() {
    let b = TestBroker::start().await;
    b.create_queue(
        "backoff",
        QueueSettings {
            redelivery_delay_ms: 200,
            redelivery_backoff: 3.0,
            redelivery_max_delay_ms: 10_000,
            ..Default::default()
        },
    )
    .await;
    let mut p = b.client().await;
    p.send("/queue/backoff", "m", &[]).await.unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/backoff", "s", "client-individual", &[])
        .await
        .unwrap();
    let m1 = recv(&mut c).await;
    c.nack(&m1, None).await.unwrap();
    let t = std::time::Instant::now();
    let m2 = recv(&mut c).await;
    let first = t.elapsed();
    c.nack(&m2, None).await.unwrap();
    let t = std::time::Instant::now();
    let m3 = recv(&mut c).await;
    let second = t.elapsed();
    assert_eq!(m3.header("JMSXDeliveryCount"), Some("3"));
    assert!(
        first >= Duration::from_millis(150),
        "first redelivery after {first:?}"
    );
    assert!(
        second >= Duration::from_millis(550),
        "second redelivery after {second:?} (200 ms × 3)"
    );
    assert!(second > first, "{second:?} should exceed {first:?}");
}

/// A consumer that acks and leaves while the dispatcher is claiming its next message must not
/// leave that message held by nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_stays_in_flight_after_the_last_consumer_leaves() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    for i in 0..40 {
        p.send_frame(send_frame("/queue/leave", format!("{i}"), &[]))
            .await
            .unwrap();
    }
    p.send("/queue/leave", "40", &[]).await.unwrap();
    for _ in 0..20 {
        let mut c = b.client().await;
        c.subscribe(
            "/queue/leave",
            "s",
            "client-individual",
            &[("prefetch", "1")],
        )
        .await
        .unwrap();
        let m = recv(&mut c).await;
        c.ack(&m, None).await.unwrap();
        c.disconnect().await.unwrap();
    }
    // A message claimed just as a consumer left is given back right after; it must not stay held.
    let mut last = (0, 0);
    for _ in 0..30 {
        let stats = b.store.destination_stats().await.unwrap();
        let q = stats.iter().find(|s| s.name == "leave").unwrap();
        last = (q.ready, q.in_flight);
        if last == (21, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, (21, 0), "every message not acked is available again");
}

/// When consumers keep up, a message goes from the producer's batch to the consumer without a
/// claim statement: it is claimed in the insert and dispatched from memory, so the message row
/// is inserted and deleted, never updated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_messages_are_dispatched_from_memory_without_a_claim_update() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    c.subscribe("/queue/fresh", "s", "client-individual", &[])
        .await
        .unwrap();
    // Let the first (empty) claim find the queue drained.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = b.client().await;
    for i in 0..50 {
        p.send("/queue/fresh", format!("{i}"), &[]).await.unwrap();
    }
    let got = recv_n(&mut c, 50).await;
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        (0..50).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    for m in &got {
        c.ack(m, None).await.unwrap();
    }
    // PostgreSQL publishes table statistics about once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = postbus_tests::sql(
        &b.url,
        "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'messages'",
    )
    .await;
    let n = |i: usize| rows[0][i].as_deref().unwrap().parse::<i64>().unwrap();
    assert_eq!(
        (n(0), n(2)),
        (50, 50),
        "every message inserted and deleted once"
    );
    assert_eq!(
        n(1),
        0,
        "no claim UPDATE for messages dispatched from memory"
    );
}

/// A consumer that falls behind fills its queue's dispatch buffer; the producer is held back
/// for a while (producer flow control), then its messages spill into the table. Delivery stays
/// FIFO across the three places a message can wait: in flight, in the buffer, in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dispatch_buffer_spills_to_the_table_in_order() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        dispatch_buffer_messages: 3,
        producer_flow_control_ms: 200,
        ..test_config()
    })
    .await;
    let mut c = b.client().await;
    c.subscribe(
        "/queue/spill",
        "s",
        "client-individual",
        &[("prefetch", "1")],
    )
    .await
    .unwrap();
    // Let the dispatcher's first claim find the queue empty (fresh messages then skip it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = b.client().await;
    let bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    for m in &bodies {
        p.send("/queue/spill", m.clone(), &[]).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..30 {
        let f = recv(&mut c).await;
        got.push(body(&f));
        c.ack(&f, None).await.unwrap();
    }
    assert_eq!(got, bodies);
    nothing(&mut c).await;
}

/// With at most one unfinished write per connection the broker reads a pipelining producer
/// one frame at a time: nothing is lost, nothing reordered, nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unconfirmed_frames_limit_reads_a_pipelining_producer_in_order() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        max_unconfirmed_frames: 1,
        ..test_config()
    })
    .await;
    let mut p = b.client().await;
    for i in 0..50 {
        let mut f = send_frame("/queue/pipe", format!("{i}"), &[]);
        if i == 49 {
            f.push_header("receipt", "last");
        }
        p.feed_frame(f).await.unwrap();
    }
    p.flush().await.unwrap();
    p.wait_receipt("last").await.unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/pipe", "s", "auto", &[]).await.unwrap();
    let got = recv_n(&mut c, 50).await;
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        (0..50).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

/// A message held by a broker node that no longer exists (declared dead while it was paused,
/// it claimed before it learned so) is taken back by the next broker that starts, and is
/// marked redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_a_vanished_node_are_taken_back() {
    let a = TestBroker::start().await;
    let mut p = a.client().await;
    p.send("/queue/orphan", "held", &[]).await.unwrap();
    postbus_tests::sql(
        &a.url,
        "UPDATE postbus.messages SET owner = 987654321 WHERE owner IS NULL",
    )
    .await;
    let b = TestBroker::on_database(
        &a.url,
        a.store.clone(),
        postbus_broker::BrokerConfig {
            node_name: Some("orphan-b".into()),
            ..test_config()
        },
    )
    .await;
    let mut c = b.client().await;
    c.subscribe("/queue/orphan", "s", "auto", &[])
        .await
        .unwrap();
    let m = recv(&mut c).await;
    assert_eq!(body(&m), "held");
    assert_eq!(m.header("redelivered"), Some("true"));
}

/// A browse (`browse:true`) shows what a queue holds, in delivery order and through a
/// selector, ends with a `browser:end` marker, and takes nothing: a consumer then receives
/// every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsing_shows_a_queue_without_taking_anything() {
    let b = TestBroker::start().await;
    let mut p = b.client().await;
    send_all(&mut p, "/queue/look", &["a", "b"], &[]).await;
    p.send("/queue/look", "urgent", &[("priority", "9"), ("kind", "x")])
        .await
        .unwrap();
    p.send("/queue/look", "grouped", &[("JMSXGroupID", "g")])
        .await
        .unwrap();
    let mut browser = b.client().await;
    browser
        .subscribe("/queue/look", "b", "auto", &[("browse", "true")])
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let f = recv(&mut browser).await;
        if f.header("browser") == Some("end") {
            assert!(f.body.is_empty());
            break;
        }
        assert_eq!(
            f.header("ack"),
            None,
            "browsed messages are not acknowledged"
        );
        seen.push(body(&f));
    }
    assert_eq!(seen, ["urgent", "a", "b", "grouped"]);

    // Through a selector.
    browser
        .subscribe(
            "/queue/look",
            "s",
            "auto",
            &[("browse", "true"), ("selector", "kind = 'x'")],
        )
        .await
        .unwrap();
    assert_eq!(body(&recv(&mut browser).await), "urgent");
    assert_eq!(recv(&mut browser).await.header("browser"), Some("end"));

    let mut c = b.client().await;
    c.subscribe("/queue/look", "c", "auto", &[]).await.unwrap();
    let mut got: Vec<String> = recv_n(&mut c, 4).await.iter().map(body).collect();
    got.sort();
    assert_eq!(got, ["a", "b", "grouped", "urgent"]);
}
