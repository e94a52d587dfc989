//! Hostile clients (issue 9, docs/reliability.md): each abuse hits a configurable limit of the
//! real `postbusd` and gets an ERROR frame that names it, while a well-behaved client keeps
//! sending and receiving beside it; its p99 round trip during the abuse is compared with its
//! p99 before, and the broker's peak RSS (VmHWM) is reported and bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postbus_tests::{BrokerProcess, fresh_database, p99, steady_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT: &[u8] = b"CONNECT\naccept-version:1.2\nhost:x\n\n\0";

/// Writes `bytes` (after a CONNECT unless `bytes` is the handshake itself) and returns the
/// `message` header of the ERROR frame the broker answers with.
async fn error_for(addr: &str, connect_first: bool, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if connect_first {
        s.write_all(CONNECT).await.unwrap();
    }
    // The broker may close while we are still writing a huge frame: that is its answer too.
    let _ = s.write_all(bytes).await;
    read_error(&mut s).await
}

async fn read_error(s: &mut TcpStream) -> String {
    read_error_after(s, Vec::new()).await
}

/// [`read_error`] when `buf` already holds the start of the answer.
async fn read_error_after(s: &mut TcpStream, mut buf: Vec<u8>) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let err = text
        .split("ERROR\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no ERROR frame: {:?}", &text[..text.len().min(300)]));
    err.lines()
        .find(|l| l.starts_with("message:"))
        .unwrap_or("")
        .replace("\\c", ":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_abuse_is_refused_by_name_and_others_are_served() {
    let url = fresh_database().await;
    let broker = BrokerProcess::spawn(
        &url,
        &[
            ("POSTBUS_BROKER_CONNECT_TIMEOUT_MS", "2000"),
            ("POSTBUS_BROKER_MAX_CONNECTIONS_PER_PRINCIPAL", "40"),
        ],
    )
    .await
    .unwrap();
    let addr = broker.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let steady = tokio::spawn(steady_client(addr.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let abuse_start = Instant::now();

    let mut refused: Vec<(&str, String)> = Vec::new();
    // An oversized frame (default limit: 4 MiB body).
    let mut big = b"SEND\ndestination:/queue/x\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
    big.push(0);
    refused.push(("oversized frame", error_for(&addr, true, &big).await));
    // 10,000 headers (default limit 256).
    let mut many = b"SEND\ndestination:/queue/x\n".to_vec();
    for i in 0..10_000 {
        many.extend(format!("h{i}:v\n").as_bytes());
    }
    many.extend(b"\nx\0");
    refused.push(("10,000 headers", error_for(&addr, true, &many).await));
    // A 1 MiB header line (default limit 64 KiB).
    let mut line = b"SEND\ndestination:/queue/x\nh:".to_vec();
    line.extend(std::iter::repeat_n(b'v', 1024 * 1024));
    line.extend(b"\n\nx\0");
    refused.push(("1 MiB header line", error_for(&addr, true, &line).await));
    // Negative and overflowing content-length.
    refused.push((
        "negative content-length",
        error_for(
            &addr,
            true,
            b"SEND\ndestination:/queue/x\ncontent-length:-5\n\nx\0",
        )
        .await,
    ));
    refused.push((
        "overflowing content-length",
        error_for(
            &addr,
            true,
            b"SEND\ndestination:/queue/x\ncontent-length:99999999999999999999999\n\nx\0",
        )
        .await,
    ));
    // CONNECT at 1 byte a second: the handshake has connect_timeout_ms (here 2 s) in all.
    let slow = {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        for b in CONNECT.iter().take(4) {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        read_error(&mut s).await
    };
    refused.push(("CONNECT at 1 byte/s", slow));
    // 10,000 subscriptions on one connection (default limit 1,000).
    let mut subs = Vec::new();
    for i in 0..10_000 {
        subs.extend(
            format!("SUBSCRIBE\ndestination:/queue/subs\nid:{i}\nack:auto\n\n\0").as_bytes(),
        );
    }
    refused.push(("10,000 subscriptions", error_for(&addr, true, &subs).await));
    // 1,000,000 sends in one transaction (default limit 10,000 operations): the broker stops
    // it at the limit, so the abuser writes only a little past it.
    let mut tx = b"BEGIN\ntransaction:t\n\n\0".to_vec();
    for _ in 0..10_050 {
        tx.extend(b"SEND\ndestination:/queue/txq\ntransaction:t\n\nx\0");
    }
    refused.push((
        "1M sends in one transaction",
        error_for(&addr, true, &tx).await,
    ));
    // 100 open transactions (default limit 16).
    let mut open = Vec::new();
    for i in 0..100 {
        open.extend(format!("BEGIN\ntransaction:t{i}\n\n\0").as_bytes());
    }
    refused.push(("100 open transactions", error_for(&addr, true, &open).await));
    // A 1 MiB selector and one nested 10,000 deep (defaults: 4 KiB, depth 64).
    let long = format!(
        "SUBSCRIBE\ndestination:/queue/sel\nid:1\nselector:{}\n\n\0",
        "a = 1 OR ".repeat(1024 * 1024 / 9) + "a = 1"
    );
    // The header line limit (64 KiB) or the selector limit refuses it, each by name.
    refused.push((
        "1 MiB selector",
        error_for(&addr, true, long.as_bytes()).await,
    ));
    let deep = |n: usize| {
        format!(
            "SUBSCRIBE\ndestination:/queue/sel\nid:1\nselector:{}a = 1{}\n\n\0",
            "(".repeat(n),
            ")".repeat(n)
        )
    };
    // 10,000 deep is 20 KB: the length limit refuses it; 2,000 deep fits in 4 KiB and the
    // depth limit (64) refuses it.
    refused.push((
        "selector nested 10,000 deep",
        error_for(&addr, true, deep(10_000).as_bytes()).await,
    ));
    refused.push((
        "selector nested 2,000 deep",
        error_for(&addr, true, deep(2_000).as_bytes()).await,
    ));
    // Too many connections for one principal (here 40; the steady client holds one).
    let mut held = Vec::new();
    let mut too_many = None;
    for _ in 0..45 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(CONNECT).await.unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).await.unwrap();
        if &buf == b"CONNECTED" {
            held.push(s);
        } else {
            too_many = Some(read_error_after(&mut s, buf.to_vec()).await);
            break;
        }
    }
    refused.push((
        "too many connections per principal",
        too_many.expect("the 41st connection is refused"),
    ));
    drop(held);
    let abuse_end = Instant::now();
    // The refused connection is in the audit log as such (written within 100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused_audited = postbus_tests::count(
        &broker.url,
        "SELECT count(*) FROM postbus.audit_log WHERE kind = 'connect.refused' \
         AND detail->>'reason' LIKE '%max_connections_per_principal%'",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let samples = steady.await.unwrap();
    let before: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t < abuse_start)
        .map(|(_, d)| *d)
        .collect();
    let during: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t >= abuse_start && *t < abuse_end)
        .map(|(_, d)| *d)
        .collect();
    let (base, abused) = (p99(&before), p99(&during));
    let rss_mb = postbus_tests::proc_status_kb(broker.pid().unwrap(), "VmHWM:") as f64 / 1024.0;
    for (what, message) in &refused {
        eprintln!("{what:40} -> {message}");
    }
    eprintln!(
        "steady client: p99 {:.2} ms before ({} round trips), {:.2} ms during the abuse ({}); broker peak RSS {rss_mb:.1} MB",
        base.as_secs_f64() * 1000.0,
        before.len(),
        abused.as_secs_f64() * 1000.0,
        during.len()
    );
    let want = [
        ("oversized frame", "body"),
        ("10,000 headers", "headers"),
        ("1 MiB header line", "header line"),
        ("negative content-length", "content-length"),
        ("overflowing content-length", "content-length"),
        ("CONNECT at 1 byte/s", "no CONNECT frame within 2000 ms"),
        ("10,000 subscriptions", "subscriptions"),
        ("1M sends in one transaction", "limit of 10000 operations"),
        ("100 open transactions", "transactions"),
        ("1 MiB selector", "header line"),
        ("selector nested 10,000 deep", "the limit is 4096 bytes"),
        ("selector nested 2,000 deep", "nested too deeply"),
        (
            "too many connections per principal",
            "max_connections_per_principal",
        ),
    ];
    for ((what, message), (w, needle)) in refused.iter().zip(want) {
        assert_eq!(*what, w);
        assert!(
            message.contains(needle),
            "{what}: the ERROR should name {needle:?}: {message:?}"
        );
    }
    assert!(rss_mb < 300.0, "broker peak RSS {rss_mb:.1} MB");
    assert_eq!(
        refused_audited, 1,
        "the connection refused past the per-principal limit is audited as connect.refused"
    );
    assert!(
        broker.log().contains("open-files limit"),
        "postbusd logs the open-files limit it raised: {}",
        broker.log_tail()
    );
    // Within 2x the baseline; 5 ms of slack for sub-millisecond baselines on 2 shared cores.
    assert!(
        abused <= base * 2 + Duration::from_millis(5),
        "others' p99 {abused:?} during the abuse, {base:?} before"
    );
}
