//! `postbus bench`: a STOMP 1.2 load tool that works against any broker (postbus, RabbitMQ,
//! ActiveMQ), so figures compare like with like.
//!
//! Producers send persistent messages of a fixed size, with a RECEIPT on every message or
//! every N-th (the window), or in transactions of N. Consumers ack every message
//! (client-individual), alone or in transactions. Each message carries its producer, sequence
//! and send time, so the tool measures send-to-consume latency and checks that every confirmed
//! message arrived exactly once and, with groups, in group order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use postbus_client::{Client, ConnectOptions, send_frame, settle_frame};
use postbus_stomp::{Command, Frame};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Broker STOMP address.
    #[arg(long = "target", default_value = "127.0.0.1:61613")]
    pub target: String,
    #[arg(long)]
    pub login: Option<String>,
    #[arg(long)]
    pub passcode: Option<String>,
    /// The CONNECT `host` header (RabbitMQ reads it as the virtual host: use `/`).
    #[arg(long = "vhost")]
    pub vhost: Option<String>,
    /// Destination (default: a fresh queue per run).
    #[arg(long)]
    pub destination: Option<String>,
    /// Producer connections.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// How long producers send, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Ask for a RECEIPT every N messages per producer (1 = every message); the producer waits
    /// for it before sending more.
    #[arg(long, default_value_t = 100)]
    pub receipt_every: usize,
    /// Send and ack in transactions of N (0 = no transactions).
    #[arg(long, default_value_t = 0)]
    pub tx_size: usize,
    /// Spread messages over this many message groups (JMSXGroupID); 0 = none.
    #[arg(long, default_value_t = 0)]
    pub groups: usize,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 100)]
    pub prefetch: u32,
    /// Offered load in messages/s over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Send persistent:false.
    #[arg(long)]
    pub non_persistent: bool,
    /// Extra SUBSCRIBE header NAME=VALUE (repeatable), e.g. for a broker's own prefetch header.
    #[arg(long = "subscribe-header")]
    pub subscribe_headers: Vec<String>,
    /// Extra SEND header NAME=VALUE (repeatable).
    #[arg(long = "send-header")]
    pub send_headers: Vec<String>,
    /// Every K-th message carries the header `pick:yes` (the others `pick:no`), for selector
    /// runs (0 = no such header).
    #[arg(long, default_value_t = 0)]
    pub match_every: u64,
    /// Consumers subscribe with this JMS selector.
    #[arg(long)]
    pub selector: Option<String>,
    /// Only produce (fill the destination); no consumers and no delivery checks.
    #[arg(long, conflicts_with = "drain")]
    pub fill_only: bool,
    /// Only consume: no producers; the consumers stop after receiving this many messages (or
    /// 10 s without one). Reports the time to drain them.
    #[arg(long)]
    pub drain: Option<u64>,
    /// A label for the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct Shared {
    /// (producer, seq) confirmed by a receipt or a committed transaction.
    confirmed: u64,
    seen: HashSet<(u32, u64)>,
    duplicates: u64,
    group_next: HashMap<String, u64>,
    group_violations: u64,
    latency: Option<Histogram<u64>>,
    redelivered: u64,
}

fn pairs(list: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    list.iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("{h:?} is not NAME=VALUE"))
        })
        .collect()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(a: &BenchArgs) -> anyhow::Result<()> {
    let dest = a
        .destination
        .clone()
        .unwrap_or_else(|| format!("/queue/bench.{}", now_us()));
    let opts = ConnectOptions {
        login: a.login.clone(),
        passcode: a.passcode.clone(),
        host: a.vhost.clone(),
        ..Default::default()
    };
    let shared = Arc::new(Mutex::new(Shared {
        latency: Some(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        ..Default::default()
    }));
    let received = Arc::new(AtomicU64::new(0));
    let producers_done = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let sub_headers = pairs(&a.subscribe_headers)?;
    let send_headers = pairs(&a.send_headers)?;

    if let Some(n) = a.drain {
        return drain_only(a, &dest, &opts, n, &sub_headers).await;
    }
    // Consumers first, so nothing waits in the queue at the start.
    let mut consumers = Vec::new();
    let consumer_count = if a.fill_only { 0 } else { a.consumers };
    for c in 0..consumer_count {
        let mut client = Client::connect(&a.target, &opts).await?;
        let prefetch = a.prefetch.to_string();
        let mut h: Vec<(&str, &str)> = vec![
            ("prefetch", prefetch.as_str()),
            ("activemq.prefetchSize", prefetch.as_str()),
        ];
        h.extend(sub_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        client
            .subscribe(&dest, &format!("bench-{c}"), "client-individual", &h)
            .await?;
        consumers.push(tokio::spawn(consume(
            client,
            a.clone(),
            shared.clone(),
            received.clone(),
            producers_done.clone(),
        )));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    let mut producers = Vec::new();
    for p in 0..a.producers {
        let client = Client::connect(&a.target, &opts).await?;
        producers.push(tokio::spawn(produce(
            client,
            p as u32,
            a.clone(),
            dest.clone(),
            deadline,
            send_headers.clone(),
            shared.clone(),
            sent_total.clone(),
        )));
    }
    let mut producer_errors = Vec::new();
    for p in producers {
        if let Err(e) = p.await? {
            producer_errors.push(e.to_string());
        }
    }
    let send_elapsed = started.elapsed();
    producers_done.store(true, Ordering::SeqCst);
    let mut consumer_errors = Vec::new();
    for c in consumers {
        if let Err(e) = c.await? {
            consumer_errors.push(e.to_string());
        }
    }
    let elapsed = started.elapsed();
    if a.fill_only {
        let confirmed = shared.lock().unwrap().confirmed;
        let rate = confirmed as f64 / send_elapsed.as_secs_f64();
        if a.json {
            println!(
                "{}",
                serde_json::json!({"label": a.label, "destination": dest, "confirmed": confirmed, "seconds": send_elapsed.as_secs_f64(), "msgs_per_sec": rate})
            );
        } else {
            println!(
                "[{}] filled {dest} with {confirmed} confirmed messages in {:.1}s ({rate:.0} msgs/s)",
                a.label,
                send_elapsed.as_secs_f64()
            );
        }
        return if producer_errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("producer errors: {producer_errors:?}")
        };
    }
    let s = shared.lock().unwrap();
    let hist = s.latency.as_ref().expect("histogram");
    let unique = s.seen.len() as u64;
    let lost = s.confirmed.saturating_sub(unique);
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let report = serde_json::json!({
        "label": a.label,
        "target": a.target,
        "destination": dest,
        "producers": a.producers,
        "consumers": a.consumers,
        "size": a.size,
        "receipt_every": a.receipt_every,
        "tx_size": a.tx_size,
        "groups": a.groups,
        "rate": a.rate,
        "sent": sent_total.load(Ordering::SeqCst),
        "confirmed": s.confirmed,
        "received": unique,
        "seconds": elapsed.as_secs_f64(),
        "send_seconds": send_elapsed.as_secs_f64(),
        "msgs_per_sec": unique as f64 / elapsed.as_secs_f64(),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0},
        "lost": lost,
        "duplicates": s.duplicates,
        "redelivered": s.redelivered,
        "group_order_violations": s.group_violations,
        "errors": producer_errors.iter().chain(&consumer_errors).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "{label}{p}P/{c}C size={size} receipts/{re} tx={tx} groups={g}: {rate:.0} msgs/s over {secs:.1}s; \
             latency p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms; confirmed {conf}, received {recv}, lost {lost}, duplicates {dup}, group-order violations {gv}",
            label = if a.label.is_empty() {
                String::new()
            } else {
                format!("[{}] ", a.label)
            },
            p = a.producers,
            c = a.consumers,
            size = a.size,
            re = a.receipt_every,
            tx = a.tx_size,
            g = a.groups,
            rate = unique as f64 / elapsed.as_secs_f64(),
            secs = elapsed.as_secs_f64(),
            p50 = q(0.5),
            p99 = q(0.99),
            p999 = q(0.999),
            conf = s.confirmed,
            recv = unique,
            dup = s.duplicates,
            gv = s.group_violations,
        );
        for e in producer_errors.iter().chain(&consumer_errors) {
            println!("  error: {e}");
        }
    }
    if lost > 0
        || s.duplicates > 0
        || s.group_violations > 0
        || !producer_errors.is_empty()
        || !consumer_errors.is_empty()
    {
        anyhow::bail!("the broker failed the bench's checks (see the report above)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    mut client: Client,
    p: u32,
    a: BenchArgs,
    dest: String,
    deadline: Instant,
    extra: Vec<(String, String)>,
    shared: Arc<Mutex<Shared>>,
    sent_total: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let body = vec![b'x'; a.size];
    let per_producer_rate = if a.rate > 0.0 {
        a.rate / a.producers as f64
    } else {
        0.0
    };
    let started = Instant::now();
    let mut seq: u64 = 0;
    let mut group_seq: HashMap<usize, u64> = HashMap::new();
    let batch = if a.tx_size > 0 {
        a.tx_size
    } else {
        a.receipt_every.max(1)
    };
    let mut tx_n = 0u64;
    while Instant::now() < deadline {
        let tx = (a.tx_size > 0).then(|| {
            tx_n += 1;
            format!("bench-{p}-{tx_n}")
        });
        if let Some(tx) = &tx {
            client
                .feed_frame(Frame::new(Command::Begin).with_header("transaction", tx.clone()))
                .await?;
        }
        let first = seq;
        for i in 0..batch {
            if per_producer_rate > 0.0 {
                let due = started + Duration::from_secs_f64(seq as f64 / per_producer_rate);
                let now = Instant::now();
                if due > now {
                    client.flush().await?;
                    tokio::time::sleep(due - now).await;
                }
            }
            let id = format!("{p}:{seq}");
            let ts = now_us().to_string();
            let mut h: Vec<(String, String)> = vec![
                ("bench-id".into(), id),
                ("bench-ts".into(), ts),
                ("persistent".into(), (!a.non_persistent).to_string()),
            ];
            if a.groups > 0 {
                // Groups are owned by one producer each, so their order is well defined.
                let groups_here: Vec<usize> = (0..a.groups)
                    .filter(|g| g % a.producers == p as usize)
                    .collect();
                if !groups_here.is_empty() {
                    let g = groups_here[(seq as usize) % groups_here.len()];
                    let s = group_seq.entry(g).or_insert(0);
                    h.push(("JMSXGroupID".into(), format!("g{g}")));
                    h.push(("JMSXGroupSeq".into(), s.to_string()));
                    *s += 1;
                }
            }
            if a.match_every > 0 {
                let pick = if seq % a.match_every == a.match_every - 1 {
                    "yes"
                } else {
                    "no"
                };
                h.push(("pick".into(), pick.into()));
            }
            if let Some(tx) = &tx {
                h.push(("transaction".into(), tx.clone()));
            }
            if tx.is_none() && i + 1 == batch {
                h.push(("receipt".into(), format!("p{p}-{seq}")));
            }
            h.extend(extra.iter().cloned());
            let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            client
                .feed_frame(send_frame(&dest, body.clone(), &hr))
                .await?;
            seq += 1;
        }
        let receipt = format!("p{p}-{}", seq - 1);
        if let Some(tx) = &tx {
            client
                .feed_frame(
                    Frame::new(Command::Commit)
                        .with_header("transaction", tx.clone())
                        .with_header("receipt", receipt.clone()),
                )
                .await?;
        }
        client.flush().await?;
        client.wait_receipt(&receipt).await?;
        sent_total.fetch_add(seq - first, Ordering::Relaxed);
        shared.lock().unwrap().confirmed += seq - first;
    }
    client.disconnect().await?;
    Ok(())
}

async fn consume(
    mut client: Client,
    a: BenchArgs,
    shared: Arc<Mutex<Shared>>,
    received: Arc<AtomicU64>,
    producers_done: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut in_tx = 0usize;
    let mut tx_n = 0u64;
    let mut idle_since = Instant::now();
    loop {
        let m = match client.recv_timeout(Duration::from_millis(200)).await? {
            Some(m) => m,
            None => {
                if in_tx > 0 {
                    let tx = format!("bench-ack-{tx_n}");
                    client
                        .request(Frame::new(Command::Commit).with_header("transaction", tx))
                        .await?;
                    in_tx = 0;
                }
                if producers_done.load(Ordering::SeqCst) {
                    let s = shared.lock().unwrap();
                    let complete = s.seen.len() as u64 >= s.confirmed;
                    drop(s);
                    if complete || idle_since.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                }
                continue;
            }
        };
        idle_since = Instant::now();
        let now = now_us();
        {
            let mut s = shared.lock().unwrap();
            if let Some((p, n)) = m.header("bench-id").and_then(|id| id.split_once(':')) {
                let key = (p.parse().unwrap_or(0), n.parse().unwrap_or(0));
                if !s.seen.insert(key) {
                    s.duplicates += 1;
                }
            }
            if m.header("redelivered") == Some("true") {
                s.redelivered += 1;
            }
            if let Some(ts) = m.header("bench-ts").and_then(|t| t.parse::<u64>().ok()) {
                let _ = s
                    .latency
                    .as_mut()
                    .expect("histogram")
                    .record(now.saturating_sub(ts).max(1));
            }
            if let (Some(g), Some(seq)) = (
                m.header("JMSXGroupID"),
                m.header("JMSXGroupSeq").and_then(|s| s.parse::<u64>().ok()),
            ) {
                let next = s.group_next.insert(g.to_owned(), seq + 1).unwrap_or(0);
                if seq != next {
                    s.group_violations += 1;
                }
            }
        }
        received.fetch_add(1, Ordering::Relaxed);
        if a.tx_size > 0 {
            if in_tx == 0 {
                tx_n += 1;
                client
                    .feed_frame(
                        Frame::new(Command::Begin)
                            .with_header("transaction", format!("bench-ack-{tx_n}")),
                    )
                    .await?;
            }
            let tx = format!("bench-ack-{tx_n}");
            client
                .feed_frame(settle_frame(Command::Ack, &m, Some(&tx)))
                .await?;
            in_tx += 1;
            if in_tx >= a.tx_size {
                client
                    .request(Frame::new(Command::Commit).with_header("transaction", tx))
                    .await?;
                in_tx = 0;
            }
        } else {
            client
                .send_frame(settle_frame(Command::Ack, &m, None))
                .await?;
        }
    }
    client.disconnect().await?;
    Ok(())
}

/// Consumers only: receive `expect` messages from an existing queue (optionally through a
/// selector), acking each, and report the time it took.
async fn drain_only(
    a: &BenchArgs,
    dest: &str,
    opts: &ConnectOptions,
    expect: u64,
    sub_headers: &[(String, String)],
) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.consumers.max(1) {
        let mut client = Client::connect(&a.target, opts).await?;
        let prefetch = a.prefetch.to_string();
        let mut h: Vec<(&str, &str)> = vec![
            ("prefetch", prefetch.as_str()),
            ("activemq.prefetchSize", prefetch.as_str()),
        ];
        h.extend(sub_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(sel) = &a.selector {
            h.push(("selector", sel.as_str()));
        }
        client
            .subscribe(dest, &format!("drain-{c}"), "client-individual", &h)
            .await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut idle = Instant::now();
            while received.load(Ordering::SeqCst) < expect
                && idle.elapsed() < Duration::from_secs(10)
            {
                if let Some(m) = client.recv_timeout(Duration::from_millis(200)).await? {
                    idle = Instant::now();
                    received.fetch_add(1, Ordering::SeqCst);
                    client
                        .send_frame(settle_frame(Command::Ack, &m, None))
                        .await?;
                }
            }
            client.disconnect().await?;
            Ok::<_, postbus_client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let got = received.load(Ordering::SeqCst);
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"label": a.label, "destination": dest, "selector": a.selector, "received": got, "expected": expect, "seconds": secs, "msgs_per_sec": got as f64 / secs})
        );
    } else {
        println!(
            "[{}] drained {got} of {expect} from {dest}{} in {secs:.2}s ({:.0} msgs/s)",
            a.label,
            a.selector
                .as_ref()
                .map(|s| format!(" with selector {s:?}"))
                .unwrap_or_default(),
            got as f64 / secs
        );
    }
    if got < expect {
        anyhow::bail!("received {got} of the {expect} expected messages");
    }
    Ok(())
}
