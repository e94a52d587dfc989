//! The fault suite's workload (issue 9, docs/reliability.md): producers send transactions of
//! 1–50 deduplicated messages, a fifth of them in one of 100 message groups with a sequence
//! number, and repeat a COMMIT whose receipt went missing (with the same transaction id, after
//! reconnecting) until they know its outcome; consumers ack each message individually with a
//! receipt, the odd-numbered ones in transactions of up to 10 acks. Every operation goes into a
//! [`History`] as the checker ([`crate::checker`]) reads it: a send is logged unknown when its
//! COMMIT's answer is missing and ok once a repeated COMMIT confirms it. Commit latencies are
//! kept with their time, for the p99 during and after a fault and the recovery time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postbus_client::{Client, ClientError, ConnectOptions, send_frame};
use postbus_stomp::{Command, Frame};

use crate::checker::{Event, Outcome, Report, check};

/// How long one STOMP request may take before the connection counts as broken (a broker
/// or database that stopped answering).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct Load {
    /// Where clients connect (brokers, or a fault proxy in front of one); a client that
    /// cannot connect or whose connection broke tries the next.
    pub addrs: Vec<String>,
    /// The queue, e.g. `/queue/faults`; its dead-letter queue is drained too.
    pub queue: String,
    pub producers: usize,
    pub consumers: usize,
    /// Pause between a producer's transactions (paces the load).
    pub pause: Duration,
    /// Transactions hold 1..=max_batch messages.
    pub max_batch: usize,
}

impl Load {
    fn dead_letter_queue(&self) -> String {
        let name = self.queue.trim_start_matches("/queue/");
        format!("/queue/DLQ.{name}")
    }
}

/// Everything the clients saw, in the order they saw it.
pub struct History {
    t0: Instant,
    events: Mutex<Vec<Event>>,
    /// (when the commit was confirmed, how long it took), for confirmed producer COMMITs.
    commits: Mutex<Vec<(Duration, Duration)>>,
    /// Dedup ids delivered so far (to know when a drain is complete).
    delivered: Mutex<std::collections::HashSet<String>>,
    /// Client connections made (each broken connection means one more).
    pub connections: std::sync::atomic::AtomicUsize,
    /// Producer COMMITs whose answer went missing, and how many of those a repeated COMMIT
    /// then found committed.
    pub in_doubt: std::sync::atomic::AtomicUsize,
    pub in_doubt_committed: std::sync::atomic::AtomicUsize,
}

impl Default for History {
    fn default() -> Self {
        History {
            t0: Instant::now(),
            events: Mutex::default(),
            commits: Mutex::default(),
            delivered: Mutex::default(),
            connections: Default::default(),
            in_doubt: Default::default(),
            in_doubt_committed: Default::default(),
        }
    }
}

impl History {
    fn push(&self, e: Event) {
        if let Event::Deliver { dedup, .. } = &e {
            self.delivered.lock().unwrap().insert(dedup.clone());
        }
        self.events.lock().unwrap().push(e);
    }

    /// Time since the history began.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Confirmed sends not delivered yet.
    pub fn undelivered(&self) -> usize {
        let delivered = self.delivered.lock().unwrap();
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Send {
                    dedup,
                    outcome: Outcome::Ok,
                    ..
                } if !delivered.contains(dedup) => Some(dedup.as_str()),
                _ => None,
            })
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The checker's count of the history so far.
    pub fn report(&self) -> Report {
        check(&self.events.lock().unwrap())
    }

    /// The p99 commit latency (ms) of commits confirmed within `from..to` (since the start).
    pub fn p99_ms(&self, from: Duration, to: Duration) -> Option<f64> {
        let mut l: Vec<f64> = self
            .commits
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, took)| took.as_secs_f64() * 1000.0)
            .collect();
        if l.is_empty() {
            return None;
        }
        l.sort_by(f64::total_cmp);
        Some(l[((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1])
    }

    /// Seconds from `since` to the first commit that both started and was confirmed after it:
    /// how long the system took to serve again.
    pub fn recovery_s(&self, since: Duration) -> Option<f64> {
        self.commits
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, took)| at.saturating_sub(*took) >= since)
            .map(|(at, _)| (*at - since).as_secs_f64())
            .reduce(f64::min)
    }
}

/// Connects, retrying for up to a minute (the broker may be restarting).
async fn connect(load: &Load, opts: &ConnectOptions, h: &History) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = h.connections.load(Ordering::Relaxed);
    loop {
        turn += 1;
        let addr = &load.addrs[turn % load.addrs.len()];
        let timeout = REQUEST_TIMEOUT.min(Duration::from_secs(3));
        match tokio::time::timeout(timeout, Client::connect(addr, opts)).await {
            Ok(Ok(c)) => {
                h.connections.fetch_add(1, Ordering::Relaxed);
                return c;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(Err(e)) => panic!("the broker did not come back within a minute: {e}"),
            Err(_) => panic!("the broker did not answer a CONNECT within a minute"),
        }
    }
}

/// A request bounded by [`REQUEST_TIMEOUT`]; a timeout is a broken connection.
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(ClientError::Protocol("no answer within 10 s".into())))
}

/// One message of a transaction.
struct Planned {
    dedup: String,
    seq: u64,
    group: Option<(String, u64)>,
}

/// A small deterministic generator (the same load on every run).
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// Whether a refused repeated COMMIT says the transaction never committed.
fn never_committed(e: &ClientError) -> bool {
    matches!(e, ClientError::Broker { message, .. } if message.contains("was not committed"))
}

/// Producer `p`: transactions until `stop`, each finished (its outcome known) before it stops.
pub async fn produce(load: Load, p: usize, stop: Arc<AtomicBool>, h: Arc<History>) {
    let opts = ConnectOptions {
        client_id: Some(format!("fault-producer-{p}")),
        ..Default::default()
    };
    let mut client = connect(&load, &opts, &h).await;
    let mut seq = 0u64;
    let mut group_seq: HashMap<String, u64> = HashMap::new();
    let mut t = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = 1 + (mix(p as u64, t) % load.max_batch as u64) as usize;
        let plan: Vec<Planned> = (0..n)
            .map(|i| {
                seq += 1;
                let r = mix(seq, p as u64 + 1000);
                // A fifth in a group: of 100, those of this producer (g % producers == p).
                let group = r.is_multiple_of(5).then(|| {
                    let per = (100 / load.producers.max(1)).max(1) as u64;
                    let g = format!("g{}", p as u64 + load.producers as u64 * (r / 5 % per));
                    let s = group_seq.entry(g.clone()).or_insert(0);
                    *s += 1;
                    (g, *s)
                });
                Planned {
                    dedup: format!("p{p}-t{t}-m{i}"),
                    seq,
                    group,
                }
            })
            .collect();
        let tx = format!("p{p}-tx{t}");
        let log = |outcome: Outcome| {
            for m in &plan {
                h.push(Event::Send {
                    dedup: m.dedup.clone(),
                    producer: p,
                    seq: m.seq,
                    group: m.group.clone(),
                    outcome,
                });
            }
        };
        loop {
            let started = Instant::now();
            let sent: Result<(), ClientError> = async {
                bounded(client.begin(&tx)).await?;
                for m in &plan {
                    let mut headers: Vec<(&str, String)> =
                        vec![("transaction", tx.clone()), ("dedup-id", m.dedup.clone())];
                    if let Some((g, s)) = &m.group {
                        headers.push(("JMSXGroupID", g.clone()));
                        headers.push(("JMSXGroupSeq", s.to_string()));
                    }
                    let hs: Vec<(&str, &str)> =
                        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    bounded(client.send_frame(send_frame(&load.queue, m.dedup.clone(), &hs)))
                        .await?;
                }
                Ok(())
            }
            .await;
            if sent.is_err() {
                // Nothing was committed: the open transaction died with its connection.
                client = connect(&load, &opts, &h).await;
                continue;
            }
            match bounded(client.commit(&tx)).await {
                Ok(()) => {
                    h.commits.lock().unwrap().push((h.now(), started.elapsed()));
                    log(Outcome::Ok);
                    break;
                }
                Err(e) if never_committed(&e) => {
                    log(Outcome::Fail);
                    client = connect(&load, &opts, &h).await;
                    continue;
                }
                Err(_) => {
                    // The answer is missing: ask by repeating the COMMIT on a new connection.
                    log(Outcome::Unknown);
                    h.in_doubt.fetch_add(1, Ordering::Relaxed);
                    let committed = loop {
                        client = connect(&load, &opts, &h).await;
                        match bounded(client.commit(&tx)).await {
                            Ok(()) => break true,
                            Err(e) if never_committed(&e) => break false,
                            Err(_) => continue,
                        }
                    };
                    if committed {
                        h.in_doubt_committed.fetch_add(1, Ordering::Relaxed);
                        log(Outcome::Ok);
                        break;
                    }
                    client = connect(&load, &opts, &h).await;
                }
            }
        }
        t += 1;
        tokio::time::sleep(load.pause).await;
    }
    let _ = client.disconnect().await;
}

/// Consumer `c`: until `stop`, receives from the queue (and consumer 0 from its dead-letter
/// queue too), acking each message with a receipt; odd consumers ack in transactions of up to
/// 10. Every connection is a new consumer for the checker (order is judged per connection).
pub async fn consume(load: Load, c: usize, stop: Arc<AtomicBool>, h: Arc<History>) {
    let transacted = c % 2 == 1;
    let mut incarnation = 0usize;
    'connect: while !stop.load(Ordering::SeqCst) {
        incarnation += 1;
        let me = c * 10_000 + incarnation;
        let mut client = connect(&load, &ConnectOptions::default(), &h).await;
        let subscribed = async {
            bounded(client.subscribe(&load.queue, "q", "client-individual", &[("prefetch", "20")]))
                .await?;
            if c == 0 {
                bounded(client.subscribe(
                    &load.dead_letter_queue(),
                    "dlq",
                    "client-individual",
                    &[],
                ))
                .await?;
            }
            Ok::<(), ClientError>(())
        }
        .await;
        if subscribed.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut tx_n = 0usize;
        loop {
            let mut batch: Vec<Frame> = Vec::new();
            let want = if transacted { 10 } else { 1 };
            while batch.len() < want {
                match client.recv_timeout(Duration::from_millis(200)).await {
                    Ok(Some(m)) => {
                        h.push(Event::Deliver {
                            dedup: String::from_utf8_lossy(&m.body).into_owned(),
                            message_id: m.header("message-id").unwrap_or_default().to_owned(),
                            consumer: me,
                            redelivered: m.header("redelivered") == Some("true"),
                        });
                        batch.push(m);
                    }
                    Ok(None) => break,
                    Err(_) => continue 'connect,
                }
            }
            if batch.is_empty() {
                if stop.load(Ordering::SeqCst) {
                    let _ = client.disconnect().await;
                    return;
                }
                continue;
            }
            let ids: Vec<String> = batch
                .iter()
                .map(|m| m.header("message-id").unwrap_or_default().to_owned())
                .collect();
            let acked: Result<(), ClientError> = if transacted {
                tx_n += 1;
                let tx = format!("c{c}-{incarnation}-{tx_n}");
                async {
                    bounded(client.begin(&tx)).await?;
                    for m in &batch {
                        let ack = postbus_client::settle_frame(Command::Ack, m, Some(&tx));
                        bounded(client.send_frame(ack)).await?;
                    }
                    bounded(client.commit(&tx)).await
                }
                .await
            } else {
                bounded(client.ack(&batch[0], None)).await
            };
            let outcome = match acked {
                Ok(()) => Outcome::Ok,
                Err(_) => Outcome::Unknown,
            };
            for id in ids {
                h.push(Event::Ack {
                    message_id: id,
                    outcome,
                });
            }
            if outcome != Outcome::Ok {
                continue 'connect;
            }
        }
    }
}

/// A load running until [`Running::finish`].
pub struct Running {
    stop_producers: Arc<AtomicBool>,
    stop_consumers: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    pub history: Arc<History>,
}

/// Starts producers and consumers.
pub fn start(load: &Load) -> Running {
    let history = Arc::new(History::default());
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let producers = (0..load.producers)
        .map(|p| {
            tokio::spawn(produce(
                load.clone(),
                p,
                stop_producers.clone(),
                history.clone(),
            ))
        })
        .collect();
    let consumers = (0..load.consumers)
        .map(|c| {
            tokio::spawn(consume(
                load.clone(),
                c,
                stop_consumers.clone(),
                history.clone(),
            ))
        })
        .collect();
    Running {
        stop_producers,
        stop_consumers,
        producers,
        consumers,
        history,
    }
}

impl Running {
    /// Stops the producers (each finishes its transaction), waits up to `drain` for every
    /// confirmed message to be delivered, stops the consumers, and returns the history.
    pub async fn finish(self, drain: Duration) -> Arc<History> {
        self.stop_producers.store(true, Ordering::SeqCst);
        for p in self.producers {
            p.await.expect("a producer panicked");
        }
        let deadline = Instant::now() + drain;
        while self.history.undelivered() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the last acks commit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop_consumers.store(true, Ordering::SeqCst);
        for c in self.consumers {
            c.await.expect("a consumer panicked");
        }
        self.history
    }
}

/// One scenario's result line.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub name: String,
    pub report: Report,
    pub p99_before_ms: Option<f64>,
    pub p99_during_ms: Option<f64>,
    pub p99_after_ms: Option<f64>,
    /// Seconds from the end of the fault to the first commit served after it.
    pub recovery_s: Option<f64>,
    pub connections: usize,
    /// Producer COMMITs left in doubt by the fault, and how many of them had committed.
    pub in_doubt: usize,
    pub in_doubt_committed: usize,
}

impl ScenarioResult {
    /// Counts a finished history; the fault lasted from `fault_start` to `fault_end` (times
    /// since the history began; `fault_end` is when everything was restored).
    pub fn of(
        name: &str,
        h: &History,
        fault_start: Duration,
        fault_end: Duration,
    ) -> ScenarioResult {
        ScenarioResult {
            name: name.to_owned(),
            report: h.report(),
            p99_before_ms: h.p99_ms(Duration::ZERO, fault_start),
            p99_during_ms: h.p99_ms(fault_start, fault_end + Duration::from_secs(2)),
            p99_after_ms: h.p99_ms(fault_end + Duration::from_secs(2), Duration::MAX),
            recovery_s: h.recovery_s(fault_end),
            connections: h.connections.load(Ordering::Relaxed),
            in_doubt: h.in_doubt.load(Ordering::Relaxed),
            in_doubt_committed: h.in_doubt_committed.load(Ordering::Relaxed),
        }
    }

    /// The pass criteria for persistent messages: nothing lost, invented, doubled,
    /// redelivered after a confirmed ack or out of order.
    pub fn passed(&self) -> bool {
        self.report.is_clean()
    }
}

/// The results as one table (printed by the suite).
pub fn table(rows: &[ScenarioResult]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let mut out = String::from(
        "| scenario | sent ok | COMMITs in doubt (committed) | unknown | recovered | delivered | lost | unexpected | duplicated | redelivered after ack | group order | producer order | p99 before / during / after (ms) | recovery (s) | connections | pass |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let p = &r.report;
        out.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} |\n",
            r.name,
            p.sent_ok,
            r.in_doubt,
            r.in_doubt_committed,
            p.sent_unknown,
            p.recovered,
            p.delivered,
            p.lost.len(),
            p.unexpected.len(),
            p.duplicated.len(),
            p.redelivered_after_ack.len(),
            p.group_order.len(),
            p.producer_order.len(),
            ms(r.p99_before_ms),
            ms(r.p99_during_ms),
            ms(r.p99_after_ms),
            r.recovery_s.map_or("-".to_owned(), |v| format!("{v:.2}")),
            r.connections,
            if r.passed() { "yes" } else { "NO" },
        ));
    }
    out
}
