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
    /// Claimed for delivery by the writing node in the insert itself (the node hands it to a
    /// local consumer from memory after the commit, with no claim statement).
    pub pre_claimed: bool,
    /// A publish to this topic (then `queue_id` is the topic's destination id, which scopes its
    /// dedup ids): one copy goes to each matching subscription, none if there is none.
    pub topic: Option<String>,
    /// The destination (`/queue/NAME`) records this message in the audit log: a
    /// `message.sent` record in the same transaction.
    pub audited: Option<String>,
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
    /// Audit records written in the same transaction (acks of audited destinations).
    pub audit: Vec<crate::AuditRecord>,
}

/// A batch of units that commit together.
#[derive(Clone, Debug)]
pub struct WriteBatch {
    pub node: NodeId,
    pub units: Vec<Unit>,
    /// False when the batch holds only NON_PERSISTENT sends: commit without waiting for the
    /// WAL flush (a crash may lose them, never duplicate them).
    pub durable: bool,
    /// Queue ids to announce on the `postbus_wake` channel when the batch commits (a wake-up
    /// hint for other brokers; the writer throttles it).
    pub notify: Option<String>,
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
        if is_simple(batch) {
            return self.simple_batch(batch).await;
        }
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

    /// The hot path for batches without dedup ids, client-transaction records or atomic acks:
    /// BEGIN, one statement that inserts, acks and releases everything, and COMMIT, sent
    /// together in one round trip. If the statement fails, PostgreSQL turns the COMMIT into a
    /// rollback, so the batch is all or nothing.
    async fn simple_batch(&self, batch: &WriteBatch) -> Result<Vec<UnitOutcome>, StoreError> {
        let client = self.client().await?;
        let rows: Vec<&InsertRow> = batch.units.iter().flat_map(|u| u.inserts.iter()).collect();
        let cols = Columns::new(&rows, batch.node);
        let acks: Vec<i64> = batch
            .units
            .iter()
            .flat_map(|u| u.acks.iter().copied())
            .collect();
        let releases: Vec<&ReleaseRow> =
            batch.units.iter().flat_map(|u| u.releases.iter()).collect();
        let rel = ReleaseColumns::new(&releases);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(28);
        params.extend(cols.params());
        params.push(&batch.node.0);
        params.push(&acks);
        params.extend(rel.params());
        let stmt = client.prepare_cached(queries::SIMPLE_BATCH).await?;
        let xid_stmt = client.prepare_cached(queries::CURRENT_XID).await?;
        let begin = if batch.durable {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off"
        };
        let notify = async {
            match &batch.notify {
                Some(ids) => client.execute(queries::NOTIFY, &[ids]).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (b, xid, rows_out, _, commit) = tokio::join!(
            client.batch_execute(begin),
            client.query_one(&xid_stmt, &[]),
            client.query(&stmt, &params),
            notify,
            client.batch_execute("COMMIT"),
        );
        // A failed BEGIN fails the statements after it too (the connection broke); if it ran
        // in autocommit instead, the single statement is still all or nothing.
        drop(b);
        let xid: Option<String> = xid.ok().map(|r| r.get(0));
        let rows_out = match rows_out {
            Ok(r) => r,
            Err(e) => {
                // The statement failed, so the COMMIT rolled back (or never ran).
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        };
        if let Err(e) = commit {
            match &xid {
                Some(x) => self.resolve_commit_failure(e, x).await?,
                None => {
                    return Err(StoreError::UnknownOutcome(
                        "the connection broke before the transaction id was read".into(),
                    ));
                }
            }
        }
        let mut ids = vec![0i64; rows.len()];
        let mut acked = HashSet::new();
        let mut released = HashSet::new();
        for r in &rows_out {
            let kind: i32 = r.get(0);
            let id: i64 = r.get(1);
            match kind {
                0 => ids[(r.get::<_, i64>(2) - 1) as usize] = id,
                1 => {
                    acked.insert(id);
                }
                _ => {
                    released.insert(id);
                }
            }
        }
        let mut k = 0;
        Ok(batch
            .units
            .iter()
            .map(|u| {
                let inserted = ids[k..k + u.inserts.len()]
                    .iter()
                    .map(|id| InsertOutcome::Stored(MessageId(*id)))
                    .collect();
                k += u.inserts.len();
                committed(u, inserted, &acked, &released)
            })
            .collect())
    }

    async fn try_batch(
        &self,
        batch: &WriteBatch,
        excluded: &HashMap<usize, UnitOutcome>,
    ) -> Result<Attempt, StoreError> {
        let client = self.client().await?;
        match self.run_batch(&client, batch, excluded).await {
            Ok(Step::Commit(outcomes, xid, discarded)) => {
                if let Err(e) = client.batch_execute("COMMIT").await {
                    // Committed after all (learned from pg_xact_status) falls through.
                    self.resolve_commit_failure(e, &xid).await?;
                }
                self.count_discards(&discarded);
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
        let now = crate::clock::now_ms();
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

        // Topic publishes: which subscriptions get a copy.
        let (publishes, to_insert): (Vec<usize>, Vec<usize>) = (0..inserts.len())
            .filter(|k| matches!(outcome_of_insert[*k], InsertOutcome::Stored(_)))
            .partition(|k| inserts[*k].1.topic.is_some());
        let copies = if publishes.is_empty() {
            None
        } else {
            Some(self.fan_out(client, &inserts, &ids, &publishes).await?)
        };

        // The insert, the acks and the releases: one round trip.
        let all_acks: Vec<i64> = live
            .iter()
            .flat_map(|(_, u)| u.acks.iter().copied())
            .collect();
        let releases: Vec<&ReleaseRow> = live.iter().flat_map(|(_, u)| u.releases.iter()).collect();
        let do_insert = async {
            if !to_insert.is_empty() {
                insert_messages(client, batch.node, &inserts, &ids, &to_insert).await?;
            }
            if let Some(c) = &copies {
                insert_copies(client, &inserts, &ids, c).await?;
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
            outcomes[*i] = committed(u, inserted, &acked, &released);
        }
        // Audit records of audited destinations, in this transaction (one statement).
        let mut records: Vec<crate::AuditRecord> = Vec::new();
        for (k, (_, row)) in inserts.iter().enumerate() {
            if let (Some(dest), InsertOutcome::Stored(id)) = (&row.audited, &outcome_of_insert[k]) {
                let mut r = crate::AuditRecord::new("message.sent")
                    .destination(dest.clone())
                    .detail(serde_json::json!({"message_id": id.to_string()}));
                r.principal = row.message.user_id.clone();
                records.push(r);
            }
        }
        records.extend(live.iter().flat_map(|(_, u)| u.audit.iter().cloned()));
        if !records.is_empty() {
            crate::audit::append_with(client, Some(batch.node), &records).await?;
        }
        // Subscriptions that got copies are announced unthrottled (this broker hears it too:
        // that is how its own subscription dispatchers learn of them).
        if let Some(ids) = &batch.notify {
            client.execute(queries::NOTIFY, &[ids]).await?;
        }
        if let Some(c) = &copies {
            // A NOTIFY payload must stay under 8000 bytes.
            let ids: Vec<String> = c.copies.subscriptions.iter().map(i32::to_string).collect();
            for chunk in ids.chunks(500) {
                client.execute(queries::NOTIFY, &[&chunk.join(",")]).await?;
            }
        }
        let discarded = copies.map(|c| c.copies.discarded).unwrap_or_default();
        Ok(Step::Commit(outcomes, xid, discarded))
    }

    /// The connection broke during COMMIT: ask PostgreSQL on a fresh connection whether the
    /// transaction committed, so no client is confirmed or refused blindly.
    pub(crate) async fn resolve_commit_failure(
        &self,
        error: tokio_postgres::Error,
        xid: &str,
    ) -> Result<(), StoreError> {
        if let Some(db) = error.as_db_error()
            && !matches!(db.severity(), "FATAL" | "PANIC")
        {
            // The server answered with an ERROR: the commit was refused, nothing was written.
            return Err(StoreError::Db(error));
        }
        // A FATAL (the session terminated: another backend crashed, a fast shutdown, an
        // administrator's pg_terminate_backend) says nothing of the commit: the backend may
        // have written its commit record first. Found by the fault suite (scenario 3b):
        // taking it for a refusal retried a committed batch, whose messages then stayed
        // claimed by this broker.
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
            let status = match status {
                Ok(row) if row.get::<_, Option<String>>(0).as_deref() == Some("committed") => {
                    // Committed locally, but a session that ended in its wait for a
                    // synchronous standby ("The transaction has already committed locally,
                    // but might not have been replicated to the standby") may not be on the
                    // standby yet. A transaction committed now waits for the standby like any
                    // other, and its commit record comes after the first one's: once it
                    // commits, both are there. Only then is the batch confirmed.
                    let barrier = crate::durability_barrier(&client).await;
                    task.abort();
                    if barrier.is_err() {
                        continue;
                    }
                    Ok(row)
                }
                other => {
                    task.abort();
                    other
                }
            };
            match status {
                Ok(row) => {
                    let s: Option<String> = row.get(0);
                    match s.as_deref() {
                        Some("committed") => {
                            tracing::warn!(
                                xid,
                                "connection broke during COMMIT; the transaction did commit (and is as durable as any commit now)"
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

/// A committed unit's outcome: its inserts, and the acks and releases that found their message
/// no longer held by this node.
fn committed(
    u: &Unit,
    inserted: Vec<InsertOutcome>,
    acked: &HashSet<i64>,
    released: &HashSet<i64>,
) -> UnitOutcome {
    UnitOutcome::Committed {
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
    }
}

/// True when a batch can take the one-round-trip path: nothing in it needs a decision between
/// its statements and its COMMIT.
fn is_simple(batch: &WriteBatch) -> bool {
    batch.units.iter().all(|u| {
        u.client_tx.is_none()
            && u.audit.is_empty()
            && u.inserts
                .iter()
                .all(|r| r.message.dedup_id.is_none() && r.topic.is_none() && r.audited.is_none())
            && !(u.atomic && (!u.acks.is_empty() || !u.releases.is_empty()))
    })
}

enum Attempt {
    Done(Vec<UnitOutcome>),
    Exclude(Vec<(usize, UnitOutcome)>),
}

/// How an open batch transaction ends.
enum Step {
    /// The outcomes, the transaction id, and the subscriptions that were at their depth limit
    /// (one entry per discarded copy).
    Commit(Vec<UnitOutcome>, String, Vec<i32>),
    Rollback(Vec<(usize, UnitOutcome)>),
}

/// A batch's messages as column arrays, the parameters of the multi-row insert.
struct Columns<'a> {
    queue: Vec<i32>,
    owner: Vec<Option<i64>>,
    priority: Vec<i16>,
    ready_at: Vec<Option<i64>>,
    expires: Vec<i64>,
    persistent: Vec<bool>,
    sent_at: Vec<i64>,
    group_id: Vec<Option<&'a str>>,
    group_seq: Vec<Option<i32>>,
    corr: Vec<Option<&'a str>>,
    reply: Vec<Option<&'a str>>,
    ty: Vec<Option<&'a str>>,
    ct: Vec<Option<&'a str>>,
    user: Vec<Option<&'a str>>,
    tp: Vec<Option<&'a str>>,
    ts: Vec<Option<&'a str>>,
    props: Vec<Option<serde_json::Value>>,
    types: Vec<Option<serde_json::Value>>,
    body: Vec<Option<&'a [u8]>>,
}

/// One row for [`Columns`]: (queue id, owner, message, whether the body goes in the row).
type ColumnRow<'a> = (i32, Option<i64>, &'a NewMessage, bool);

impl<'a> Columns<'a> {
    fn new(rows: &[&'a InsertRow], node: NodeId) -> Self {
        let parts: Vec<ColumnRow<'a>> = rows
            .iter()
            .map(|r| {
                (
                    r.queue_id,
                    r.pre_claimed.then_some(node.0),
                    &r.message,
                    true,
                )
            })
            .collect();
        Self::from_parts(&parts)
    }

    fn from_parts(rows: &[ColumnRow<'a>]) -> Self {
        let now = crate::clock::now_ms();
        let m = |r: &ColumnRow<'a>| -> &'a NewMessage { r.2 };
        Columns {
            queue: rows.iter().map(|r| r.0).collect(),
            owner: rows.iter().map(|r| r.1).collect(),
            priority: rows.iter().map(|r| m(r).priority).collect(),
            ready_at: rows
                .iter()
                .map(|r| m(r).deliver_at.filter(|t| *t > now))
                .collect(),
            expires: rows.iter().map(|r| m(r).expires_at).collect(),
            persistent: rows.iter().map(|r| m(r).persistent).collect(),
            sent_at: rows.iter().map(|r| m(r).sent_at).collect(),
            group_id: rows.iter().map(|r| m(r).group_id.as_deref()).collect(),
            group_seq: rows.iter().map(|r| m(r).group_seq).collect(),
            corr: rows
                .iter()
                .map(|r| m(r).correlation_id.as_deref())
                .collect(),
            reply: rows.iter().map(|r| m(r).reply_to.as_deref()).collect(),
            ty: rows.iter().map(|r| m(r).jms_type.as_deref()).collect(),
            ct: rows.iter().map(|r| m(r).content_type.as_deref()).collect(),
            user: rows.iter().map(|r| m(r).user_id.as_deref()).collect(),
            tp: rows.iter().map(|r| m(r).traceparent.as_deref()).collect(),
            ts: rows.iter().map(|r| m(r).tracestate.as_deref()).collect(),
            props: rows.iter().map(|r| m(r).properties.to_json()).collect(),
            types: rows.iter().map(|r| m(r).properties.types_json()).collect(),
            body: rows
                .iter()
                .map(|r| r.3.then_some(m(r).body.as_ref()))
                .collect(),
        }
    }

    /// The 19 column parameters, in the order of the insert statements' unnest.
    fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.queue,
            &self.owner,
            &self.priority,
            &self.ready_at,
            &self.expires,
            &self.persistent,
            &self.sent_at,
            &self.group_id,
            &self.group_seq,
            &self.corr,
            &self.reply,
            &self.ty,
            &self.ct,
            &self.user,
            &self.tp,
            &self.ts,
            &self.props,
            &self.types,
            &self.body,
        ]
    }
}

/// A batch's releases as column arrays.
struct ReleaseColumns<'a> {
    id: Vec<i64>,
    inc: Vec<i32>,
    ready: Vec<Option<i64>>,
    dead_letter: Vec<Option<i32>>,
    reason: Vec<Option<&'a str>>,
    origin: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
}

impl<'a> ReleaseColumns<'a> {
    fn new(releases: &[&'a ReleaseRow]) -> Self {
        ReleaseColumns {
            id: releases.iter().map(|r| r.id).collect(),
            inc: releases.iter().map(|r| r.increment).collect(),
            ready: releases.iter().map(|r| r.ready_at).collect(),
            dead_letter: releases.iter().map(|r| r.dead_letter).collect(),
            reason: releases.iter().map(|r| r.reason.as_deref()).collect(),
            origin: releases.iter().map(|r| r.origin.as_deref()).collect(),
            error: releases.iter().map(|r| r.last_error.as_deref()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.id,
            &self.inc,
            &self.ready,
            &self.dead_letter,
            &self.reason,
            &self.origin,
            &self.error,
        ]
    }
}

/// The copies of a batch's publishes, with the ids they get.
struct FannedOut<'a> {
    copies: crate::fanout::Copies<'a>,
    ids: Vec<i64>,
}

impl Store {
    /// Finds the subscriptions each publish goes to (in this transaction's snapshot) and
    /// allocates ids for the copies.
    async fn fan_out<'a>(
        &self,
        client: &deadpool_postgres::Client,
        inserts: &[(usize, &'a InsertRow)],
        ids: &[i64],
        publishes: &[usize],
    ) -> Result<FannedOut<'a>, StoreError> {
        let mut topics: Vec<&str> = publishes
            .iter()
            .filter_map(|k| inserts[*k].1.topic.as_deref())
            .collect();
        topics.sort_unstable();
        topics.dedup();
        let stmt = client
            .prepare_cached(queries::MATCHING_SUBSCRIPTIONS)
            .await?;
        let candidates: Vec<crate::fanout::Candidate> = client
            .query(&stmt, &[&topics])
            .await?
            .iter()
            .map(|r| crate::fanout::Candidate {
                topic: r.get(0),
                subscription: r.get(1),
                selector: r.get(2),
                full: r.get(3),
            })
            .collect();
        let list: Vec<(usize, &str, &'a NewMessage, i64)> = publishes
            .iter()
            .map(|&k| {
                let row = inserts[k].1;
                (k, row.topic.as_deref().unwrap_or(""), &row.message, ids[k])
            })
            .collect();
        let copies = crate::fanout::decide(&self.selectors, &candidates, &list);
        let ids = if copies.copies.is_empty() {
            Vec::new()
        } else {
            let stmt = client.prepare_cached(queries::ALLOCATE_IDS).await?;
            let n = copies.copies.len() as i32;
            client.query_one(&stmt, &[&n]).await?.get(0)
        };
        Ok(FannedOut { copies, ids })
    }
}

/// Inserts the copies of a batch's publishes, and the bodies they share.
async fn insert_copies(
    client: &deadpool_postgres::Client,
    inserts: &[(usize, &InsertRow)],
    publish_ids: &[i64],
    fanned: &FannedOut<'_>,
) -> Result<(), StoreError> {
    let c = &fanned.copies;
    if c.copies.is_empty() {
        return Ok(());
    }
    let shared: HashSet<i64> = c.payloads.iter().map(|(id, _)| *id).collect();
    let parts: Vec<ColumnRow<'_>> = c
        .copies
        .iter()
        .map(|&(k, sub)| {
            let row = inserts[k].1;
            (sub, None, &row.message, !shared.contains(&publish_ids[k]))
        })
        .collect();
    let cols = Columns::from_parts(&parts);
    let publish: Vec<i64> = c.copies.iter().map(|&(k, _)| publish_ids[k]).collect();
    let topic: Vec<Option<&str>> = c
        .copies
        .iter()
        .map(|&(k, _)| inserts[k].1.topic.as_deref())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&fanned.ids];
    params.extend(cols.params());
    params.push(&publish);
    params.push(&topic);
    let insert = async {
        let stmt = client.prepare_cached(queries::INSERT_COPIES).await?;
        client.execute(&stmt, &params).await?;
        Ok::<_, StoreError>(())
    };
    let payloads = async {
        if c.payloads.is_empty() {
            return Ok::<_, StoreError>(());
        }
        let id: Vec<i64> = c.payloads.iter().map(|(id, _)| *id).collect();
        let body: Vec<&[u8]> = c.payloads.iter().map(|(_, b)| *b).collect();
        let at = vec![crate::clock::now_ms(); id.len()];
        let stmt = client.prepare_cached(queries::INSERT_PAYLOADS).await?;
        client.execute(&stmt, &[&id, &body, &at]).await?;
        Ok(())
    };
    tokio::try_join!(insert, payloads)?;
    Ok(())
}

async fn insert_messages(
    client: &deadpool_postgres::Client,
    node: NodeId,
    inserts: &[(usize, &InsertRow)],
    ids: &[i64],
    which: &[usize],
) -> Result<(), StoreError> {
    let rows: Vec<&InsertRow> = which.iter().map(|k| inserts[*k].1).collect();
    let id: Vec<i64> = which.iter().map(|k| ids[*k]).collect();
    let cols = Columns::new(&rows, node);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
    params.extend(cols.params());
    let stmt = client.prepare_cached(queries::INSERT_MESSAGES).await?;
    client.execute(&stmt, &params).await?;
    Ok(())
}

impl Store {
    /// Copies the publications sent to topic `topic_id` through SQL (schema V6) to the
    /// subscriptions that match them, as the broker's own publishes are, and removes them:
    /// one transaction per 500, oldest first, under a per-topic lock so two brokers never
    /// interleave. Returns how many were copied (0 if another broker is at it).
    pub async fn fan_out_publications(&self, topic_id: i32) -> Result<usize, StoreError> {
        const PAGE: i64 = 500;
        let mut total = 0;
        loop {
            let client = self.client().await?;
            client.batch_execute("BEGIN").await?;
            let result = self.fan_out_page(&client, topic_id, PAGE).await;
            match result {
                Ok(n) => {
                    client.batch_execute("COMMIT").await?;
                    total += n;
                    if n < PAGE as usize {
                        return Ok(total);
                    }
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
    }

    async fn fan_out_page(
        &self,
        client: &deadpool_postgres::Client,
        topic_id: i32,
        page: i64,
    ) -> Result<usize, StoreError> {
        let locked: bool = client
            .query_one(queries::LOCK_PUBLICATIONS, &[&topic_id])
            .await?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let stmt = client.prepare_cached(queries::PUBLICATIONS).await?;
        let rows = client.query(&stmt, &[&topic_id, &page]).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut inserts = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let m = crate::read::row_to_message(row)?;
            ids.push(m.id.0);
            inserts.push(InsertRow {
                queue_id: topic_id,
                dedup_window_ms: 0,
                pre_claimed: false,
                audited: None,
                topic: m.topic.clone(),
                message: NewMessage {
                    body: m.body,
                    content_type: m.content_type,
                    persistent: m.persistent,
                    priority: m.priority,
                    sent_at: m.sent_at,
                    expires_at: m.expires_at,
                    deliver_at: row.get(24),
                    correlation_id: m.correlation_id,
                    reply_to: m.reply_to,
                    jms_type: m.jms_type,
                    group_id: m.group_id,
                    group_seq: m.group_seq,
                    user_id: m.user_id,
                    dedup_id: None,
                    traceparent: m.traceparent,
                    tracestate: m.tracestate,
                    properties: m.properties,
                },
            });
        }
        let indexed: Vec<(usize, &InsertRow)> = inserts.iter().map(|r| (0, r)).collect();
        let all: Vec<usize> = (0..indexed.len()).collect();
        let fanned = self.fan_out(client, &indexed, &ids, &all).await?;
        insert_copies(client, &indexed, &ids, &fanned).await?;
        let stmt = client.prepare_cached(queries::DELETE_PUBLICATIONS).await?;
        client.execute(&stmt, &[&ids]).await?;
        self.count_discards(&fanned.copies.discarded);
        let subs: Vec<String> = fanned
            .copies
            .subscriptions
            .iter()
            .map(i32::to_string)
            .collect();
        for chunk in subs.chunks(500) {
            client.execute(queries::NOTIFY, &[&chunk.join(",")]).await?;
        }
        Ok(rows.len())
    }
}
