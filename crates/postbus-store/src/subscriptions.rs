//! Topic subscriptions: destination rows of kind 'subscription' (schema V3) that publishes
//! copy messages into. Durable ones outlive their consumers; non-durable ones carry the id of
//! the broker node they live on and go when their connection (or that node) does.

use postbus_model::{DestinationKind, QueueSettings, destination::pattern_regex};
use tokio_postgres::Row;

use crate::admin::{DestinationRow, row_to_destination};
use crate::{NodeId, Store, StoreError, queries};

/// What a subscriber asks for.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    /// Unique among subscriptions (see the broker's naming).
    pub name: String,
    /// Topic name or wildcard pattern.
    pub topic_pattern: String,
    pub selector: Option<String>,
    pub durable: bool,
    pub shared: bool,
    pub client_id: Option<String>,
    pub subscription_name: Option<String>,
    /// Non-durable: the node it lives on.
    pub node_id: Option<NodeId>,
    /// Redelivery, dead-letter and expiry settings of its copies (the topic's).
    pub settings: QueueSettings,
}

/// A subscription as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionRow {
    pub destination: DestinationRow,
    pub topic_pattern: String,
    pub selector: Option<String>,
    pub durable: bool,
    pub shared: bool,
    pub client_id: Option<String>,
    pub subscription_name: Option<String>,
    pub node_id: Option<i64>,
}

fn row_to_subscription(r: &Row) -> Result<SubscriptionRow, StoreError> {
    // Destination columns first (14 of them), then SUBSCRIPTION_COLUMNS.
    Ok(SubscriptionRow {
        destination: row_to_destination(r)?,
        topic_pattern: r.get(14),
        selector: r.get(15),
        durable: r.get(16),
        shared: r.get(17),
        client_id: r.get(18),
        subscription_name: r.get(19),
        node_id: r.get(20),
    })
}

impl Store {
    /// Creates the subscription unless one of that name exists, and records that `node` has
    /// consumers on it (in one transaction, so no sweep removes it in between). Returns it as
    /// it is now, and whether this call created it.
    pub async fn ensure_subscription(
        &self,
        spec: &SubscriptionSpec,
        node: NodeId,
    ) -> Result<(SubscriptionRow, bool), StoreError> {
        let s = &spec.settings;
        let regex = pattern_regex(&spec.topic_pattern);
        let node_id = spec.node_id.map(|n| n.0);
        let sql = format!(
            "SELECT {}, {} FROM postbus.destinations WHERE kind = $1 AND name = $2",
            queries::DESTINATION_COLUMNS,
            queries::SUBSCRIPTION_COLUMNS
        );
        // A concurrent removal (its last consumer left elsewhere just now) makes the attach
        // fail its foreign key: then the subscription is made anew.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let created = tx
                .execute(
                    queries::INSERT_SUBSCRIPTION,
                    &[
                        &spec.name,
                        &s.max_deliveries,
                        &s.redelivery_delay_ms,
                        &s.redelivery_backoff,
                        &s.redelivery_max_delay_ms,
                        &s.dead_letter_queue,
                        &s.expiry_queue,
                        &s.dedup_window_ms,
                        &spec.topic_pattern,
                        &regex,
                        &spec.selector,
                        &spec.durable,
                        &spec.shared,
                        &spec.client_id,
                        &spec.subscription_name,
                        &node_id,
                        &s.max_depth,
                    ],
                )
                .await?
                == 1;
            let row = tx
                .query_opt(&sql, &[&DestinationKind::Subscription.as_str(), &spec.name])
                .await?;
            let Some(row) = row else {
                if attempt < 5 {
                    continue;
                }
                return Err(StoreError::NotFound(format!(
                    "subscription {} vanished while being created",
                    spec.name
                )));
            };
            let row = row_to_subscription(&row)?;
            let attached = tx
                .execute(
                    queries::ATTACH_SUBSCRIPTION,
                    &[&row.destination.id, &node.0],
                )
                .await;
            match attached {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok((row, created));
                }
                Err(e)
                    if attempt < 5
                        && e.code()
                            == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The subscription named `name`, if it exists.
    pub async fn find_subscription(
        &self,
        name: &str,
    ) -> Result<Option<SubscriptionRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {}, {} FROM postbus.destinations WHERE kind = $1 AND name = $2",
            queries::DESTINATION_COLUMNS,
            queries::SUBSCRIPTION_COLUMNS
        );
        client
            .query_opt(&sql, &[&DestinationKind::Subscription.as_str(), &name])
            .await?
            .as_ref()
            .map(row_to_subscription)
            .transpose()
    }

    /// Whether any broker node has consumers on subscription `id`.
    pub async fn subscription_attached(&self, id: i32) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(queries::SUBSCRIPTION_ATTACHED, &[&id])
            .await?
            .get(0))
    }

    /// Every subscription, by name.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {}, {} FROM postbus.destinations WHERE kind = 'subscription' ORDER BY name",
            queries::DESTINATION_COLUMNS,
            queries::SUBSCRIPTION_COLUMNS
        );
        client
            .query(&sql, &[])
            .await?
            .iter()
            .map(row_to_subscription)
            .collect()
    }

    /// `node`'s last consumer on the subscription left: forgets that, and removes the
    /// subscription with its copies if it is not durable and no node has consumers on it any
    /// more (or always, with `force`: a durable subscription removed by name). Returns whether
    /// it was removed.
    pub async fn detach_subscription(
        &self,
        id: i32,
        node: Option<NodeId>,
        force: bool,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(node) = node {
            tx.execute(queries::DETACH_SUBSCRIPTION, &[&id, &node.0])
                .await?;
        }
        // Decide under a lock that publishes do not wait for (a subscription that stays must
        // not miss a copy while a consumer detaches).
        let Some(row) = tx
            .query_opt(queries::LOCK_SUBSCRIPTION_FOR_DECISION, &[&id])
            .await?
        else {
            tx.commit().await?;
            return Ok(false);
        };
        let durable: bool = row.get(0);
        let attached = async || -> Result<bool, StoreError> {
            Ok(tx
                .query_one(queries::SUBSCRIPTION_ATTACHED, &[&id])
                .await?
                .get(0))
        };
        if !force && (durable || attached().await?) {
            tx.commit().await?;
            return Ok(false);
        }
        // Removing it: wait for publishes copying to it (later ones skip it), then look again
        // for a consumer that attached meanwhile.
        tx.query_opt(queries::LOCK_DESTINATION, &[&id]).await?;
        if !force && attached().await? {
            tx.commit().await?;
            return Ok(false);
        }
        tx.execute(queries::DELETE_ALL_MESSAGES, &[&id]).await?;
        tx.execute(queries::DELETE_SUBSCRIPTION, &[&id]).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets the consumers of broker nodes that are gone and removes the non-durable
    /// subscriptions nobody consumes from any more. Returns their ids.
    pub async fn remove_gone_node_subscriptions(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        client.execute(queries::DETACH_GONE_NODES, &[]).await?;
        let ids: Vec<i32> = client
            .query(queries::UNATTACHED_SUBSCRIPTIONS, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        let mut removed = Vec::new();
        for id in ids {
            if self.detach_subscription(id, None, false).await? {
                removed.push(id);
            }
        }
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "removed non-durable subscriptions whose consumers' brokers are gone"
            );
        }
        Ok(removed)
    }

    /// Removes shared bodies that no copy points at any more, written before `older_than`
    /// (epoch ms). Returns how many went.
    pub async fn sweep_payloads(&self, older_than: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(queries::SWEEP_PAYLOADS, &[&older_than])
            .await?)
    }
}
