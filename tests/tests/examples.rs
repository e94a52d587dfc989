//! The seed scenarios of docs/examples.md, each a test against a real broker and PostgreSQL:
//! (a) order processing by a pool of workers; (b) a payment flow through the SQL API whose
//! books balance after thousands of transfers with connections killed mid-transaction;
//! (c) an event on a topic with a durable, a shared and a selective subscriber; (d) request and
//! reply for an airline seat reservation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postbus_client::{Client, ConnectOptions};
use postbus_stomp::Frame;
use postbus_tests::{TestBroker, body, count, sql};

const WAIT: Duration = Duration::from_secs(10);

async fn recv(c: &mut Client) -> Option<Frame> {
    c.recv_timeout(WAIT).await.expect("recv")
}

/// (a) Orders on one queue, a pool of four workers with prefetch 1. One worker crashes
/// (its connection drops) holding an order it never acknowledged: that order goes to another
/// worker, flagged as redelivered. Every order is processed, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_order_processing_by_a_pool_of_workers() {
    let b = TestBroker::start().await;
    const ORDERS: usize = 400;
    let mut shop = b.client().await;
    for i in 0..ORDERS {
        let mut f = postbus_client::send_frame("/queue/shop.orders", format!("order-{i}"), &[]);
        if i + 1 == ORDERS {
            f.push_header("receipt", "all");
        }
        shop.feed_frame(f).await.unwrap();
    }
    shop.flush().await.unwrap();
    shop.wait_receipt("all").await.unwrap();

    // The worker that crashes takes one order and dies with it.
    let mut doomed = b.client().await;
    doomed
        .subscribe(
            "/queue/shop.orders",
            "w",
            "client-individual",
            &[("prefetch", "1")],
        )
        .await
        .unwrap();
    let lost_with_worker = body(&recv(&mut doomed).await.expect("an order"));
    drop(doomed);

    let processed = Arc::new(tokio::sync::Mutex::new(Vec::<(String, bool)>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = b.client().await;
        let processed = processed.clone();
        workers.push(tokio::spawn(async move {
            c.subscribe(
                "/queue/shop.orders",
                &format!("w{w}"),
                "client-individual",
                &[("prefetch", "1")],
            )
            .await
            .unwrap();
            while let Some(m) = c.recv_timeout(Duration::from_secs(2)).await.unwrap() {
                let redelivered = m.header("redelivered") == Some("true");
                processed.lock().await.push((body(&m), redelivered));
                c.ack(&m, None).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let processed = processed.lock().await;
    let unique: HashSet<&str> = processed.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(unique.len(), ORDERS, "every order processed");
    assert_eq!(processed.len(), ORDERS, "and each once");
    let redelivered: Vec<&str> = processed
        .iter()
        .filter(|(_, r)| *r)
        .map(|(o, _)| o.as_str())
        .collect();
    assert_eq!(redelivered, [lost_with_worker.as_str()]);
    assert_eq!(b.depth("shop.orders").await, 0);
}

/// A connection of the application's own. `name` becomes its application_name, so the test
/// can find its backend and kill it.
async fn app(url: &str, name: &str) -> Option<postbus_store::PgClient> {
    let url = if url.contains('?') {
        format!("{url}&application_name={name}")
    } else {
        format!("{url}?application_name={name}")
    };
    let (client, conn) = postbus_store::connect_raw(&url).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// (b) The payer's service debits Alice and sends the payment in one SQL transaction; the
/// payee's service receives payments, credits Bob and acknowledges in one SQL transaction.
/// Meanwhile their database connections are killed at random moments, mid-transaction. Each
/// service reconnects and carries on, deciding from its own tables what is done. The books
/// balance: every transfer debited once and credited once, nothing in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_payment_flow_in_sql_transactions_balances_with_crashes() {
    let b = TestBroker::start().await;
    const TRANSFERS: i64 = 2000;
    const OPENING: i64 = 100_000_000;
    sql(
        &b.url,
        &format!(
            "CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL); \
             INSERT INTO accounts VALUES ('alice', {OPENING}), ('bob', 0); \
             CREATE TABLE sent (transfer bigint PRIMARY KEY); \
             CREATE TABLE credited (transfer bigint PRIMARY KEY, amount bigint NOT NULL)"
        ),
    )
    .await;
    let amount = |i: i64| 1 + (i * 7919) % 5000;
    let done = Arc::new(AtomicBool::new(false));

    let payer = {
        let url = b.url.clone();
        tokio::spawn(async move {
            let mut next = 0i64;
            let mut reconnects = 0;
            while next < TRANSFERS {
                let Some(c) = app(&url, "payer").await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                reconnects += 1;
                // What committed before the crash is in `sent`: carry on after it.
                next = c
                    .query_one("SELECT coalesce(max(transfer) + 1, 0) FROM sent", &[])
                    .await
                    .map(|r| r.get::<_, i64>(0))
                    .unwrap_or(next);
                while next < TRANSFERS {
                    let q = format!(
                        "BEGIN; \
                         UPDATE accounts SET balance = balance - {a} WHERE id = 'alice'; \
                         INSERT INTO sent VALUES ({next}); \
                         SELECT postbus.send('payments', 'transfer'::bytea, \
                             '{{\"transfer\": {next}, \"amount\": {a}}}', dedup_id => 'transfer-{next}'); \
                         COMMIT",
                        a = amount(next)
                    );
                    if c.batch_execute(&q).await.is_err() {
                        break;
                    }
                    next += 1;
                }
            }
            reconnects
        })
    };
    let payee = {
        let url = b.url.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut reconnects = 0;
            loop {
                let Some(c) = app(&url, "payee").await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                reconnects += 1;
                loop {
                    // Credit and acknowledge in one transaction; a crash anywhere in it puts
                    // the payments back on the queue untouched.
                    let q = "BEGIN; \
                        WITH p AS (SELECT receipt, (properties->>'transfer')::bigint AS transfer, \
                                          (properties->>'amount')::bigint AS amount \
                                   FROM postbus.receive('payments', 20)), \
                             c AS (INSERT INTO credited SELECT transfer, amount FROM p RETURNING amount) \
                        UPDATE accounts SET balance = balance + (SELECT coalesce(sum(amount), 0) FROM c) \
                        WHERE id = 'bob' AND (SELECT bool_and(postbus.ack(receipt)) FROM p) IS NOT FALSE; \
                        COMMIT";
                    if c.batch_execute(q).await.is_err() {
                        break;
                    }
                    let credited: i64 =
                        match c.query_one("SELECT count(*) FROM credited", &[]).await {
                            Ok(r) => r.get(0),
                            Err(_) => break,
                        };
                    if credited == TRANSFERS {
                        done.store(true, Ordering::SeqCst);
                        return reconnects;
                    }
                }
            }
        })
    };
    // The crashes: every 30 ms one of the two services loses its connection.
    let mut kills = 0;
    while !done.load(Ordering::SeqCst) && kills < 60 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let who = if kills % 2 == 0 { "payer" } else { "payee" };
        sql(
            &b.url,
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{who}'"),
        )
        .await;
        kills += 1;
    }
    let payer_connections = tokio::time::timeout(Duration::from_secs(120), payer)
        .await
        .expect("the payer finishes")
        .unwrap();
    let payee_connections = tokio::time::timeout(Duration::from_secs(120), payee)
        .await
        .expect("the payee drains the queue")
        .unwrap();
    assert!(
        payer_connections > 1 && payee_connections > 1,
        "both services were crashed at least once (payer {payer_connections}, payee {payee_connections} connections)"
    );

    let balances: BTreeMap<String, i64> = sql(&b.url, "SELECT id, balance FROM accounts")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let total: i64 = (0..TRANSFERS).map(amount).sum();
    assert_eq!(
        balances["alice"],
        OPENING - total,
        "each transfer debited once"
    );
    assert_eq!(balances["bob"], total, "each transfer credited once");
    assert_eq!(
        count(&b.url, "SELECT count(*) FROM credited").await,
        TRANSFERS
    );
    assert_eq!(b.depth("payments").await, 0);
}

/// (c) An order-placed event on a topic, and three subscribers: billing (durable: it was
/// offline while the events were published), shipping (a shared subscription, two instances
/// splitting the work) and fraud (only orders over 1,000, by selector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_an_event_on_a_topic_reaches_durable_shared_and_selective_subscribers() {
    let b = TestBroker::start().await;
    let billing_opts = ConnectOptions {
        client_id: Some("billing".into()),
        ..Default::default()
    };
    let mut billing = b.client_with(billing_opts.clone()).await;
    billing
        .subscribe(
            "/topic/shop.order-placed",
            "b",
            "client-individual",
            &[("durable-subscription-name", "billing")],
        )
        .await
        .unwrap();
    billing.disconnect().await.unwrap();
    let shared = [("shared", "true"), ("subscription-name", "shipping")];
    let mut ship1 = b.client().await;
    ship1
        .subscribe(
            "/topic/shop.order-placed",
            "s1",
            "client-individual",
            &shared,
        )
        .await
        .unwrap();
    let mut ship2 = b.client().await;
    ship2
        .subscribe(
            "/topic/shop.order-placed",
            "s2",
            "client-individual",
            &shared,
        )
        .await
        .unwrap();
    let mut fraud = b.client().await;
    fraud
        .subscribe(
            "/topic/shop.order-placed",
            "f",
            "auto",
            &[("selector", "total > 1000")],
        )
        .await
        .unwrap();

    let mut shop = b.client().await;
    const EVENTS: usize = 100;
    for i in 0..EVENTS {
        let total = (i * 37 % 20) * 100;
        shop.send(
            "/topic/shop.order-placed",
            format!("order-{i}"),
            &[
                ("total", &total.to_string()),
                ("postbus-types", "total:int"),
            ],
        )
        .await
        .unwrap();
    }
    let big: Vec<String> = (0..EVENTS)
        .filter(|i| (i * 37 % 20) * 100 > 1000)
        .map(|i| format!("order-{i}"))
        .collect();
    let mut got_fraud = Vec::new();
    for _ in 0..big.len() {
        got_fraud.push(body(&recv(&mut fraud).await.expect("a big order")));
    }
    assert_eq!(got_fraud, big);

    // Shipping: the two instances together see every event once.
    let mut shipped: HashMap<String, usize> = HashMap::new();
    let mut per_instance = [0usize; 2];
    while shipped.len() < EVENTS {
        tokio::select! {
            m = ship1.recv() => {
                let m = m.unwrap();
                *shipped.entry(body(&m)).or_default() += 1;
                per_instance[0] += 1;
                ship1.ack(&m, None).await.unwrap();
            }
            m = ship2.recv() => {
                let m = m.unwrap();
                *shipped.entry(body(&m)).or_default() += 1;
                per_instance[1] += 1;
                ship2.ack(&m, None).await.unwrap();
            }
            _ = tokio::time::sleep(WAIT) => panic!("shipping stalled at {} events", shipped.len()),
        }
    }
    assert!(shipped.values().all(|n| *n == 1));
    assert!(
        per_instance[0] > 0 && per_instance[1] > 0,
        "the load is shared: {per_instance:?}"
    );

    // Billing comes back and gets all of them, in order.
    let mut billing = b.client_with(billing_opts).await;
    billing
        .subscribe(
            "/topic/shop.order-placed",
            "b",
            "client-individual",
            &[
                ("durable-subscription-name", "billing"),
                ("prefetch", "100"),
            ],
        )
        .await
        .unwrap();
    for i in 0..EVENTS {
        let m = recv(&mut billing).await.expect("billing's event");
        assert_eq!(body(&m), format!("order-{i}"));
        billing.ack(&m, None).await.unwrap();
    }
}

/// (d) Seat reservation by request and reply: the reservation service answers on each
/// requester's temporary queue with the request's correlation id. Two travellers ask for the
/// same seat: exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_airline_seat_reservation_by_request_and_reply() {
    let b = TestBroker::start().await;
    let mut service = b.client().await;
    service
        .subscribe(
            "/queue/airline.reservations",
            "svc",
            "client-individual",
            &[],
        )
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let mut taken: HashMap<String, String> = HashMap::new();
        for _ in 0..3 {
            let req = service
                .recv_timeout(WAIT)
                .await
                .unwrap()
                .expect("a request");
            let seat = body(&req);
            let who = req.header("traveller").unwrap().to_owned();
            let answer = match taken.get(&seat) {
                Some(_) => format!("{seat} is taken"),
                None => {
                    taken.insert(seat.clone(), who);
                    format!("{seat} confirmed")
                }
            };
            let reply_to = req.header("reply-to").expect("reply-to").to_owned();
            let corr = req
                .header("correlation-id")
                .expect("correlation-id")
                .to_owned();
            service
                .send(&reply_to, answer, &[("correlation-id", &corr)])
                .await
                .unwrap();
            service.ack(&req, None).await.unwrap();
        }
    });
    let mut answers = Vec::new();
    for (traveller, seat) in [("ann", "12A"), ("bo", "12A"), ("cy", "14C")] {
        let mut t = b.client().await;
        t.subscribe("/temp-queue/answers", "a", "auto", &[])
            .await
            .unwrap();
        let corr = format!("{traveller}-1");
        t.send(
            "/queue/airline.reservations",
            seat,
            &[
                ("reply-to", "/temp-queue/answers"),
                ("correlation-id", &corr),
                ("traveller", traveller),
            ],
        )
        .await
        .unwrap();
        let reply = recv(&mut t).await.expect("an answer");
        assert_eq!(reply.header("correlation-id"), Some(corr.as_str()));
        answers.push(body(&reply));
    }
    server.await.unwrap();
    assert_eq!(answers, ["12A confirmed", "12A is taken", "14C confirmed"]);
}
