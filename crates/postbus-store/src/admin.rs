//! Destinations: lookup, creation, listing with depth, purge and delete.

use postbus_model::{DestinationKind, QueueSettings};
use tokio_postgres::Row;

use crate::{NodeId, Store, StoreError, queries};

/// A destination as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRow {
    pub id: i32,
    pub kind: DestinationKind,
    pub name: String,
    pub settings: QueueSettings,
    pub auto_created: bool,
}

/// A destination with its depth by state.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DestinationStats {
    pub id: i32,
    pub kind: String,
    pub name: String,
    pub ready: i64,
    pub in_flight: i64,
    pub scheduled: i64,
    /// JMSTimestamp of the oldest ready message, epoch ms.
    pub oldest_ready_ms: Option<i64>,
}

pub(crate) fn row_to_destination(r: &Row) -> Result<DestinationRow, StoreError> {
    let kind: String = r.get(1);
    Ok(DestinationRow {
        id: r.get(0),
        kind: DestinationKind::parse(&kind)
            .ok_or_else(|| StoreError::BadRow(format!("unknown kind {kind}")))?,
        name: r.get(2),
        settings: QueueSettings {
            max_deliveries: r.get(3),
            redelivery_delay_ms: r.get(4),
            redelivery_backoff: r.get(5),
            redelivery_max_delay_ms: r.get(6),
            dead_letter_queue: r.get(7),
            expiry_queue: r.get(8),
            dedup_window_ms: r.get(9),
            exclusive: r.get(10),
            audit_messages: r.get(12),
            max_depth: r.get(13),
        },
        auto_created: r.get(11),
    })
}

impl Store {
    pub async fn find_destination(
        &self,
        kind: DestinationKind,
        name: &str,
    ) -> Result<Option<DestinationRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM postbus.destinations WHERE kind = $1 AND name = $2",
            queries::DESTINATION_COLUMNS
        );
        client
            .query_opt(&sql, &[&kind.as_str(), &name])
            .await?
            .as_ref()
            .map(row_to_destination)
            .transpose()
    }

    /// Creates a destination if it does not exist and returns it (as it is now).
    pub async fn create_destination(
        &self,
        kind: DestinationKind,
        name: &str,
        s: &QueueSettings,
        auto_created: bool,
    ) -> Result<(DestinationRow, bool), StoreError> {
        let client = self.client().await?;
        let created = client
            .execute(
                queries::INSERT_DESTINATION,
                &[
                    &kind.as_str(),
                    &name,
                    &s.max_deliveries,
                    &s.redelivery_delay_ms,
                    &s.redelivery_backoff,
                    &s.redelivery_max_delay_ms,
                    &s.dead_letter_queue,
                    &s.expiry_queue,
                    &s.dedup_window_ms,
                    &s.exclusive,
                    &auto_created,
                    &s.audit_messages,
                    &s.max_depth,
                ],
            )
            .await?
            == 1;
        drop(client);
        let row = self.find_destination(kind, name).await?.ok_or_else(|| {
            StoreError::NotFound(format!("destination {name} vanished while being created"))
        })?;
        Ok((row, created))
    }

    pub async fn destination_stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(queries::DESTINATION_STATS, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| DestinationStats {
                id: r.get(0),
                kind: r.get(1),
                name: r.get(2),
                ready: r.get(3),
                in_flight: r.get(4),
                scheduled: r.get(5),
                oldest_ready_ms: r.get(6),
            })
            .collect())
    }

    /// Deletes every message of the queue that no consumer holds; returns how many.
    pub async fn purge(&self, queue_id: i32) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client.execute(queries::PURGE, &[&queue_id]).await?)
    }

    /// Creates a temporary queue owned by `node` unless it exists; returns it.
    pub async fn create_temp_queue(
        &self,
        name: &str,
        node: NodeId,
        dead_letter_queue: &str,
    ) -> Result<DestinationRow, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                queries::INSERT_TEMP_QUEUE,
                &[&name, &node.0, &dead_letter_queue],
            )
            .await?;
        drop(client);
        self.find_destination(DestinationKind::TempQueue, name)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "temporary queue {name} vanished while being created"
                ))
            })
    }

    /// Deletes the temporary queues of broker nodes that are gone, with their messages.
    /// Returns their ids.
    pub async fn remove_gone_node_temp_queues(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let ids: Vec<i32> = client
            .query(queries::GONE_NODE_TEMP_QUEUES, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        for id in &ids {
            self.delete_destination(*id, true).await?;
        }
        if !ids.is_empty() {
            tracing::info!(
                count = ids.len(),
                "removed the temporary queues of broker nodes that are gone"
            );
        }
        Ok(ids)
    }

    /// Deletes a destination. Refused while it holds messages unless `force` (which deletes
    /// them). Returns how many messages went with it.
    pub async fn delete_destination(&self, queue_id: i32, force: bool) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Waits for writers holding the row (publishers copying to a subscription).
        tx.query_opt(queries::LOCK_DESTINATION, &[&queue_id])
            .await?;
        if !force {
            let count: i64 = tx
                .query_one(queries::COUNT_MESSAGES, &[&queue_id])
                .await?
                .get(0);
            if count > 0 {
                return Err(StoreError::Conflict(format!(
                    "the destination holds {count} messages: purge it first, or delete with --force"
                )));
            }
        }
        let deleted = tx
            .execute(queries::DELETE_ALL_MESSAGES, &[&queue_id])
            .await?;
        tx.execute(queries::DELETE_DESTINATION_DEDUP, &[&queue_id])
            .await?;
        tx.execute(queries::DELETE_DESTINATION, &[&queue_id])
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
