//! The counting workload shared by the crash and multi-broker tests: producers send
//! deduplicated transactions and retry COMMITs whose receipt was lost; consumers ack each
//! message with a receipt; every operation is logged so a checker can count what was lost,
//! doubled, delivered after its ack, or delivered out of group order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postbus_client::{Client, ClientError, ConnectOptions, send_frame};
use postbus_stomp::{Command, Frame};

/// The queue the workload uses.
pub const QUEUE: &str = "/queue/crash";

#[derive(Default)]
pub struct Log {
    /// Dedup ids whose COMMIT was confirmed.
    pub confirmed: HashSet<String>,
    /// Dedup id -> message ids it was delivered under.
    pub delivered_as: HashMap<String, HashSet<String>>,
    /// Message ids whose ACK was confirmed.
    pub acked: HashSet<String>,
    /// Deliveries of a message after its ack was confirmed.
    pub after_ack: Vec<String>,
    /// Group -> highest sequence delivered so far.
    pub group_high: HashMap<String, i64>,
    pub order_violations: Vec<String>,
    pub deliveries: usize,
    /// Consumer reconnections (each kill breaks the connection).
    pub consumer_reconnects: usize,
    pub redeliveries: usize,
}

pub async fn connect_retry(addr: &str, opts: &ConnectOptions) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(addr, opts).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("broker did not come back: {e}"),
        }
    }
}

/// One producer: transactions of 1..=5 messages, every message with a dedup id; a fifth of
/// them in a group owned by this producer, with a sequence number.
pub async fn produce(addr: String, p: usize, transactions: usize, log: Arc<Mutex<Log>>) {
    let opts = ConnectOptions {
        client_id: Some(format!("producer-{p}")),
        ..Default::default()
    };
    let mut client = connect_retry(&addr, &opts).await;
    let mut group_seq: HashMap<String, i64> = HashMap::new();
    for t in 0..transactions {
        let tx = format!("p{p}-tx{t}");
        let n = 1 + (t * 7 + p) % 5;
        let mut msgs: Vec<(String, Option<(String, i64)>)> = Vec::new();
        for i in 0..n {
            let dedup = format!("p{p}-t{t}-m{i}");
            let group = if (t + i) % 5 == 0 {
                let g = format!("p{p}-g{}", (t + i) % 3);
                let seq = group_seq.entry(g.clone()).or_insert(0);
                *seq += 1;
                Some((g, *seq))
            } else {
                None
            };
            msgs.push((dedup, group));
        }
        // Until the transaction is known to be committed.
        loop {
            let attempt: Result<(), ClientError> = async {
                client.begin(&tx).await?;
                for (dedup, group) in &msgs {
                    let mut headers: Vec<(&str, String)> =
                        vec![("transaction", tx.clone()), ("dedup-id", dedup.clone())];
                    if let Some((g, s)) = group {
                        headers.push(("JMSXGroupID", g.clone()));
                        headers.push(("JMSXGroupSeq", s.to_string()));
                    }
                    let h: Vec<(&str, &str)> =
                        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    client
                        .send_frame(send_frame(QUEUE, dedup.clone(), &h))
                        .await?;
                }
                Ok(())
            }
            .await;
            if attempt.is_err() {
                client = connect_retry(&addr, &opts).await;
                continue; // nothing committed: the open transaction died with the connection
            }
            match client.commit(&tx).await {
                Ok(()) => break,
                Err(_) => {
                    // Unknown outcome: reconnect and ask by repeating the COMMIT.
                    loop {
                        client = connect_retry(&addr, &opts).await;
                        match client.commit(&tx).await {
                            Ok(()) => break,
                            Err(ClientError::Broker { message, .. })
                                if message.contains("was not committed") =>
                            {
                                client = connect_retry(&addr, &opts).await;
                                break;
                            }
                            Err(_) => continue,
                        }
                    }
                    // Committed if the retry said so; otherwise the loop sends it again.
                    if was_committed(&addr, &opts, &tx).await {
                        break;
                    }
                }
            }
        }
        let mut l = log.lock().unwrap();
        for (dedup, _) in msgs {
            l.confirmed.insert(dedup);
        }
    }
}

/// Asks the broker whether a transaction committed (a repeated COMMIT is answered from the record).
async fn was_committed(addr: &str, opts: &ConnectOptions, tx: &str) -> bool {
    loop {
        let mut c = connect_retry(addr, opts).await;
        match c.commit(tx).await {
            Ok(()) => return true,
            Err(ClientError::Broker { message, .. }) if message.contains("was not committed") => {
                return false;
            }
            Err(_) => continue,
        }
    }
}

/// The consumer: client-individual acks with receipts, reconnecting after every crash.
pub async fn consume(addr: String, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>) {
    let opts = ConnectOptions::default();
    'outer: loop {
        let mut c = connect_retry(&addr, &opts).await;
        log.lock().unwrap().consumer_reconnects += 1;
        if c.subscribe(QUEUE, "s", "client-individual", &[("prefetch", "50")])
            .await
            .is_err()
        {
            continue;
        }
        loop {
            let m = match c.recv_timeout(Duration::from_millis(500)).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    if stop.load(Ordering::SeqCst) {
                        break 'outer;
                    }
                    continue;
                }
                Err(_) => continue 'outer,
            };
            record_delivery(&log, &m);
            // A consumer slower than the producers, so the kills find messages in flight.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let id = m.header("message-id").unwrap().to_owned();
            let ack = Frame::new(Command::Ack).with_header("id", m.header("ack").unwrap());
            match c.request(ack).await {
                Ok(_) => {
                    log.lock().unwrap().acked.insert(id);
                }
                Err(_) => continue 'outer,
            }
        }
    }
}

fn record_delivery(log: &Arc<Mutex<Log>>, m: &Frame) {
    let mut l = log.lock().unwrap();
    l.deliveries += 1;
    if m.header("redelivered") == Some("true") {
        l.redeliveries += 1;
    }
    let id = m.header("message-id").unwrap().to_owned();
    let dedup = String::from_utf8_lossy(&m.body).into_owned();
    if l.acked.contains(&id) {
        l.after_ack.push(id.clone());
    }
    l.delivered_as.entry(dedup).or_default().insert(id);
    if let (Some(g), Some(s)) = (m.header("JMSXGroupID"), m.header("JMSXGroupSeq")) {
        let s: i64 = s.parse().unwrap();
        let high = l.group_high.get(g).copied().unwrap_or(0);
        // A group may restart from its first unacknowledged message after a crash, so a
        // sequence at or below the highest seen is fine; skipping ahead is not.
        if s > high + 1 {
            l.order_violations
                .push(format!("{g}: {s} delivered after {high}"));
        }
        let g = g.to_owned();
        let e = l.group_high.entry(g).or_insert(0);
        *e = (*e).max(s);
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub lost: Vec<String>,
    pub doubled: Vec<String>,
    pub unexpected: Vec<String>,
    pub after_ack: Vec<String>,
    pub order_violations: Vec<String>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.unexpected.is_empty()
            && self.after_ack.is_empty()
            && self.order_violations.is_empty()
    }
}

impl Log {
    /// Confirmed messages not yet delivered.
    pub fn missing(&self) -> usize {
        self.confirmed
            .iter()
            .filter(|d| !self.delivered_as.contains_key(*d))
            .count()
    }

    /// Counts every kind of failure.
    pub fn verdict(&self) -> Verdict {
        let first = |v: Vec<String>| v.into_iter().take(10).collect::<Vec<_>>();
        Verdict {
            lost: first(
                self.confirmed
                    .iter()
                    .filter(|d| !self.delivered_as.contains_key(*d))
                    .cloned()
                    .collect(),
            ),
            doubled: first(
                self.delivered_as
                    .iter()
                    .filter(|(_, ids)| ids.len() > 1)
                    .map(|(d, ids)| format!("{d}: {ids:?}"))
                    .collect(),
            ),
            unexpected: first(
                self.delivered_as
                    .keys()
                    .filter(|d| !self.confirmed.contains(*d))
                    .cloned()
                    .collect(),
            ),
            after_ack: first(self.after_ack.clone()),
            order_violations: first(self.order_violations.clone()),
        }
    }
}

/// Waits (bounded) until every confirmed message was delivered.
pub async fn drain(log: &Arc<Mutex<Log>>, within: Duration) {
    let deadline = Instant::now() + within;
    while log.lock().unwrap().missing() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
