//! Receivers outside the broker's sessions: the SQL API of schema V6 (`postbus.receive`,
//! `postbus.ack`, `postbus.nack`), as the HTTP API uses it, and the broker's side of it
//! (expiring leases, copying topic publications sent through SQL).
//!
//! A lease is a negative `owner` with a row in `postbus.leases`; the SQL functions hold the
//! logic, so an application calling them in its own transaction and an HTTP client get the same
//! behaviour. Only a receive with a JMS selector runs here: the exact evaluator is Rust, so the
//! claim is the selector's SQL pre-filter into a lease, then the evaluator, then the rejected
//! messages go back untouched, all in one transaction.

use postbus_selector::{Selector, SqlFilter};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::fanout::SelectorView;
use crate::read::rows_in_delivery_order;
use crate::{Store, StoreError, queries};

/// A message held under a lease, as `postbus.leased` returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LeasedMessage {
    pub message_id: String,
    /// Names this delivery: acknowledging by receipt works only while this lease holds it.
    pub receipt: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub properties: serde_json::Value,
    pub property_types: Option<serde_json::Value>,
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub jms_type: Option<String>,
    pub priority: i16,
    pub group_id: Option<String>,
    pub group_seq: Option<i32>,
    pub sent_at: i64,
    pub expires_at: i64,
    /// JMSXDeliveryCount (1 on the first delivery).
    pub delivery_count: i32,
    pub redelivered: bool,
    pub user_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub topic: Option<String>,
    pub origin: Option<String>,
    pub dlq_reason: Option<String>,
    pub last_error: Option<String>,
}

fn leased(row: &Row) -> LeasedMessage {
    LeasedMessage {
        message_id: row.get(0),
        receipt: row.get(1),
        body: row.get(2),
        properties: row.get(3),
        property_types: row.get(4),
        content_type: row.get(5),
        correlation_id: row.get(6),
        reply_to: row.get(7),
        jms_type: row.get(8),
        priority: row.get(9),
        group_id: row.get(10),
        group_seq: row.get(11),
        sent_at: row.get(12),
        expires_at: row.get(13),
        delivery_count: row.get(14),
        redelivered: row.get(15),
        user_id: row.get(16),
        traceparent: row.get(17),
        tracestate: row.get(18),
        topic: row.get(19),
        origin: row.get(20),
        dlq_reason: row.get(21),
        last_error: row.get(22),
    }
}

/// The longest lease a receiver may take (as `postbus.receive` allows).
pub const MAX_LEASE_MS: i32 = 43_200_000;

/// How many claim-and-evaluate rounds one selective receive makes at most.
const SELECTIVE_ROUNDS: usize = 8;

/// The SQL API refuses a call with a `postbus:` message (and a hint): the caller's mistake,
/// not the database's failure.
fn refusal(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error()
        && let Some(what) = db.message().strip_prefix("postbus: ")
    {
        let hint = db.hint().map(|h| format!(" ({h})")).unwrap_or_default();
        return StoreError::Refused(format!("{what}{hint}"));
    }
    StoreError::Db(e)
}

impl Store {
    /// Returns the messages of SQL and HTTP leases that ran out to their queues (delivery
    /// counted); how many.
    pub async fn expire_leases(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        Ok(client.query_one(queries::EXPIRE_LEASES, &[]).await?.get(0))
    }

    /// The topics with publications sent through SQL that wait for their fan-out.
    pub async fn pending_publications(&self) -> Result<Vec<i32>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(queries::PENDING_PUBLICATIONS).await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// The id of a destination named as the SQL API names it (`/queue/NAME`, ...), if it exists.
    pub async fn destination_id(&self, destination: &str) -> Result<Option<i32>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(queries::RESOLVE_FOR_RECEIVE, &[&destination])
            .await
            .map_err(refusal)?;
        Ok(row.get(0))
    }

    /// `postbus.receive`: up to `max` messages of `destination` held for `lease_ms`.
    pub async fn lease_receive(
        &self,
        destination: &str,
        max: i32,
        lease_ms: i32,
    ) -> Result<Vec<LeasedMessage>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(queries::SQL_RECEIVE).await?;
        let rows = client
            .query(&stmt, &[&destination, &max, &lease_ms])
            .await
            .map_err(refusal)?;
        Ok(rows.iter().map(leased).collect())
    }

    /// Like [`Store::lease_receive`], only messages `selector` accepts (ungrouped ones; see
    /// docs/sql-api.md). `filter` is the selector's SQL pre-filter (parameters from
    /// [`crate::FILTER_FIRST_PARAM`]).
    pub async fn lease_receive_selected(
        &self,
        destination: &str,
        max: i32,
        lease_ms: i32,
        selector: &Selector,
        filter: &SqlFilter,
    ) -> Result<Vec<LeasedMessage>, StoreError> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        let result = self
            .receive_selected_in(&client, destination, max, lease_ms, selector, filter)
            .await;
        match result {
            Ok(messages) => {
                client.batch_execute("COMMIT").await?;
                Ok(messages)
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn receive_selected_in(
        &self,
        client: &deadpool_postgres::Client,
        destination: &str,
        max: i32,
        lease_ms: i32,
        selector: &Selector,
        filter: &SqlFilter,
    ) -> Result<Vec<LeasedMessage>, StoreError> {
        if !(1..=10_000).contains(&max) || !(1..=MAX_LEASE_MS).contains(&lease_ms) {
            return Err(StoreError::Refused(format!(
                "max_messages must be 1 to 10000 and lease_ms 1 to {MAX_LEASE_MS} (12 hours)"
            )));
        }
        let dest = client
            .query_one(queries::RESOLVE_FOR_RECEIVE, &[&destination])
            .await
            .map_err(refusal)?;
        let (Some(queue_id), Some(kind)): (Option<i32>, Option<String>) =
            (dest.get(0), dest.get(1))
        else {
            // As postbus.receive: a queue nobody sent to is empty; anything else must exist.
            if destination.starts_with('/') && !destination.starts_with("/queue/") {
                return Err(StoreError::Refused(format!(
                    "{destination} does not exist (subscriptions and temporary queues are made by their consumers)"
                )));
            }
            return Ok(Vec::new());
        };
        client
            .query_one(queries::EXPIRE_QUEUE_LEASES, &[&queue_id])
            .await?;
        if kind == "topic" {
            return Err(StoreError::Refused(format!(
                "receive from a subscription of the topic, not from {destination} itself"
            )));
        }
        let lease: i64 = client
            .query_one(queries::OPEN_LEASE, &[&queue_id, &lease_ms])
            .await?
            .get(0);
        let sql = queries::claim_selected(&filter.sql);
        let claim = client.prepare_cached(&sql).await?;
        let mut rejected: Vec<i64> = Vec::new();
        let mut accepted = 0usize;
        // Rejected candidates stay locked until the commit; a bounded number of rounds keeps a
        // selector that matches little on a deep queue from holding the whole queue.
        for _ in 0..SELECTIVE_ROUNDS {
            let want = (max as usize - accepted) as i64;
            let now = crate::clock::now_ms();
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&lease, &queue_id, &want, &now, &rejected];
            params.extend(filter.params.iter().map(|p| p as &(dyn ToSql + Sync)));
            let rows = client.query(&claim, &params).await?;
            let claimed = rows_in_delivery_order(&rows, false)?;
            if claimed.is_empty() {
                break;
            }
            let mut newly_rejected = Vec::new();
            for m in &claimed {
                if selector.matches(&SelectorView::of_stored(m)) {
                    accepted += 1;
                } else {
                    newly_rejected.push(m.id.0);
                }
            }
            if !newly_rejected.is_empty() {
                client
                    .execute(queries::GIVE_BACK_LEASED, &[&newly_rejected, &lease])
                    .await?;
                rejected.extend(newly_rejected);
            }
            if accepted >= max as usize {
                break;
            }
        }
        client
            .execute(queries::DEAD_LETTER_LEASED, &[&lease, &queue_id])
            .await?;
        let rows = client.query(queries::LEASED, &[&lease]).await?;
        if rows.is_empty() {
            client
                .execute(queries::END_LEASE_IF_EMPTY, &[&lease])
                .await?;
        }
        Ok(rows.iter().map(leased).collect())
    }

    /// `postbus.ack`: true when the message was held (and is now gone).
    pub async fn lease_ack(&self, handle: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(queries::SQL_ACK, &[&handle])
            .await
            .map_err(refusal)?
            .get(0))
    }

    /// `postbus.nack`: true when the message was held (and is now back, or dead-lettered).
    pub async fn lease_nack(&self, handle: &str, error: Option<&str>) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(queries::SQL_NACK, &[&handle, &error])
            .await
            .map_err(refusal)?
            .get(0))
    }
}

impl Store {
    /// Registers a selector for SQL receivers (`postbus.receive(..., selector => ...)`): its
    /// exact SQL translation, stored for the function to run. Refused when the translation
    /// would only approximate the selector. Returns the translation.
    pub async fn register_selector(&self, text: &str) -> Result<String, StoreError> {
        let selector = Selector::parse(text).map_err(|e| StoreError::Refused(format!("{e}")))?;
        let filter = selector
            .to_exact_sql(&crate::MessagesMapping, 1)
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "{text:?} cannot be decided exactly in SQL (an arithmetic expression, a comparison \
                     between two properties, or a numeric bound Java would round): use it over STOMP \
                     or HTTP, where the broker evaluates it (`postbus selector check` explains)"
                ))
            })?;
        // `$n::text` placeholders become elements of one text[] parameter.
        let mut condition = filter.sql.clone();
        for n in (1..=filter.params.len()).rev() {
            condition = condition.replace(&format!("${n}::"), &format!("$1[{n}]::"));
        }
        let client = self.client().await?;
        client
            .execute(
                queries::REGISTER_SELECTOR,
                &[&text, &condition, &filter.params],
            )
            .await?;
        Ok(condition)
    }
}
