//! Two `postbusd` processes on one database: producers and consumers on both, one broker
//! killed with SIGKILL and left down past its lease (the other takes its in-flight messages
//! back), then restarted. No message is lost, none is delivered again after a confirmed ack,
//! no dedup id becomes two messages, and group order holds across the brokers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postbus_tests::workload::{Log, consume, drain, produce};
use postbus_tests::{BrokerProcess, fresh_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_on_one_database_stay_correct_when_one_dies() {
    let (url, _store) = fresh_store().await;
    let env = [("POSTBUS_BROKER_NODE_LEASE_MS", "1500")];
    let mut a = BrokerProcess::spawn(&url, &env)
        .await
        .expect("start broker a");
    let b = BrokerProcess::spawn(&url, &env)
        .await
        .expect("start broker b");
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = vec![
        tokio::spawn(consume(a.addr.clone(), log.clone(), stop.clone())),
        tokio::spawn(consume(b.addr.clone(), log.clone(), stop.clone())),
    ];
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let addr = if p % 2 == 0 {
                a.addr.clone()
            } else {
                b.addr.clone()
            };
            tokio::spawn(produce(addr, p, 80, log.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    // Down for longer than its lease: broker b must take back what a held.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    a.start().await.expect("restart broker a");
    for p in producers {
        p.await.expect("producer");
    }
    drain(&log, Duration::from_secs(60)).await;
    stop.store(true, Ordering::SeqCst);
    for c in consumers {
        c.await.expect("consumer");
    }
    let l = log.lock().unwrap();
    eprintln!(
        "two brokers: {} confirmed, {} deliveries ({} redelivered), {} acked",
        l.confirmed.len(),
        l.deliveries,
        l.redeliveries,
        l.acked.len()
    );
    assert_eq!(l.confirmed.len(), 4 * 80 * 3, "every transaction completes");
    let v = l.verdict();
    assert!(
        v.is_clean(),
        "{v:#?}\na: {}\nb: {}",
        a.log_tail(),
        b.log_tail()
    );
}

/// Exclusive consumers on two brokers: only one receives; when it goes, the other takes over
/// from the first unacknowledged message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_has_one_active_consumer_across_brokers() {
    use postbus_tests::{TestBroker, test_config};
    let (a, b) = TestBroker::pair("excl", test_config()).await;
    let mut p = a.client().await;
    for i in 0..6 {
        p.send("/queue/ex2", format!("{i}"), &[]).await.unwrap();
    }
    let mut ca = a.client().await;
    ca.subscribe(
        "/queue/ex2",
        "s",
        "client-individual",
        &[("exclusive", "true")],
    )
    .await
    .unwrap();
    let first = ca
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the first consumer receives");
    let mut cb = b.client().await;
    cb.subscribe(
        "/queue/ex2",
        "s",
        "client-individual",
        &[("exclusive", "true")],
    )
    .await
    .unwrap();
    assert!(
        cb.recv_timeout(Duration::from_millis(800))
            .await
            .unwrap()
            .is_none(),
        "a second exclusive consumer on another broker received"
    );
    ca.ack(&first, None).await.unwrap();
    drop(ca);
    let next = cb
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the other broker takes over");
    assert_eq!(String::from_utf8_lossy(&next.body), "1");
}

/// A message committed through one broker wakes a consumer on another at once (LISTEN/NOTIFY),
/// long before that broker's poll would find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_broker_is_woken_by_notify_not_by_its_poll() {
    use postbus_tests::{TestBroker, test_config};
    let config = postbus_broker::BrokerConfig {
        poll_interval_ms: 60_000,
        ..test_config()
    };
    let (a, b) = TestBroker::pair("wake", config).await;
    let mut c = b.client().await;
    c.subscribe("/queue/wake", "s", "auto", &[]).await.unwrap();
    // Let broker b's first (empty) claim and its LISTEN happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = a.client().await;
    p.send("/queue/wake", "hello", &[]).await.unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("woken by NOTIFY");
    assert_eq!(String::from_utf8_lossy(&m.body), "hello");
}
