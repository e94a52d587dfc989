//! The read side: claiming messages for delivery, the scheduler, sweeps, and node leases.

use postbus_model::{MessageId, Properties, StoredMessage};
use tokio_postgres::Row;

use std::time::Instant;

use crate::{NodeId, Store, StoreError, clock, queries};

/// Builds a delivered message from a row selected with [`queries::MESSAGE_COLUMNS`].
/// Messages from rows selected with [`queries::MESSAGE_COLUMNS`], in delivery order: grouped
/// ones by id (sequence order), plain ones best priority first, then FIFO.
pub(crate) fn rows_in_delivery_order(
    rows: &[Row],
    grouped: bool,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut out = rows
        .iter()
        .map(row_to_message)
        .collect::<Result<Vec<_>, _>>()?;
    if grouped {
        out.sort_by_key(|m| m.id);
    } else {
        out.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    }
    Ok(out)
}

pub(crate) fn row_to_message(row: &Row) -> Result<StoredMessage, StoreError> {
    let props: Option<serde_json::Value> = row.get(16);
    let types: Option<serde_json::Value> = row.get(17);
    let properties =
        Properties::from_json(props.as_ref(), types.as_ref()).map_err(StoreError::BadRow)?;
    let body: Option<Vec<u8>> = row.get(21);
    let body = body.ok_or_else(|| {
        StoreError::BadRow(format!(
            "message {} has no body (its shared payload is missing)",
            row.get::<_, i64>(0)
        ))
    })?;
    let publish_id: Option<i64> = row.get(22);
    Ok(StoredMessage {
        id: MessageId(row.get(0)),
        queue_id: row.get(1),
        priority: row.get(2),
        expires_at: row.get(3),
        delivery_count: row.get(4),
        persistent: row.get(5),
        sent_at: row.get(6),
        group_id: row.get(7),
        group_seq: row.get(8),
        correlation_id: row.get(9),
        reply_to: row.get(10),
        jms_type: row.get(11),
        content_type: row.get(12),
        user_id: row.get(13),
        traceparent: row.get(14),
        tracestate: row.get(15),
        properties,
        dlq_reason: row.get(18),
        original_destination: row.get(19),
        last_error: row.get(20),
        body: body.into(),
        publish_id: publish_id.map(MessageId),
        topic: row.get(23),
    })
}

/// One expired message found by the sweep.
#[derive(Clone, Debug)]
pub struct ExpiredMessage {
    pub id: i64,
    pub queue_id: i32,
    pub expiry_queue: Option<String>,
    pub queue_name: String,
}

impl Store {
    /// Claims up to `limit` deliverable messages of a queue for `node`: outside groups best
    /// priority first then FIFO, or (`grouped`) grouped messages in sequence order. Returned in
    /// that order.
    /// Sends the wake-up hint for queue ids `ids` (comma-separated) outside a batch.
    pub async fn notify(&self, ids: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute(queries::NOTIFY, &[&ids]).await?;
        Ok(())
    }

    /// Whether a queue has plain messages waiting in the table, unclaimed.
    pub async fn has_ready(&self, queue_id: i32) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(queries::HAS_READY).await?;
        let now = crate::clock::now_ms();
        Ok(client.query_one(&stmt, &[&queue_id, &now]).await?.get(0))
    }

    pub async fn claim(
        &self,
        node: NodeId,
        queue_id: i32,
        limit: i64,
        grouped: bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.client().await?;
        let claim = if grouped {
            queries::CLAIM_GROUPED
        } else {
            queries::CLAIM
        };
        let sql = format!("{claim}{}", queries::MESSAGE_COLUMNS);
        let stmt = client.prepare_cached(&sql).await?;
        let now = crate::clock::now_ms();
        let rows = self
            .claim_rows(
                &client,
                &stmt,
                &[&node.0, &queue_id, &limit, &now],
                node,
                queue_id,
            )
            .await?;
        // RETURNING order is not guaranteed: restore delivery order.
        rows_in_delivery_order(&rows, grouped)
    }

    /// Runs a claim (`stmt`, an UPDATE ... RETURNING of messages of `queue_id` taken for
    /// `node`) in a transaction whose id is read first, all in one round trip. When the
    /// connection breaks during the statement or its COMMIT, the outcome is asked of
    /// PostgreSQL ([`Store::resolve_commit_failure`]); a claim that committed is returned as
    /// if its answer had come (its rows read again by their xmin when the answer was lost).
    /// Without this, its messages stayed held by this live broker, undelivered, until it
    /// restarted (found by fault scenario 3g, sessions ended in a wait for a synchronous
    /// standby).
    pub(crate) async fn claim_rows(
        &self,
        client: &deadpool_postgres::Client,
        stmt: &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        node: NodeId,
        queue_id: i32,
    ) -> Result<Vec<Row>, StoreError> {
        let xid_stmt = client.prepare_cached(queries::CURRENT_XID).await?;
        let (begin, xid, rows, commit) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.query_one(&xid_stmt, &[]),
            client.query(stmt, params),
            client.batch_execute("COMMIT"),
        );
        // A failed BEGIN fails what follows too (the connection broke).
        drop(begin);
        let xid: Option<String> = xid.ok().map(|r| r.get(0));
        match (rows, commit) {
            (Ok(rows), Ok(())) => Ok(rows),
            (Ok(rows), Err(e)) => {
                let Some(xid) = xid else {
                    return Err(e.into());
                };
                self.resolve_commit_failure(e, &xid).await?;
                Ok(rows)
            }
            (Err(e), _) => {
                let refused = e
                    .as_db_error()
                    .is_some_and(|d| !matches!(d.severity(), "FATAL" | "PANIC"));
                let Some(xid) = xid.filter(|_| !refused) else {
                    // The statement failed, so the COMMIT rolled back (or never ran).
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e.into());
                };
                self.resolve_commit_failure(e, &xid).await?;
                let again = self.client().await?;
                Ok(again
                    .query(queries::CLAIMED_BY_TRANSACTION, &[&queue_id, &node.0, &xid])
                    .await?)
            }
        }
    }

    /// Takes or confirms a dispatch lease (`kind` is "groups" or "exclusive"); true when this
    /// node holds it.
    pub async fn acquire_lease(
        &self,
        node: NodeId,
        queue_id: i32,
        kind: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(queries::ACQUIRE_LEASE).await?;
        Ok(client
            .query_opt(&stmt, &[&queue_id, &kind, &node.0])
            .await?
            .is_some())
    }

    /// Gives up this node's dispatch leases on a queue.
    pub async fn release_leases(&self, node: NodeId, queue_id: i32) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(queries::RELEASE_LEASES, &[&queue_id, &node.0])
            .await?;
        Ok(())
    }

    /// Makes scheduled messages whose time has come deliverable; returns the queues touched.
    pub async fn promote_scheduled(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let now = crate::clock::now_ms();
        let rows = client.query(queries::PROMOTE_SCHEDULED, &[&now]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Removes (or moves to their expiry queue) up to `limit` expired messages nobody holds.
    /// `expiry_queue_id` resolves an expiry-queue name to a queue id (creating it if needed).
    pub async fn sweep_expired<F>(
        &self,
        limit: i64,
        mut expiry_queue_id: F,
    ) -> Result<Vec<ExpiredMessage>, StoreError>
    where
        F: AsyncFnMut(&str) -> Result<i32, StoreError>,
    {
        let mut client = self.client().await?;
        let now = crate::clock::now_ms();
        let tx = client.transaction().await?;
        let found: Vec<ExpiredMessage> = tx
            .query(queries::EXPIRED, &[&now, &limit])
            .await?
            .iter()
            .map(|r| ExpiredMessage {
                id: r.get(0),
                queue_id: r.get(1),
                expiry_queue: r.get(2),
                queue_name: r.get(3),
            })
            .collect();
        let drop_ids: Vec<i64> = found
            .iter()
            .filter(|m| m.expiry_queue.is_none())
            .map(|m| m.id)
            .collect();
        if !drop_ids.is_empty() {
            tx.execute(queries::DELETE_BY_IDS, &[&drop_ids]).await?;
        }
        let mut by_target: std::collections::BTreeMap<(String, String), Vec<i64>> =
            Default::default();
        for m in found.iter().filter(|m| m.expiry_queue.is_some()) {
            by_target
                .entry((
                    m.expiry_queue.clone().unwrap_or_default(),
                    m.queue_name.clone(),
                ))
                .or_default()
                .push(m.id);
        }
        for ((target, origin), ids) in by_target {
            let target_id = expiry_queue_id(&target).await?;
            let origin = format!("/queue/{origin}");
            tx.execute(queries::MOVE_EXPIRED, &[&ids, &target_id, &origin])
                .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    /// Forgets dedup ids and committed client transactions older than their windows.
    pub async fn sweep_records(&self, client_tx_window_ms: i64) -> Result<(u64, u64), StoreError> {
        let client = self.client().await?;
        let now = crate::clock::now_ms();
        let dedup = client.execute(queries::SWEEP_DEDUP, &[&now]).await?;
        let cutoff = now - client_tx_window_ms;
        let txs = client.execute(queries::SWEEP_CLIENT_TX, &[&cutoff]).await?;
        Ok((dedup, txs))
    }

    /// True when this client transaction id was committed (within the record's window).
    pub async fn client_tx_committed(
        &self,
        client_id: &str,
        tx_id: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(queries::FIND_CLIENT_TX, &[&client_id, &tx_id])
            .await?
            .is_some();
        if found {
            // The record may be committed on this server only (its session ended in the wait
            // for a synchronous standby): the answer waits until the standby has it.
            crate::durability_barrier(&client).await?;
        }
        Ok(found)
    }

    /// Registers this broker process and returns its node id (its fencing token).
    pub async fn register_node(
        &self,
        name: &str,
        hostname: &str,
        lease_ms: i32,
    ) -> Result<NodeId, StoreError> {
        let client = self.client().await?;
        let pid = std::process::id() as i32;
        let sent = Instant::now();
        let row = client
            .query_one(queries::REGISTER_NODE, &[&name, &hostname, &pid, &lease_ms])
            .await?;
        clock::observed(row.get(1), sent, Instant::now());
        Ok(NodeId(row.get(0)))
    }

    /// Renews the node's lease and observes the database's clock. `Ok(false)`: the node was
    /// declared dead and must stop acting.
    pub async fn heartbeat(&self, node: NodeId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let sent = Instant::now();
        let Some(row) = client.query_opt(queries::HEARTBEAT, &[&node.0]).await? else {
            return Ok(false);
        };
        clock::observed(row.get(0), sent, Instant::now());
        Ok(true)
    }

    /// Declares dead the nodes whose lease ran out (and earlier incarnations of `name`) and
    /// takes back their in-flight messages. Returns the queues that got messages back.
    pub async fn reap_nodes(&self, me: NodeId, name: &str) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(queries::REAP_DEAD_NODES, &[&me.0, &name])
            .await?;
        let queues: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        if !queues.is_empty() {
            tracing::warn!(queues = ?queues, "took back the in-flight messages of broker nodes that are gone");
        }
        Ok(queues)
    }

    /// Takes back messages held by nodes that no longer exist (see
    /// [`queries::RELEASE_ORPHANS`]). Returns the queues that got messages back.
    pub async fn release_orphans(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(queries::RELEASE_ORPHANS, &[]).await?;
        let queues: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        if !queues.is_empty() {
            tracing::warn!(queues = ?queues, "took back messages held by broker nodes that no longer exist");
        }
        Ok(queues)
    }

    /// A clean shutdown: the node's in-flight messages go back at once.
    pub async fn deregister_node(&self, node: NodeId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute(queries::DEREGISTER_NODE, &[&node.0]).await?;
        Ok(())
    }
}
