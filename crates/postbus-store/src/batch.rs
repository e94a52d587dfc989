//! The group-commit write path: many connections' sends, acks and releases in one transaction.
//!
//! A [`WriteBatch`] is a list of [`Unit`]s. A unit is what one client is waiting for: a single
//! send, an ack, or a whole transacted session's COMMIT. Every unit in a batch commits in the
//! same PostgreSQL transaction, with one statement per kind of row (one multi-row INSERT for all
//! messages, one DELETE for all acks, ...), and each client is answered only after that commit.
//!
//! An atomic unit (a client transaction) whose acks cannot all be applied, because this node no
//! longer holds a message, fails alone: the batch rolls back and is re-run without it.

use std::collections::{HashMap, HashSet};

use postbus_model::{MessageId, NewMessage};
use tokio_postgres::types::ToSql;

use crate::{NodeId, Store, StoreError, queries};

/// A message to insert into a queue.
#[derive(Clone, Debug)]
pub struct InsertRow {
    pub queue_id: i32,
    /// The queue's dedup window in ms (used when the message has a dedup id).
    pub dedup_window_ms: i64,
    pub message: NewMessage,
}

/// An in-flight message to give back: for redelivery after `ready_at`, or to a dead-letter queue.
#[derive(Clone, Debug, Default)]
pub struct ReleaseRow {
    pub id: i64,
    /// 1 when a delivery ended without an ack; 0 when the message was never delivered.
    pub increment: i32,
    /// Not deliverable before this epoch ms (redelivery delay); None = at once.
    pub ready_at: Option<i64>,
    /// Move to this queue (dead-letter) instead of back to its own.
    pub dead_letter: Option<i32>,
    pub reason: Option<String>,
    /// The destination the message came from, recorded when it moves.
    pub origin: Option<String>,
    pub last_error: Option<String>,
}

/// What one client waits for.
#[derive(Clone, Debug, Default)]
pub struct Unit {
    pub inserts: Vec<InsertRow>,
    pub acks: Vec<i64>,
    pub releases: Vec<ReleaseRow>,
    /// (client id, transaction id) to record, so a repeated COMMIT is answered from the record.
    pub client_tx: Option<(String, String)>,
    /// All or nothing: a client transaction. A non-atomic unit's missing acks are reported
    /// per id instead.
    pub atomic: bool,
}

/// A batch of units that commit together.
#[derive(Clone, Debug)]
pub struct WriteBatch {
    pub node: NodeId,
    pub units: Vec<Unit>,
    /// False when the batch holds only NON_PERSISTENT sends: commit without waiting for the
    /// WAL flush (a crash may lose them, never duplicate them).
    pub durable: bool,
}

/// The result of one insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Stored(MessageId),
    /// The dedup id was already accepted within the window: confirmed, not enqueued again.
    Duplicate(Option<MessageId>),
}

/// The result of one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitOutcome {
    Committed {
        inserted: Vec<InsertOutcome>,
        /// Ack ids that were not applied because this node no longer holds them.
        lost_acks: Vec<i64>,
        /// Release ids that were not applied for the same reason.
        lost_releases: Vec<i64>,
    },
    /// An atomic unit that could not be applied; nothing of it was written.
    Rejected(String),
    /// The client transaction id was committed before: nothing was applied again.
    AlreadyCommitted,
}

impl Store {
    /// Commits a batch. On success every unit has an outcome, in order. An `Err` means the whole
    /// batch did not commit (or, for [`StoreError::UnknownOutcome`], that nobody knows).
    pub async fn write_batch(&self, batch: &WriteBatch) -> Result<Vec<UnitOutcome>, StoreError> {
        let mut excluded: HashMap<usize, UnitOutcome> = HashMap::new();
        // Each retry excludes at least one more unit, so this loop ends.
        loop {
            match self.try_batch(batch, &excluded).await? {
                Attempt::Done(mut outcomes) => {
                    for (i, o) in excluded {
                        outcomes[i] = o;
                    }
                    return Ok(outcomes);
                }
                Attempt::Exclude(more) => excluded.extend(more),
            }
        }
    }

    async fn try_batch(
        &self,
        batch: &WriteBatch,
        excluded: &HashMap<usize, UnitOutcome>,
    ) -> Result<Attempt, StoreError> {
        let client = self.client().await?;
        match self.run_batch(&client, batch, excluded).await {
            Ok(Step::Commit(outcomes, xid)) => {
                if let Err(e) = client.batch_execute("COMMIT").await {
                    // Committed after all (learned from pg_xact_status) falls through.
                    self.resolve_commit_failure(e, &xid).await?;
                }
                Ok(Attempt::Done(outcomes))
            }
            Ok(Step::Rollback(excluded_now)) => {
                client.batch_execute("ROLLBACK").await?;
                Ok(Attempt::Exclude(excluded_now))
            }
            Err(e) => {
                // Never hand a connection back to the pool inside a transaction.
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Runs a batch's statements inside a transaction, pipelining those that do not depend on
    /// each other: BEGIN with the id allocation; dedup with the client-transaction record; then
    /// the insert, the acks and the releases together. Leaves the transaction open.
    async fn run_batch(
        &self,
        client: &deadpool_postgres::Client,
        batch: &WriteBatch,
        excluded: &HashMap<usize, UnitOutcome>,
    ) -> Result<Step, StoreError> {
        let now = postbus_model::now_ms();
        let live: Vec<(usize, &Unit)> = batch
            .units
            .iter()
            .enumerate()
            .filter(|(i, _)| !excluded.contains_key(i))
            .collect();
        let inserts: Vec<(usize, &InsertRow)> = live
            .iter()
            .flat_map(|(i, u)| u.inserts.iter().map(move |r| (*i, r)))
            .collect();

        // BEGIN, and the transaction id (to learn the outcome if the connection breaks during
        // COMMIT) with the message ids, in send order: one round trip.
        let begin = if batch.durable {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off"
        };
        let head_stmt = client.prepare_cached(queries::BATCH_HEAD).await?;
        let n = inserts.len() as i32;
        let head_params: [&(dyn ToSql + Sync); 1] = [&n];
        let (_, head) = tokio::try_join!(
            client.batch_execute(begin),
            client.query_one(&head_stmt, &head_params)
        )?;
        let xid: String = head.get(0);
        let ids: Vec<i64> = head.get(1);

        // Client transactions and dedup ids: one round trip.
        let txs: Vec<(usize, &(String, String))> = live
            .iter()
            .filter_map(|(i, u)| u.client_tx.as_ref().map(|t| (*i, t)))
            .collect();
        let mut outcome_of_insert: Vec<InsertOutcome> = ids
            .iter()
            .map(|id| InsertOutcome::Stored(MessageId(*id)))
            .collect();
        let mut seen_in_batch: HashMap<(i32, &str), i64> = HashMap::new();
        let (mut dq, mut dd, mut dm, mut de) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut dedup_rows: Vec<usize> = Vec::new();
        for (k, (_, row)) in inserts.iter().enumerate() {
            let Some(dedup) = row.message.dedup_id.as_deref() else {
                continue;
            };
            if let Some(first) = seen_in_batch.get(&(row.queue_id, dedup)) {
                outcome_of_insert[k] = InsertOutcome::Duplicate(Some(MessageId(*first)));
                continue;
            }
            seen_in_batch.insert((row.queue_id, dedup), ids[k]);
            dq.push(row.queue_id);
            dd.push(dedup);
            dm.push(ids[k]);
            de.push(now.saturating_add(row.dedup_window_ms));
            dedup_rows.push(k);
        }
        let tx_clients: Vec<&str> = txs.iter().map(|(_, t)| t.0.as_str()).collect();
        let tx_ids: Vec<&str> = txs.iter().map(|(_, t)| t.1.as_str()).collect();
        let tx_at: Vec<i64> = vec![now; txs.len()];
        let record_txs = async {
            if txs.is_empty() {
                return Ok::<_, StoreError>(Vec::new());
            }
            let stmt = client.prepare_cached(queries::INSERT_CLIENT_TX).await?;
            Ok(client.query(&stmt, &[&tx_clients, &tx_ids, &tx_at]).await?)
        };
        let record_dedup = async {
            if dedup_rows.is_empty() {
                return Ok::<_, StoreError>(Vec::new());
            }
            let stmt = client.prepare_cached(queries::INSERT_DEDUP).await?;
            Ok(client.query(&stmt, &[&dq, &dd, &dm, &de, &now]).await?)
        };
        let (tx_rows, dedup_result) = tokio::try_join!(record_txs, record_dedup)?;
        if !txs.is_empty() {
            let recorded: HashSet<(String, String)> =
                tx_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let repeated: Vec<(usize, UnitOutcome)> = txs
                .iter()
                .filter(|(_, t)| !recorded.contains(&(t.0.clone(), t.1.clone())))
                .map(|(i, _)| (*i, UnitOutcome::AlreadyCommitted))
                .collect();
            if !repeated.is_empty() {
                return Ok(Step::Rollback(repeated));
            }
        }
        if !dedup_rows.is_empty() {
            let accepted: HashSet<(i32, String)> =
                dedup_result.iter().map(|r| (r.get(0), r.get(1))).collect();
            let mut dup_q = Vec::new();
            let mut dup_d = Vec::new();
            for &k in &dedup_rows {
                let row = inserts[k].1;
                let d = row.message.dedup_id.clone().unwrap_or_default();
                if !accepted.contains(&(row.queue_id, d.clone())) {
                    outcome_of_insert[k] = InsertOutcome::Duplicate(None);
                    dup_q.push(row.queue_id);
                    dup_d.push(d);
                }
            }
            if !dup_q.is_empty() {
                let stmt = client.prepare_cached(queries::FIND_DEDUP).await?;
                let existing: HashMap<(i32, String), i64> = client
                    .query(&stmt, &[&dup_q, &dup_d])
                    .await?
                    .iter()
                    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                    .collect();
                for &k in &dedup_rows {
                    let row = inserts[k].1;
                    if let InsertOutcome::Duplicate(slot) = &mut outcome_of_insert[k] {
                        let key = (
                            row.queue_id,
                            row.message.dedup_id.clone().unwrap_or_default(),
                        );
                        *slot = existing.get(&key).map(|id| MessageId(*id));
                    }
                }
            }
        }

        // The insert, the acks and the releases: one round trip.
        let to_insert: Vec<usize> = (0..inserts.len())
            .filter(|k| matches!(outcome_of_insert[*k], InsertOutcome::Stored(_)))
            .collect();
        let all_acks: Vec<i64> = live
            .iter()
            .flat_map(|(_, u)| u.acks.iter().copied())
            .collect();
        let releases: Vec<&ReleaseRow> = live.iter().flat_map(|(_, u)| u.releases.iter()).collect();
        let do_insert = async {
            if !to_insert.is_empty() {
                insert_messages(client, &inserts, &ids, &to_insert).await?;
            }
            Ok::<_, StoreError>(())
        };
        let do_acks = async {
            if all_acks.is_empty() {
                return Ok::<_, StoreError>(HashSet::new());
            }
            let stmt = client.prepare_cached(queries::DELETE_ACKED).await?;
            Ok(client
                .query(&stmt, &[&batch.node.0, &all_acks])
                .await?
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect())
        };
        let do_releases = async {
            if releases.is_empty() {
                return Ok::<_, StoreError>(HashSet::new());
            }
            let id: Vec<i64> = releases.iter().map(|r| r.id).collect();
            let inc: Vec<i32> = releases.iter().map(|r| r.increment).collect();
            let ready: Vec<Option<i64>> = releases.iter().map(|r| r.ready_at).collect();
            let dl: Vec<Option<i32>> = releases.iter().map(|r| r.dead_letter).collect();
            let reason: Vec<Option<&str>> = releases.iter().map(|r| r.reason.as_deref()).collect();
            let origin: Vec<Option<&str>> = releases.iter().map(|r| r.origin.as_deref()).collect();
            let err: Vec<Option<&str>> = releases.iter().map(|r| r.last_error.as_deref()).collect();
            let stmt = client.prepare_cached(queries::RELEASE).await?;
            Ok(client
                .query(
                    &stmt,
                    &[
                        &batch.node.0,
                        &id,
                        &inc,
                        &ready,
                        &dl,
                        &reason,
                        &origin,
                        &err,
                    ],
                )
                .await?
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect())
        };
        let ((), acked, released) = tokio::try_join!(do_insert, do_acks, do_releases)?;

        // An atomic unit whose acks or releases were not all applied fails alone.
        let failed: Vec<(usize, UnitOutcome)> = live
            .iter()
            .filter(|(_, u)| {
                u.atomic
                    && (u.acks.iter().any(|id| !acked.contains(id))
                        || u.releases.iter().any(|r| !released.contains(&r.id)))
            })
            .map(|(i, _)| {
                (
                    *i,
                    UnitOutcome::Rejected(
                        "a message this transaction acknowledged is no longer held by this broker (its lease lapsed or it was already acknowledged); nothing was committed".into(),
                    ),
                )
            })
            .collect();
        if !failed.is_empty() {
            return Ok(Step::Rollback(failed));
        }

        let mut outcomes = vec![UnitOutcome::Rejected(String::new()); batch.units.len()];
        let mut k = 0;
        for (i, u) in &live {
            let inserted = outcome_of_insert[k..k + u.inserts.len()].to_vec();
            k += u.inserts.len();
            outcomes[*i] = UnitOutcome::Committed {
                inserted,
                lost_acks: u
                    .acks
                    .iter()
                    .copied()
                    .filter(|id| !acked.contains(id))
                    .collect(),
                lost_releases: u
                    .releases
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| !released.contains(id))
                    .collect(),
            };
        }
        Ok(Step::Commit(outcomes, xid))
    }

    /// The connection broke during COMMIT: ask PostgreSQL on a fresh connection whether the
    /// transaction committed, so no client is confirmed or refused blindly.
    async fn resolve_commit_failure(
        &self,
        error: tokio_postgres::Error,
        xid: &str,
    ) -> Result<(), StoreError> {
        if error.as_db_error().is_some() {
            // The server answered: the commit was refused, so nothing was written.
            return Err(StoreError::Db(error));
        }
        for attempt in 0..50 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let Ok((client, conn)) = self.dedicated_connection().await else {
                continue;
            };
            let task = tokio::spawn(conn);
            let status = client
                .query_one("SELECT pg_xact_status($1::text::xid8)::text", &[&xid])
                .await;
            task.abort();
            match status {
                Ok(row) => {
                    let s: Option<String> = row.get(0);
                    match s.as_deref() {
                        Some("committed") => {
                            tracing::warn!(
                                xid,
                                "connection broke during COMMIT; the transaction did commit"
                            );
                            return Ok(());
                        }
                        Some("aborted") => return Err(StoreError::Db(error)),
                        // Still in progress (the old backend has not noticed yet): wait.
                        Some("in progress") => continue,
                        _ => {
                            return Err(StoreError::UnknownOutcome(format!(
                                "transaction {xid} status unknown"
                            )));
                        }
                    }
                }
                Err(_) => continue,
            }
        }
        Err(StoreError::UnknownOutcome(format!(
            "transaction {xid}: the database stayed unreachable"
        )))
    }
}

enum Attempt {
    Done(Vec<UnitOutcome>),
    Exclude(Vec<(usize, UnitOutcome)>),
}

/// How an open batch transaction ends.
enum Step {
    Commit(Vec<UnitOutcome>, String),
    Rollback(Vec<(usize, UnitOutcome)>),
}

async fn insert_messages(
    client: &deadpool_postgres::Client,
    inserts: &[(usize, &InsertRow)],
    ids: &[i64],
    which: &[usize],
) -> Result<(), StoreError> {
    let rows: Vec<&NewMessage> = which.iter().map(|k| &inserts[*k].1.message).collect();
    let queue: Vec<i32> = which.iter().map(|k| inserts[*k].1.queue_id).collect();
    let id: Vec<i64> = which.iter().map(|k| ids[*k]).collect();
    let priority: Vec<i16> = rows.iter().map(|r| r.priority).collect();
    let owner: Vec<Option<i64>> = vec![None; rows.len()];
    let now = postbus_model::now_ms();
    let ready_at: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.deliver_at.filter(|t| *t > now))
        .collect();
    let expires: Vec<i64> = rows.iter().map(|r| r.expires_at).collect();
    let persistent: Vec<bool> = rows.iter().map(|r| r.persistent).collect();
    let sent_at: Vec<i64> = rows.iter().map(|r| r.sent_at).collect();
    let group_id: Vec<Option<&str>> = rows.iter().map(|r| r.group_id.as_deref()).collect();
    let group_seq: Vec<Option<i32>> = rows.iter().map(|r| r.group_seq).collect();
    let corr: Vec<Option<&str>> = rows.iter().map(|r| r.correlation_id.as_deref()).collect();
    let reply: Vec<Option<&str>> = rows.iter().map(|r| r.reply_to.as_deref()).collect();
    let ty: Vec<Option<&str>> = rows.iter().map(|r| r.jms_type.as_deref()).collect();
    let ct: Vec<Option<&str>> = rows.iter().map(|r| r.content_type.as_deref()).collect();
    let user: Vec<Option<&str>> = rows.iter().map(|r| r.user_id.as_deref()).collect();
    let tp: Vec<Option<&str>> = rows.iter().map(|r| r.traceparent.as_deref()).collect();
    let ts: Vec<Option<&str>> = rows.iter().map(|r| r.tracestate.as_deref()).collect();
    let props: Vec<Option<serde_json::Value>> =
        rows.iter().map(|r| r.properties.to_json()).collect();
    let types: Vec<Option<serde_json::Value>> =
        rows.iter().map(|r| r.properties.types_json()).collect();
    let body: Vec<&[u8]> = rows.iter().map(|r| r.body.as_ref()).collect();
    let params: [&(dyn ToSql + Sync); 20] = [
        &id,
        &queue,
        &priority,
        &owner,
        &ready_at,
        &expires,
        &persistent,
        &sent_at,
        &group_id,
        &group_seq,
        &corr,
        &reply,
        &ty,
        &ct,
        &user,
        &tp,
        &ts,
        &props,
        &types,
        &body,
    ];
    let stmt = client.prepare_cached(queries::INSERT_MESSAGES).await?;
    client.execute(&stmt, &params).await?;
    Ok(())
}
