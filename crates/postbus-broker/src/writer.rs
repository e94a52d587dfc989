//! Group commit. Connections hand units (a send, an ack, a transaction's COMMIT) to a writer;
//! the writer takes everything queued behind the first unit and commits it all in one
//! PostgreSQL transaction, then answers each waiting connection.
//!
//! A connection always uses the same writer, so its units commit in the order it sent them
//! (the JMS per-producer order); different writers commit in parallel, so one fsync wait does
//! not stall everybody.

use std::time::{Duration, Instant};

use postbus_store::{NodeId, Store, StoreError, Unit, UnitOutcome, WriteBatch};
use tokio::sync::{mpsc, oneshot};

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

struct Request {
    unit: Unit,
    durable: bool,
    bytes: usize,
    reply: oneshot::Sender<Result<UnitOutcome, WriteError>>,
}

/// The handle connections use to submit units.
#[derive(Clone)]
pub struct Writers {
    lanes: Vec<mpsc::UnboundedSender<Request>>,
}

/// Hooks the writer calls after a batch committed (to wake dispatchers, count metrics...).
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, units: &[Unit], outcomes: &[UnitOutcome], elapsed: Duration);
}

impl Writers {
    /// Starts `lanes` writer tasks over the store.
    pub fn start(
        store: Store,
        node: NodeId,
        lanes: usize,
        max_units: usize,
        max_bytes: usize,
        retry_for: Duration,
        observer: std::sync::Arc<dyn CommitObserver>,
    ) -> Writers {
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_lane(
                    store.clone(),
                    node,
                    rx,
                    max_units,
                    max_bytes,
                    retry_for,
                    observer.clone(),
                ));
                tx
            })
            .collect();
        Writers { lanes }
    }

    /// Submits a unit on the lane of connection `conn`; the answer comes once it committed.
    pub fn submit(
        &self,
        conn: u64,
        unit: Unit,
    ) -> oneshot::Receiver<Result<UnitOutcome, WriteError>> {
        let (reply, rx) = oneshot::channel();
        let durable = unit.inserts.iter().any(|r| r.message.persistent)
            || !unit.acks.is_empty()
            || !unit.releases.is_empty()
            || unit.client_tx.is_some();
        let bytes = unit
            .inserts
            .iter()
            .map(|r| r.message.body.len() + 256)
            .sum::<usize>()
            + 64;
        let lane = &self.lanes[(conn % self.lanes.len() as u64) as usize];
        // A closed lane means the broker is shutting down; the dropped reply says so.
        let _ = lane.send(Request {
            unit,
            durable,
            bytes,
            reply,
        });
        rx
    }
}

async fn run_lane(
    store: Store,
    node: NodeId,
    mut rx: mpsc::UnboundedReceiver<Request>,
    max_units: usize,
    max_bytes: usize,
    retry_for: Duration,
    observer: std::sync::Arc<dyn CommitObserver>,
) {
    while let Some(first) = rx.recv().await {
        let mut requests = vec![first];
        let mut bytes = requests[0].bytes;
        while requests.len() < max_units && bytes < max_bytes {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.bytes;
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
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
        };
        let started = Instant::now();
        let result = write_with_retry(&store, &batch, retry_for).await;
        if let Err(e) = &result
            && batch.units.len() > 1
            && !e.is_connection_error()
        {
            // One unit's statement was refused (e.g. its queue was deleted meanwhile): run the
            // units one by one so only that unit's client gets the error.
            tracing::warn!(error = %e, units = batch.units.len(), "group commit refused; retrying its units one by one");
            let results = write_units_alone(&store, &batch, retry_for).await;
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
            continue;
        }
        match result {
            Ok(outcomes) => {
                observer.committed(&batch.units, &outcomes, started.elapsed());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let err = match &e {
                    StoreError::UnknownOutcome(m) => WriteError::Unknown(m.clone()),
                    other => WriteError::Failed(other.to_string()),
                };
                tracing::error!(error = %e, units = batch.units.len(), "group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
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
        };
        outcomes.push(match write_with_retry(store, &single, retry_for).await {
            Ok(mut o) => Ok(o
                .pop()
                .unwrap_or(UnitOutcome::Rejected("no outcome".into()))),
            Err(StoreError::UnknownOutcome(m)) => Err(WriteError::Unknown(m)),
            Err(e) if e.is_connection_error() => Err(WriteError::Failed(e.to_string())),
            Err(e) => Ok(UnitOutcome::Rejected(format!(
                "refused by the database: {e}"
            ))),
        });
    }
    outcomes
}

/// Retries a batch that failed before COMMIT because the database was unreachable: nothing of
/// it was written, so running it again cannot duplicate anything.
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
            Err(e) if e.is_connection_error() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "database unreachable; retrying the batch");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
