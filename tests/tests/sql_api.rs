//! The SQL API (docs/sql-api.md): sending and receiving inside the application's own
//! transaction, against a real PostgreSQL and a real broker with STOMP clients on the other
//! side. Each test fails if its promise breaks.

use std::time::Duration;

use postbus_client::Client;
use postbus_model::QueueSettings;
use postbus_stomp::Frame;
use postbus_tests::{TestBroker, body, count, sql, test_config};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

async fn recv(c: &mut Client) -> Frame {
    c.recv_timeout(WAIT)
        .await
        .expect("recv")
        .expect("a message within 10 s")
}

async fn nothing(c: &mut Client) {
    if let Some(f) = c.recv_timeout(QUIET).await.expect("recv") {
        panic!("expected no message, got {:?} {}", f.headers, body(&f));
    }
}

/// A connection of the application's own, for statements inside one transaction.
async fn app(url: &str) -> postbus_store::PgClient {
    let (client, conn) = postbus_store::connect_raw(url).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// One value of one row of a simple query on `client`.
async fn one(client: &postbus_store::PgClient, query: &str) -> Option<String> {
    rows(client, query)
        .await
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

async fn rows(client: &postbus_store::PgClient, query: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for msg in client
        .simple_query(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
    {
        if let postbus_store::SimpleQueryMessage::Row(row) = msg {
            out.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    out
}

/// The error a statement fails with.
async fn error_of(client: &postbus_store::PgClient, query: &str) -> String {
    match client.simple_query(query).await {
        Ok(_) => panic!("{query} succeeded; it should have failed"),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_send_is_delivered_to_a_stomp_consumer_only_if_its_transaction_commits() {
    // Polling once a minute: a prompt delivery can only come from the commit's wake-up.
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        poll_interval_ms: 60_000,
        ..test_config()
    })
    .await;
    let mut c = b.client().await;
    c.subscribe("/queue/sql.orders", "s", "client-individual", &[])
        .await
        .unwrap();
    let a = app(&b.url).await;
    a.batch_execute(
        "BEGIN; SELECT postbus.send('/queue/sql.orders', 'rolled back'::bytea); ROLLBACK",
    )
    .await
    .unwrap();
    let id = one(
        &a,
        r#"SELECT postbus.send('sql.orders', 'committed'::bytea,
              '{"amount": 12.5, "n": 3, "region": "EU", "urgent": true}',
              property_types => '{"n": "int"}', correlation_id => 'c-1', priority => 7)"#,
    )
    .await
    .unwrap();
    let m = recv(&mut c).await;
    assert_eq!(body(&m), "committed");
    assert_eq!(m.header("message-id"), Some(id.as_str()));
    assert_eq!(m.header("amount"), Some("12.5"));
    assert_eq!(m.header("n"), Some("3"));
    assert!(
        m.header("postbus-types").unwrap().contains("n:int"),
        "{:?}",
        m.headers
    );
    assert_eq!(m.header("region"), Some("EU"));
    assert_eq!(m.header("correlation-id"), Some("c-1"));
    assert_eq!(m.header("priority"), Some("7"));
    // JMSXUserID is the database role that called postbus.send.
    let role = one(&a, "SELECT session_user").await.unwrap();
    assert_eq!(m.header("JMSXUserID"), Some(role.as_str()));
    c.ack(&m, None).await.unwrap();
    nothing(&mut c).await;
    assert_eq!(b.depth("sql.orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_receive_rolled_back_leaves_the_message_untouched_and_a_lapsed_lease_counts() {
    let b = TestBroker::start().await;
    let mut c = b.client().await;
    c.send("/queue/sql.rb", "m1", &[]).await.unwrap();
    let a = app(&b.url).await;
    let other = app(&b.url).await;

    a.batch_execute("BEGIN").await.unwrap();
    let got = rows(
        &a,
        "SELECT message_id, delivery_count, redelivered FROM postbus.receive('sql.rb')",
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][1].as_deref(), Some("1"));
    // While the receiving transaction is open nobody else gets the message.
    assert!(
        rows(&other, "SELECT * FROM postbus.receive('sql.rb')")
            .await
            .is_empty()
    );
    a.batch_execute("ROLLBACK").await.unwrap();

    // The rollback erased the receive: same message, first delivery, not redelivered.
    let again = rows(
        &a,
        "SELECT message_id, delivery_count, redelivered, receipt FROM postbus.receive('sql.rb', lease_ms => 300)",
    )
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0][0], got[0][0]);
    assert_eq!(again[0][1].as_deref(), Some("1"));
    assert_eq!(again[0][2].as_deref(), Some("f"));

    // Committed without an ack: held until the lease runs out, then back with the delivery
    // counted.
    assert!(
        rows(&other, "SELECT * FROM postbus.receive('sql.rb')")
            .await
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = rows(
        &other,
        "SELECT message_id, delivery_count, redelivered, receipt FROM postbus.receive('sql.rb')",
    )
    .await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0][0], got[0][0]);
    assert_eq!(third[0][1].as_deref(), Some("2"));
    assert_eq!(third[0][2].as_deref(), Some("t"));

    // The old receipt is fenced: it no longer holds the message.
    let stale = format!("SELECT postbus.ack('{}')", again[0][3].as_deref().unwrap());
    assert_eq!(one(&a, &stale).await.as_deref(), Some("f"));
    let fresh = format!("SELECT postbus.ack('{}')", third[0][3].as_deref().unwrap());
    assert_eq!(one(&other, &fresh).await.as_deref(), Some("t"));
    assert_eq!(one(&other, &fresh).await.as_deref(), Some("f"));
    assert_eq!(b.depth("sql.rb").await, 0);
    assert_eq!(
        count(&b.url, "SELECT count(*) FROM postbus.leases").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_work_and_ack_commit_together_or_not_at_all() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    a.batch_execute("CREATE TABLE done (message_id text PRIMARY KEY, body text)")
        .await
        .unwrap();
    for i in 0..2 {
        one(&a, &format!("SELECT postbus.send('sql.work', 'job {i}')")).await;
    }
    let work = "BEGIN; \
        WITH r AS (SELECT * FROM postbus.receive('sql.work')) \
        INSERT INTO done SELECT message_id, convert_from(body, 'UTF8') FROM r \
            WHERE postbus.ack(receipt)";
    a.batch_execute(work).await.unwrap();
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&b.url, "SELECT count(*) FROM done").await, 0);
    assert_eq!(b.depth("sql.work").await, 2);
    a.batch_execute(work).await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        sql(&b.url, "SELECT body FROM done").await[0][0].as_deref(),
        Some("job 0")
    );
    assert_eq!(b.depth("sql.work").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_nack_redelivers_and_then_dead_letters() {
    let b = TestBroker::start().await;
    b.create_queue(
        "sql.nack",
        QueueSettings {
            max_deliveries: 2,
            ..QueueSettings::default()
        },
    )
    .await;
    let a = app(&b.url).await;
    let id = one(&a, "SELECT postbus.send('sql.nack', 'poison')")
        .await
        .unwrap();
    let first = rows(
        &a,
        "SELECT receipt, delivery_count FROM postbus.receive('sql.nack')",
    )
    .await;
    assert_eq!(first[0][1].as_deref(), Some("1"));
    let nack = format!(
        "SELECT postbus.nack('{}', 'bad amount')",
        first[0][0].as_deref().unwrap()
    );
    assert_eq!(one(&a, &nack).await.as_deref(), Some("t"));
    let second = rows(
        &a,
        "SELECT receipt, delivery_count, redelivered, last_error FROM postbus.receive('sql.nack')",
    )
    .await;
    assert_eq!(second[0][1].as_deref(), Some("2"));
    assert_eq!(second[0][2].as_deref(), Some("t"));
    assert_eq!(second[0][3].as_deref(), Some("bad amount"));
    // By message id this time: the second failed delivery reaches max-deliveries.
    assert_eq!(
        one(&a, &format!("SELECT postbus.nack('{id}')"))
            .await
            .as_deref(),
        Some("t")
    );
    assert_eq!(b.depth("sql.nack").await, 0);
    let mut c = b.client().await;
    c.subscribe("/queue/DLQ.sql.nack", "d", "auto", &[])
        .await
        .unwrap();
    let m = recv(&mut c).await;
    assert_eq!(body(&m), "poison");
    assert_eq!(m.header("message-id"), Some(id.as_str()));
    assert_eq!(m.header("original-destination"), Some("/queue/sql.nack"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_publications_reach_stomp_subscribers_and_sql_reads_a_durable_subscription() {
    let b = TestBroker::start().await;
    let mut live = b.client().await;
    live.subscribe("/topic/sql.events", "live", "auto", &[])
        .await
        .unwrap();
    let mut away = b
        .client_with(postbus_client::ConnectOptions {
            client_id: Some("ledger".into()),
            ..Default::default()
        })
        .await;
    away.subscribe(
        "/topic/sql.*",
        "d",
        "client-individual",
        &[
            ("durable-subscription-name", "audit"),
            ("selector", "amount > 100"),
        ],
    )
    .await
    .unwrap();
    away.disconnect().await.unwrap();

    let a = app(&b.url).await;
    let mut ids = Vec::new();
    a.batch_execute("BEGIN").await.unwrap();
    for (i, amount) in [50, 150, 250].iter().enumerate() {
        ids.push(
            one(
                &a,
                &format!(
                    "SELECT postbus.send('/topic/sql.events', 'e{i}', '{{\"amount\": {amount}}}')"
                ),
            )
            .await
            .unwrap(),
        );
    }
    a.batch_execute("COMMIT").await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let m = recv(&mut live).await;
        assert_eq!(body(&m), format!("e{i}"));
        assert_eq!(m.header("message-id"), Some(id.as_str()));
    }
    // The durable subscription got the two its selector accepts; SQL reads them in order.
    let mut got = Vec::new();
    for _ in 0..50 {
        got = rows(
            &a,
            "SELECT message_id, convert_from(body, 'UTF8'), receipt FROM postbus.receive('/subscription/durable:ledger:audit', 10)",
        )
        .await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![(ids[1].clone(), "e1".into()), (ids[2].clone(), "e2".into())]
    );
    for r in &got {
        let ack = format!("SELECT postbus.ack('{}')", r[2].as_deref().unwrap());
        assert_eq!(one(&a, &ack).await.as_deref(), Some("t"));
    }
    // Nothing waits for a fan-out any more.
    assert_eq!(
        count(
            &b.url,
            "SELECT count(*) FROM postbus.messages WHERE topic IS NOT NULL AND publish_id IS NULL"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_dedup_id_is_enqueued_once() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    let first = one(
        &a,
        "SELECT postbus.send('sql.dedup', 'a', dedup_id => 'pay-1')",
    )
    .await;
    let second = one(
        &a,
        "SELECT postbus.send('/queue/sql.dedup', 'b', dedup_id => 'pay-1')",
    )
    .await;
    assert_eq!(first, second);
    assert_eq!(b.depth("sql.dedup").await, 1);
    // STOMP sends share the queue's dedup record.
    let mut c = b.client().await;
    c.send("/queue/sql.dedup", "c", &[("dedup-id", "pay-1")])
        .await
        .unwrap();
    assert_eq!(b.depth("sql.dedup").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_receivers_keep_group_order_and_the_broker_waits_for_their_lease() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    let other = app(&b.url).await;
    for i in 1..=3 {
        one(
            &a,
            &format!(
                "SELECT postbus.send('sql.groups', 'G{i}', group_id => 'G', group_seq => {i})"
            ),
        )
        .await;
    }
    let first = rows(
        &a,
        "SELECT convert_from(body, 'UTF8'), receipt FROM postbus.receive('sql.groups')",
    )
    .await;
    assert_eq!(first[0][0].as_deref(), Some("G1"));
    // G1 is in flight: nothing of group G may overtake it.
    assert!(
        rows(&other, "SELECT * FROM postbus.receive('sql.groups', 5)")
            .await
            .is_empty()
    );
    // A STOMP consumer cannot take the group while an SQL lease is on the queue either.
    let mut c = b.client().await;
    c.subscribe("/queue/sql.groups", "s", "client-individual", &[])
        .await
        .unwrap();
    nothing(&mut c).await;
    let ack = format!("SELECT postbus.ack('{}')", first[0][1].as_deref().unwrap());
    assert_eq!(one(&a, &ack).await.as_deref(), Some("t"));
    // The lease ended with its last message: the broker takes the groups over, in order.
    for want in ["G2", "G3"] {
        let m = recv(&mut c).await;
        assert_eq!(body(&m), want);
        c.ack(&m, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_may_call_the_api_and_read_nothing_else() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    a.batch_execute("SET ROLE postbus_app").await.unwrap();
    let id = one(&a, "SELECT postbus.send('sql.role', 'x')")
        .await
        .unwrap();
    assert!(id.starts_with("ID:"));
    let got = rows(&a, "SELECT receipt FROM postbus.receive('sql.role')").await;
    assert_eq!(got.len(), 1);
    let denied = error_of(&a, "SELECT count(*) FROM postbus.messages").await;
    assert!(denied.contains("permission denied"), "{denied}");
    let denied = error_of(&a, "SELECT postbus.expire_leases()").await;
    assert!(denied.contains("permission denied"), "{denied}");
    let ack = format!("SELECT postbus.ack('{}')", got[0][0].as_deref().unwrap());
    assert_eq!(one(&a, &ack).await.as_deref(), Some("t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_with_what_is_wrong() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    for (call, needle) in [
        ("SELECT postbus.send('q', 'x', '{\"JMSX\": 1}')", "reserved"),
        (
            "SELECT postbus.send('q', 'x', '{\"1a\": 1}')",
            "not a Java identifier",
        ),
        (
            "SELECT postbus.send('q', 'x', '[1]')",
            "must be a JSON object",
        ),
        (
            "SELECT postbus.send('q', 'x', '{\"a\": {\"b\": 1}}')",
            "must be a string, a boolean or a number",
        ),
        (
            "SELECT postbus.send('q', 'x', '{\"a\": 300}', property_types => '{\"a\": \"byte\"}')",
            "is not a byte value",
        ),
        (
            "SELECT postbus.send('q', 'x', '{\"a\": \"x\"}', property_types => '{\"a\": \"int\"}')",
            "declared int",
        ),
        (
            "SELECT postbus.send('q', 'x', priority => 12)",
            "priority 12",
        ),
        (
            "SELECT postbus.send('bad name!', 'x')",
            "not a valid queue name",
        ),
        (
            "SELECT postbus.send('/bogus/x', 'x')",
            "is not a destination",
        ),
        (
            "SELECT postbus.send('/temp-queue/nobody', 'x')",
            "does not exist",
        ),
        (
            "SELECT * FROM postbus.receive('/subscription/nothing')",
            "does not exist",
        ),
        ("SELECT postbus.send('/topic/t', 'x')", ""),
        (
            "SELECT * FROM postbus.receive('/topic/t')",
            "receive from a subscription",
        ),
        ("SELECT * FROM postbus.receive('q', 0)", "max_messages 0"),
        (
            "SELECT postbus.ack('nonsense')",
            "neither a receipt nor a message id",
        ),
    ] {
        if needle.is_empty() {
            a.batch_execute(call).await.unwrap();
            continue;
        }
        let e = error_of(&a, call).await;
        assert!(e.contains(needle), "{call}: {e}");
    }
    // A queue nobody sent to is empty, not an error.
    assert!(
        rows(&a, "SELECT * FROM postbus.receive('never.used')")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_after_many_deliveries_with_backoff_does_not_overflow() {
    let b = TestBroker::start().await;
    b.create_queue(
        "sql.backoff",
        QueueSettings {
            max_deliveries: 1000,
            redelivery_delay_ms: 1000,
            redelivery_backoff: 2.0,
            redelivery_max_delay_ms: 60_000,
            ..QueueSettings::default()
        },
    )
    .await;
    let a = app(&b.url).await;
    one(&a, "SELECT postbus.send('sql.backoff', 'x')").await;
    sql(&b.url, "UPDATE postbus.messages SET delivery_count = 80").await;
    let r = rows(&a, "SELECT receipt FROM postbus.receive('sql.backoff')").await;
    let nack = format!("SELECT postbus.nack('{}')", r[0][0].as_deref().unwrap());
    assert_eq!(one(&a, &nack).await.as_deref(), Some("t"));
    // Capped at the queue's maximum delay: due within a minute, not in the year 3000.
    let wait: i64 = count(
        &b.url,
        "SELECT (ready_at - (extract(epoch from now()) * 1000)::bigint) / 1000 FROM postbus.messages",
    )
    .await;
    assert!((50..=61).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_receivers_filter_with_registered_selectors_exactly() {
    let b = TestBroker::start().await;
    let a = app(&b.url).await;
    for (i, (currency, amount, region)) in [
        ("EUR", "20000", "EU-West"),
        ("USD", "500", "EU-North"),
        ("GBP", "50000", "EU-West"),
        ("USD", "15000", "US-East"),
        ("EUR", "12000.5", "EU-South"),
    ]
    .iter()
    .enumerate()
    {
        one(
            &a,
            &format!(
                "SELECT postbus.send('sql.sel', 'p{i}', '{{\"currency\": \"{currency}\", \"amount\": {amount}, \"region\": \"{region}\"}}')"
            ),
        )
        .await;
    }
    let selector = "currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'";
    // Not registered yet: refused with what to do.
    let e = error_of(
        &a,
        &format!(
            "SELECT * FROM postbus.receive('sql.sel', 10, selector => '{}')",
            selector.replace('\'', "''")
        ),
    )
    .await;
    assert!(e.contains("is not registered"), "{e}");
    b.store
        .register_selector(selector)
        .await
        .expect("an exact selector registers");
    let got = rows(
        &a,
        &format!(
            "SELECT convert_from(body, 'UTF8') FROM postbus.receive('sql.sel', 10, selector => '{}')",
            selector.replace('\'', "''")
        ),
    )
    .await;
    let bodies: Vec<&str> = got.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(bodies, ["p0", "p4"]);
    // The others are untouched and available to plain receivers.
    let rest = rows(
        &a,
        "SELECT convert_from(body, 'UTF8'), delivery_count FROM postbus.receive('sql.sel', 10)",
    )
    .await;
    let rest: Vec<(&str, &str)> = rest
        .iter()
        .map(|r| (r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
        .collect();
    assert_eq!(rest, [("p1", "1"), ("p2", "1"), ("p3", "1")]);
    // Selectors SQL could only approximate are refused at registration.
    for inexact in [
        "amount * 2 > 100",
        "amount > price",
        "JMSTimestamp > 1e300 * 10",
    ] {
        let e = b
            .store
            .register_selector(inexact)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot be decided exactly in SQL"),
            "{inexact}: {e}"
        );
    }
    assert!(
        b.store
            .register_selector("amount >")
            .await
            .unwrap_err()
            .to_string()
            .contains("column")
    );
}
