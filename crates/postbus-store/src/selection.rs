//! Selective claims: a consumer's JMS selector, translated to SQL by `postbus-selector`, narrows
//! the claim so PostgreSQL finds candidate messages; the broker's evaluator makes the exact
//! decision on what comes back.

use postbus_model::StoredMessage;
use postbus_selector::{HeaderField, SqlFilter, SqlMapping, SqlType};
use tokio_postgres::types::ToSql;

use crate::read::rows_in_delivery_order;
use crate::{NodeId, Store, StoreError, queries};

/// Where the selector's header fields and JMSX properties live in `postbus.messages` (aliased
/// `c` in the claim). Each expression is NULL exactly when the field is absent.
pub struct MessagesMapping;

impl SqlMapping for MessagesMapping {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        Some(
            match h {
                HeaderField::JMSPriority => "c.priority",
                HeaderField::JMSTimestamp => "c.sent_at",
                HeaderField::JMSCorrelationID => "c.correlation_id",
                HeaderField::JMSType => "c.jms_type",
                HeaderField::JMSDeliveryMode => {
                    "CASE WHEN c.persistent THEN 'PERSISTENT' ELSE 'NON_PERSISTENT' END"
                }
                HeaderField::JMSMessageID => "('ID:' || coalesce(c.publish_id, c.id))",
            }
            .to_owned(),
        )
    }

    fn column_for_property(&self, name: &str) -> Option<(String, SqlType)> {
        let (expr, ty) = match name {
            "JMSXGroupID" => ("c.group_id", SqlType::Text),
            "JMSXGroupSeq" => ("c.group_seq", SqlType::Integer),
            "JMSXUserID" => ("c.user_id", SqlType::Text),
            "JMSXDeliveryCount" => ("(c.delivery_count + 1)", SqlType::Integer),
            _ => return None,
        };
        Some((expr.to_owned(), ty))
    }

    fn properties_column(&self) -> String {
        "c.properties".to_owned()
    }
}

/// The first parameter number a selector filter may use in [`Store::claim_selected`].
pub const FILTER_FIRST_PARAM: usize = 6;

impl Store {
    /// A page of a browse (see [`queries::browse`]): up to `limit` deliverable messages of a
    /// queue after `after` (priority, id), plain ones in delivery order or grouped ones in id
    /// order, that pass `filter` (None: all). Nothing is claimed.
    pub async fn browse(
        &self,
        queue_id: i32,
        grouped: bool,
        after: (i16, i64),
        limit: i64,
        filter: Option<&SqlFilter>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.client().await?;
        let sql = queries::browse(filter.map_or("true", |f| f.sql.as_str()), grouped);
        let stmt = client.prepare_cached(&sql).await?;
        let now = crate::clock::now_ms();
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&queue_id, &now, &limit, &after.0, &after.1];
        if let Some(f) = filter {
            params.extend(f.params.iter().map(|p| p as &(dyn ToSql + Sync)));
        }
        let rows = client.query(&stmt, &params).await?;
        rows_in_delivery_order(&rows, grouped)
    }

    /// Claims up to `limit` plain (ungrouped) messages of a queue that pass `filter` (built with
    /// [`MessagesMapping`] and parameters from [`FILTER_FIRST_PARAM`]), skipping `exclude` (ids
    /// this consumer's selector already rejected), best priority first, then FIFO.
    pub async fn claim_selected(
        &self,
        node: NodeId,
        queue_id: i32,
        limit: i64,
        filter: &SqlFilter,
        exclude: &[i64],
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.client().await?;
        let sql = queries::claim_selected(&filter.sql);
        let stmt = client.prepare_cached(&sql).await?;
        let now = crate::clock::now_ms();
        let exclude = exclude.to_vec();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&node.0, &queue_id, &limit, &now, &exclude];
        params.extend(filter.params.iter().map(|p| p as &(dyn ToSql + Sync)));
        let rows = self
            .claim_rows(&client, &stmt, &params, node, queue_id)
            .await?;
        rows_in_delivery_order(&rows, false)
    }
}
