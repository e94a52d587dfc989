//! Group commit. Connections hand units (a send, an ack, a transaction's COMMIT) to the
//! writer; it gathers everything queued into one batch and commits it in one PostgreSQL
//! transaction, then answers each waiting connection. Up to `max_in_flight` batches commit in
//! parallel, so one fsync wait does not stall everybody.
//!
//! A connection's units commit in the order it sent them (the JMS per-producer order): while a
//! connection has a unit in a batch that has not committed yet, its later units wait for the
//! next batch.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postbus_store::{NodeId, Store, StoreError, Unit, UnitOutcome, WriteBatch};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Why a unit did not commit.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    /// The batch was refused or the database stayed unreachable: nothing was written.
    #[error("not written: {0}")]
    Failed(String),
    /// The connection to PostgreSQL broke during COMMIT and the outcome could not be learned.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// How often at most the writer announces new messages to other brokers (NOTIFY takes a
/// global lock at commit, so it is a throttled hint; polling stays behind it).
const NOTIFY_EVERY: Duration = Duration::from_millis(5);

struct Request {
    /// The connection it came from; 0 for the engine's own units, which need no ordering.
    conn: u64,
    unit: Unit,
    durable: bool,
    bytes: usize,
    reply: oneshot::Sender<Result<UnitOutcome, WriteError>>,
}

/// The handle connections use to submit units.
#[derive(Clone)]
pub struct Writers {
    tx: mpsc::UnboundedSender<Request>,
}

/// Where batch spans go (when tracing is on).
type Tracing = Option<Arc<crate::otel::Otel>>;

/// Hooks the writer calls around a batch (to dispatch fresh messages from memory, wake
/// dispatchers, count metrics...).
pub trait CommitObserver: Send + Sync + 'static {
    /// Reserves room on local consumers (or their queue's dispatch buffer) for fresh messages
    /// of a queue that this batch inserts, given their body sizes in order; returns how many
    /// (a prefix) may be claimed in the insert itself.
    fn reserve(&self, queue_id: i32, sizes: &[usize]) -> usize;
    /// The batch committed; `outcomes[i]` belongs to `units[i]`.
    fn committed(&self, units: &[Unit], outcomes: &[UnitOutcome], elapsed: Duration);
    /// These units did not commit (or their outcome is unknown).
    fn not_committed(&self, units: &[Unit]);
}

/// Batch limits.
#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    pub max_in_flight: usize,
    pub max_units: usize,
    pub max_bytes: usize,
    pub retry_for: Duration,
}

impl Writers {
    /// Starts the writer over the store.
    pub fn start(
        store: Store,
        node: NodeId,
        limits: WriterLimits,
        observer: Arc<dyn CommitObserver>,
        otel: Tracing,
    ) -> Writers {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(coordinate(store, node, rx, limits, observer, otel));
        Writers { tx }
    }

    /// Submits a unit of connection `conn`; the answer comes once it committed.
    ///
    /// `confirmed`: the client asked for a receipt. Acks outside a transaction are then
    /// committed durably; without a receipt they commit without waiting for the WAL flush (an
    /// ack lost to a PostgreSQL crash means a redelivery, which at-least-once allows, and the
    /// client was promised nothing). Persistent sends, transactions and releases are always
    /// durable.
    pub fn submit(
        &self,
        conn: u64,
        unit: Unit,
        confirmed: bool,
    ) -> oneshot::Receiver<Result<UnitOutcome, WriteError>> {
        let (reply, rx) = oneshot::channel();
        let durable = unit.inserts.iter().any(|r| r.message.persistent)
            || (!unit.acks.is_empty() && confirmed)
            || !unit.releases.is_empty()
            || unit.client_tx.is_some();
        let bytes = unit
            .inserts
            .iter()
            .map(|r| r.message.body.len() + 256)
            .sum::<usize>()
            + 64;
        // A closed channel means the broker is shutting down; the dropped reply says so.
        let _ = self.tx.send(Request {
            conn,
            unit,
            durable,
            bytes,
            reply,
        });
        rx
    }
}

/// Gathers queued units into batches and keeps up to `max_in_flight` of them committing.
async fn coordinate(
    store: Store,
    node: NodeId,
    mut rx: mpsc::UnboundedReceiver<Request>,
    limits: WriterLimits,
    observer: Arc<dyn CommitObserver>,
    otel: Tracing,
) {
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut busy: HashSet<u64> = HashSet::new();
    let mut running: JoinSet<Vec<u64>> = JoinSet::new();
    let mut open = true;
    // Queues touched since the last NOTIFY, announced at most every NOTIFY_EVERY.
    let mut to_notify: std::collections::BTreeSet<i32> = Default::default();
    let mut last_notify = Instant::now() - NOTIFY_EVERY;
    loop {
        while running.len() < limits.max_in_flight.max(1) {
            let batch = take_batch(&mut queue, &busy, &limits);
            if batch.is_empty() {
                break;
            }
            let mut batch = batch;
            pre_claim(&mut batch, &*observer);
            let conns: Vec<u64> = batch.iter().map(|r| r.conn).filter(|c| *c != 0).collect();
            busy.extend(conns.iter().copied());
            for r in &batch {
                to_notify.extend(
                    r.unit
                        .inserts
                        .iter()
                        .filter(|i| !i.pre_claimed)
                        .map(|i| i.queue_id),
                );
                to_notify.extend(r.unit.releases.iter().filter_map(|rel| rel.dead_letter));
            }
            let notify = if !to_notify.is_empty() && last_notify.elapsed() >= NOTIFY_EVERY {
                last_notify = Instant::now();
                let ids: Vec<String> = std::mem::take(&mut to_notify)
                    .iter()
                    .map(i32::to_string)
                    .collect();
                Some(ids.join(","))
            } else {
                None
            };
            let (store, observer) = (store.clone(), observer.clone());
            let otel = otel.clone();
            running.spawn(async move {
                // Traced messages get a span for the batch that writes them.
                let traced = match &otel {
                    Some(_) => traced_messages(&batch),
                    None => Vec::new(),
                };
                let started = std::time::SystemTime::now();
                let units = batch.len();
                let messages = batch.iter().map(|r| r.unit.inserts.len()).sum();
                let transaction = batch.iter().any(|r| r.unit.atomic);
                let error =
                    write_and_reply(&store, node, batch, notify, limits.retry_for, &*observer)
                        .await;
                if let Some(otel) = otel.filter(|_| !traced.is_empty()) {
                    otel.batch(
                        &traced,
                        started,
                        std::time::SystemTime::now(),
                        units,
                        messages,
                        transaction,
                        error.as_deref(),
                    );
                }
                conns
            });
        }
        if !open && queue.is_empty() && running.is_empty() {
            return;
        }
        tokio::select! {
            r = rx.recv(), if open => match r {
                Some(req) => {
                    queue.push_back(req);
                    while let Ok(req) = rx.try_recv() {
                        queue.push_back(req);
                    }
                }
                None => open = false,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(conns) = done {
                    for c in conns {
                        busy.remove(&c);
                    }
                }
            }
            // Queues written since the last NOTIFY and no batch to carry the next one: announce
            // them on their own once the throttle allows (they are committed by now).
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(last_notify + NOTIFY_EVERY)),
                if !to_notify.is_empty() && running.is_empty() && queue.is_empty() => {
                last_notify = Instant::now();
                let ids: Vec<String> = std::mem::take(&mut to_notify)
                    .iter()
                    .map(i32::to_string)
                    .collect();
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.notify(&ids.join(",")).await {
                        tracing::warn!(error = %e, "wake-up NOTIFY failed; other brokers find the messages at their next poll");
                    }
                });
            }
        }
    }
}

/// The trace contexts of a batch's traced messages.
fn traced_messages(batch: &[Request]) -> Vec<(String, Option<String>)> {
    batch
        .iter()
        .flat_map(|r| r.unit.inserts.iter())
        .filter_map(|i| {
            i.message
                .traceparent
                .clone()
                .map(|tp| (tp, i.message.tracestate.clone()))
        })
        .collect()
}

/// Marks the fresh messages of a batch that local consumers can take at once as claimed in the
/// insert (in send order per queue, as far as the consumers' credit reaches): they are then
/// dispatched from memory after the commit, with no claim statement and no read-back. Grouped
/// and delayed messages always go through the table.
fn pre_claim(batch: &mut [Request], observer: &dyn CommitObserver) {
    let now = postbus_store::clock::now_ms();
    let mut per_queue: std::collections::BTreeMap<i32, Vec<(usize, usize)>> = Default::default();
    for (ri, r) in batch.iter().enumerate() {
        for (ii, row) in r.unit.inserts.iter().enumerate() {
            let m = &row.message;
            if row.topic.is_none() && m.group_id.is_none() && m.deliver_at.is_none_or(|t| t <= now)
            {
                per_queue.entry(row.queue_id).or_default().push((ri, ii));
            }
        }
    }
    for (queue_id, rows) in per_queue {
        let sizes: Vec<usize> = rows
            .iter()
            .map(|&(ri, ii)| batch[ri].unit.inserts[ii].message.body.len())
            .collect();
        let granted = observer.reserve(queue_id, &sizes);
        for &(ri, ii) in rows.iter().take(granted) {
            batch[ri].unit.inserts[ii].pre_claimed = true;
        }
    }
}

/// Takes the queued units that may go into the next batch: those of connections with nothing
/// committing, in order, each connection's units contiguous from its oldest.
fn take_batch(
    queue: &mut VecDeque<Request>,
    busy: &HashSet<u64>,
    limits: &WriterLimits,
) -> Vec<Request> {
    let mut batch = Vec::new();
    let mut held: HashSet<u64> = HashSet::new();
    let mut rest = VecDeque::with_capacity(queue.len());
    let mut bytes = 0;
    while let Some(r) = queue.pop_front() {
        let full =
            batch.len() >= limits.max_units || (bytes >= limits.max_bytes && !batch.is_empty());
        let blocked = r.conn != 0 && (busy.contains(&r.conn) || held.contains(&r.conn));
        if full || blocked {
            // Everything later from this connection must wait behind this one.
            if r.conn != 0 {
                held.insert(r.conn);
            }
            rest.push_back(r);
            continue;
        }
        bytes += r.bytes;
        batch.push(r);
    }
    *queue = rest;
    batch
}

async fn write_and_reply(
    store: &Store,
    node: NodeId,
    requests: Vec<Request>,
    notify: Option<String>,
    retry_for: Duration,
    observer: &dyn CommitObserver,
) -> Option<String> {
    let durable = requests.iter().any(|r| r.durable);
    let mut units = Vec::with_capacity(requests.len());
    let mut replies = Vec::with_capacity(requests.len());
    for r in requests {
        units.push(r.unit);
        replies.push(r.reply);
    }
    let batch = WriteBatch {
        node,
        units,
        durable,
        notify,
    };
    let started = Instant::now();
    let result = write_with_retry(store, &batch, retry_for).await;
    if let Err(e) = &result
        && batch.units.len() > 1
        && !e.is_retryable()
    {
        // One unit's statement was refused (e.g. its queue was deleted meanwhile): run the
        // units one by one so only that unit's client gets the error.
        tracing::warn!(error = %e, units = batch.units.len(), "group commit refused; retrying its units one by one");
        let results = write_units_alone(store, &batch, retry_for).await;
        let first_error = results
            .iter()
            .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
        for ((unit, reply), r) in batch.units.iter().zip(replies).zip(results) {
            match &r {
                Ok(outcome) => observer.committed(
                    std::slice::from_ref(unit),
                    std::slice::from_ref(outcome),
                    started.elapsed(),
                ),
                Err(_) => observer.not_committed(std::slice::from_ref(unit)),
            }
            let _ = reply.send(r);
        }
        return first_error;
    }
    match result {
        Ok(outcomes) => {
            observer.committed(&batch.units, &outcomes, started.elapsed());
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            None
        }
        Err(e) => {
            let err = match &e {
                StoreError::UnknownOutcome(m) => WriteError::Unknown(m.clone()),
                other => WriteError::Failed(other.to_string()),
            };
            tracing::error!(error = %e, units = batch.units.len(), "group commit failed");
            observer.not_committed(&batch.units);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            Some(err.to_string())
        }
    }
}

/// Writes each unit of a refused batch in its own transaction; a unit that fails again gets
/// its error as its outcome.
async fn write_units_alone(
    store: &Store,
    batch: &WriteBatch,
    retry_for: Duration,
) -> Vec<Result<UnitOutcome, WriteError>> {
    let mut outcomes = Vec::with_capacity(batch.units.len());
    for unit in &batch.units {
        let single = WriteBatch {
            node: batch.node,
            units: vec![unit.clone()],
            durable: batch.durable,
            notify: batch.notify.clone(),
        };
        outcomes.push(match write_with_retry(store, &single, retry_for).await {
            Ok(mut o) => Ok(o
                .pop()
                .unwrap_or(UnitOutcome::Rejected("no outcome".into()))),
            Err(StoreError::UnknownOutcome(m)) => Err(WriteError::Unknown(m)),
            Err(e) if e.is_retryable() => Err(WriteError::Failed(e.to_string())),
            Err(e) => Ok(UnitOutcome::Rejected(format!(
                "refused by the database: {e}"
            ))),
        });
    }
    outcomes
}

/// Retries a batch that failed before COMMIT because the database was unreachable or lacked a
/// resource (a full disk): nothing of it was written, so running it again cannot duplicate
/// anything.
async fn write_with_retry(
    store: &Store,
    batch: &WriteBatch,
    retry_for: Duration,
) -> Result<Vec<UnitOutcome>, StoreError> {
    let deadline = Instant::now() + retry_for;
    let mut delay = Duration::from_millis(50);
    loop {
        match store.write_batch(batch).await {
            Ok(o) => return Ok(o),
            Err(e @ StoreError::UnknownOutcome(_)) => return Err(e),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "database unreachable or out of a resource; retrying the batch");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
