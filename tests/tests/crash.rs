//! The crash test: `postbusd` is killed with SIGKILL several times while producers send
//! deduplicated transactions (retrying COMMITs whose receipt was lost) and a consumer acks
//! each message individually with a receipt. Afterwards: nothing confirmed is lost, nothing is
//! delivered again after its ack was confirmed, no dedup id becomes two messages, and no
//! message of a group overtakes an earlier one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postbus_tests::workload::{Log, consume, drain, produce};
use postbus_tests::{BrokerProcess, fresh_store};

const PRODUCERS: usize = 3;
const TRANSACTIONS_PER_PRODUCER: usize = 120;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_transactions_and_acks_loses_and_duplicates_nothing() {
    let (url, _store) = fresh_store().await;
    let mut broker = BrokerProcess::spawn(&url, &[])
        .await
        .expect("start postbusd");
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(broker.addr.clone(), log.clone(), stop.clone()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            tokio::spawn(produce(
                broker.addr.clone(),
                p,
                TRANSACTIONS_PER_PRODUCER,
                log.clone(),
            ))
        })
        .collect();

    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        broker.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.start().await.expect("restart postbusd");
    }
    for p in producers {
        p.await.expect("producer");
    }
    drain(&log, Duration::from_secs(60)).await;
    stop.store(true, Ordering::SeqCst);
    consumer.await.expect("consumer");

    let l = log.lock().unwrap();
    eprintln!(
        "crash test: {} confirmed, {} deliveries ({} redelivered), {} acked, {} kills, {} consumer connections",
        l.confirmed.len(),
        l.deliveries,
        l.redeliveries,
        l.acked.len(),
        KILLS,
        l.consumer_reconnects
    );
    assert!(
        l.consumer_reconnects > KILLS,
        "the kills must interrupt live traffic"
    );
    assert_eq!(
        l.confirmed.len(),
        PRODUCERS * TRANSACTIONS_PER_PRODUCER * 3,
        "every transaction completes"
    );
    let v = l.verdict();
    assert!(v.is_clean(), "{v:#?}\n{}", broker.log_tail());
}
