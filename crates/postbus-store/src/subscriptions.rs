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
    // Destination columns first (12 of them), then SUBSCRIPTION_COLUMNS.
    Ok(SubscriptionRow {
        destination: row_to_destination(r)?,
        topic_pattern: r.get(12),
        selector: r.get(13),
        durable: r.get(14),
        shared: r.get(15),
        client_id: r.get(16),
        subscription_name: r.get(17),
        node_id: r.get(18),
    })
}

impl Store {
    /// Creates the subscription unless one of that name exists; returns it as it is now, and
    /// whether this call created it.
    pub async fn ensure_subscription(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<(SubscriptionRow, bool), StoreError> {
        let client = self.client().await?;
        let s = &spec.settings;
        let regex = pattern_regex(&spec.topic_pattern);
        let node = spec.node_id.map(|n| n.0);
        let created = client
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
                    &node,
                ],
            )
            .await?
            == 1;
        drop(client);
        let row = self.find_subscription(&spec.name).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "subscription {} vanished while being created",
                spec.name
            ))
        })?;
        Ok((row, created))
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

    /// Deletes a subscription with the copies it still holds. False if it was not there.
    pub async fn delete_subscription(&self, id: i32) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client.execute(queries::DELETE_SUBSCRIPTION, &[&id]).await? == 1)
    }

    /// Deletes the non-durable subscriptions of broker nodes that are gone (they lived with
    /// that node's connections). Returns their ids.
    pub async fn remove_gone_node_subscriptions(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let ids: Vec<i32> = client
            .query(queries::GONE_NODE_SUBSCRIPTIONS, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        for id in &ids {
            self.delete_subscription(*id).await?;
        }
        if !ids.is_empty() {
            tracing::info!(
                count = ids.len(),
                "removed the non-durable subscriptions of broker nodes that are gone"
            );
        }
        Ok(ids)
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
