//! Operators' message management (the admin API): every message of a queue whatever its state,
//! paged and filtered by a JMS selector; one message with its body; deleting or moving one
//! message nobody holds; replaying a dead-letter queue to the queues its messages came from;
//! and changing a destination's settings.
//!
//! A message a consumer holds (in flight) is never deleted or moved: the consumer's ack or
//! release would then act on a message that changed under it. Moves and replays NOTIFY the
//! target queues in their own transaction, so every broker's dispatcher claims them before
//! fresh messages skip the table again (ARCHITECTURE, step 4).

use postbus_model::{QueueSettings, StoredMessage};
use postbus_selector::Selector;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::admin::{DestinationRow, row_to_destination};
use crate::read::row_to_message;
use crate::{MessagesMapping, SelectorView, Store, StoreError, queries};

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Deliverable now.
    Ready,
    /// Held by a consumer (a broker node or an SQL/HTTP lease).
    InFlight,
    /// Not deliverable before a time (scheduled delivery, redelivery delay).
    Scheduled,
}

/// A message as an operator sees it: the message, its state and its body's size.
#[derive(Clone, Debug)]
pub struct ManagedMessage {
    pub message: StoredMessage,
    pub state: MessageState,
    pub size: i64,
}

fn row_to_managed(r: &Row) -> Result<ManagedMessage, StoreError> {
    // MESSAGE_COLUMNS' 24 columns, then owner, ready_at and the size.
    let message = row_to_message(r)?;
    let owner: Option<i64> = r.get(24);
    let ready_at: Option<i64> = r.get(25);
    let size: Option<i32> = r.get(26);
    let state = match (owner, ready_at) {
        (Some(_), _) => MessageState::InFlight,
        (None, Some(_)) => MessageState::Scheduled,
        (None, None) => MessageState::Ready,
    };
    let size = size.map_or(message.body.len() as i64, i64::from);
    Ok(ManagedMessage {
        message,
        state,
        size,
    })
}

/// A page of a queue's messages.
#[derive(Clone, Debug)]
pub struct MessagePage {
    pub messages: Vec<ManagedMessage>,
    /// The id to continue after; None when the queue holds no more.
    pub next_after: Option<i64>,
}

/// What one replay call did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayOutcome {
    /// Messages moved back to their origin (or the given target).
    pub moved: u64,
    /// Matching messages left where they are: no origin queue, an origin that is a topic, or
    /// one that no longer exists.
    pub skipped: u64,
    /// The id to continue after; None when no matching message is left beyond it.
    pub next_after: Option<i64>,
}

/// Why a single-message operation did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageRefusal {
    NotFound,
    InFlight,
}

/// The parameters of a filtered statement: the leading ones, then the selector's.
fn with_filter<'a>(
    lead: Vec<&'a (dyn ToSql + Sync)>,
    filter: &'a Option<postbus_selector::SqlFilter>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params = lead;
    if let Some(f) = filter {
        params.extend(f.params.iter().map(|p| p as &(dyn ToSql + Sync)));
    }
    params
}

/// The queue a message's `origin` names (`/queue/NAME`), if it is a queue.
fn origin_queue(origin: Option<&str>) -> Option<&str> {
    origin?.strip_prefix("/queue/").filter(|n| !n.is_empty())
}

impl Store {
    /// Up to `limit` messages of queue `queue_id` with an id above `after`, in id order and in
    /// any state, that `selector` accepts (exactly: the SQL translation narrows the read, the
    /// evaluator decides). Bodies are left out (see [`Store::managed_message`]).
    pub async fn manage_page(
        &self,
        queue_id: i32,
        after: i64,
        limit: i64,
        selector: Option<&Selector>,
    ) -> Result<MessagePage, StoreError> {
        let filter = selector.map(|s| s.to_sql(&MessagesMapping, 4));
        let sql = queries::manage_page(filter.as_ref().map_or("true", |f| f.sql.as_str()));
        let client = self.client().await?;
        let rows = client
            .query(&sql, &with_filter(vec![&queue_id, &after, &limit], &filter))
            .await?;
        let scanned = rows.len() as i64;
        let mut next_after = None;
        let mut messages = Vec::with_capacity(rows.len());
        for r in &rows {
            let m = row_to_managed(r)?;
            next_after = Some(m.message.id.0);
            if selector.is_none_or(|s| s.matches(&SelectorView::of_stored(&m.message))) {
                messages.push(m);
            }
        }
        Ok(MessagePage {
            messages,
            next_after: next_after.filter(|_| scanned == limit),
        })
    }

    /// One message of queue `queue_id`, with its body.
    pub async fn managed_message(
        &self,
        queue_id: i32,
        id: i64,
    ) -> Result<Option<ManagedMessage>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(queries::MANAGE_ONE, &[&id, &queue_id])
            .await?
            .as_ref()
            .map(|r| {
                let mut m = row_to_managed(r)?;
                m.size = m.message.body.len() as i64;
                Ok(m)
            })
            .transpose()
    }

    /// Why message `id` of queue `queue_id` could not be changed: gone, or held.
    async fn refusal(&self, queue_id: i32, id: i64) -> Result<MessageRefusal, StoreError> {
        let client = self.client().await?;
        let held: Option<bool> = client
            .query_opt(queries::MANAGE_HELD, &[&id, &queue_id])
            .await?
            .map(|r| r.get(0));
        Ok(match held {
            Some(true) => MessageRefusal::InFlight,
            _ => MessageRefusal::NotFound,
        })
    }

    /// Deletes message `id` of queue `queue_id` unless a consumer holds it.
    pub async fn delete_message(
        &self,
        queue_id: i32,
        id: i64,
    ) -> Result<Result<(), MessageRefusal>, StoreError> {
        let n = self
            .client()
            .await?
            .execute(queries::MANAGE_DELETE, &[&id, &queue_id])
            .await?;
        if n == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(self.refusal(queue_id, id).await?))
    }

    /// Moves message `id` of queue `queue_id` to queue `target` unless a consumer holds it,
    /// and wakes the target's dispatchers in the same transaction.
    pub async fn move_message(
        &self,
        queue_id: i32,
        id: i64,
        target: i32,
    ) -> Result<Result<(), MessageRefusal>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(queries::MANAGE_MOVE, &[&id, &queue_id, &target])
            .await?;
        if n == 1 {
            tx.execute(queries::NOTIFY, &[&target.to_string()]).await?;
            tx.commit().await?;
            return Ok(Ok(()));
        }
        drop(tx);
        drop(client);
        Ok(Err(self.refusal(queue_id, id).await?))
    }

    /// Moves up to `limit` messages of queue `queue_id` that nobody holds, with an id above
    /// `after` and accepted by `selector`, in id order, to the queue their `origin` names (or
    /// to `to`), as deliverable messages with a fresh delivery count, in one transaction that
    /// also wakes the targets. `may_send(queue name)` says whether the caller may send to a
    /// target; messages it refuses are skipped.
    pub async fn replay(
        &self,
        queue_id: i32,
        after: i64,
        limit: u64,
        selector: Option<&Selector>,
        to: Option<i32>,
        may_send: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<ReplayOutcome, StoreError> {
        const PAGE: i64 = 1000;
        let filter = selector.map(|s| s.to_sql(&MessagesMapping, 4));
        let sql = queries::replay_candidates(filter.as_ref().map_or("true", |f| f.sql.as_str()));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut out = ReplayOutcome::default();
        let mut cursor = after;
        let mut ids: Vec<i64> = Vec::new();
        let mut targets: Vec<i32> = Vec::new();
        let mut known: std::collections::HashMap<String, Option<i32>> = Default::default();
        'pages: loop {
            let rows = tx
                .query(&sql, &with_filter(vec![&queue_id, &cursor, &PAGE], &filter))
                .await?;
            let full = rows.len() as i64 == PAGE;
            for r in &rows {
                let m = row_to_managed(r)?.message;
                if out.moved >= limit {
                    // A matching message is left: the next call starts from here.
                    if selector.is_none_or(|s| s.matches(&SelectorView::of_stored(&m))) {
                        out.next_after = Some(cursor);
                        break 'pages;
                    }
                    cursor = m.id.0;
                    continue;
                }
                cursor = m.id.0;
                if selector.is_some_and(|s| !s.matches(&SelectorView::of_stored(&m))) {
                    continue;
                }
                let target = match to {
                    Some(t) => Some(t),
                    None => match origin_queue(m.original_destination.as_deref()) {
                        None => None,
                        Some(name) => {
                            if !known.contains_key(name) {
                                let id = tx
                                    .query_opt(queries::QUEUE_IDS_BY_NAME, &[&vec![name]])
                                    .await?
                                    .map(|r| r.get::<_, i32>(1))
                                    .filter(|_| may_send(name));
                                known.insert(name.to_owned(), id);
                            }
                            known[name]
                        }
                    },
                };
                match target {
                    Some(t) if t != queue_id => {
                        ids.push(m.id.0);
                        targets.push(t);
                        out.moved += 1;
                    }
                    _ => out.skipped += 1,
                }
            }
            if !full {
                break;
            }
        }
        if !ids.is_empty() {
            tx.execute(queries::REPLAY_MOVE, &[&ids, &targets]).await?;
            let mut woken = targets.clone();
            woken.sort_unstable();
            woken.dedup();
            let list = woken
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            tx.execute(queries::NOTIFY, &[&list]).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Changes a destination's settings with `change` (applied to the stored ones under a row
    /// lock) and returns the destination as it is now. The destination stops counting as
    /// auto-created: an operator chose its settings.
    pub async fn update_settings(
        &self,
        id: i32,
        change: impl FnOnce(&mut QueueSettings),
    ) -> Result<Option<DestinationRow>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "SELECT {} FROM postbus.destinations WHERE id = $1 FOR UPDATE",
            queries::DESTINATION_COLUMNS
        );
        let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
            return Ok(None);
        };
        let mut d = row_to_destination(&row)?;
        change(&mut d.settings);
        let s = &d.settings;
        tx.execute(
            queries::UPDATE_DESTINATION_SETTINGS,
            &[
                &id,
                &s.max_deliveries,
                &s.redelivery_delay_ms,
                &s.redelivery_backoff,
                &s.redelivery_max_delay_ms,
                &s.dead_letter_queue,
                &s.expiry_queue,
                &s.dedup_window_ms,
                &s.exclusive,
                &s.audit_messages,
                &s.max_depth,
            ],
        )
        .await?;
        // Every broker reloads the runtime's settings ('s<id>' on the wake-up channel).
        tx.execute(queries::NOTIFY, &[&format!("s{id}")]).await?;
        tx.commit().await?;
        d.auto_created = false;
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::origin_queue;

    #[test]
    fn only_queue_origins_are_replay_targets() {
        assert_eq!(origin_queue(Some("/queue/orders")), Some("orders"));
        assert_eq!(origin_queue(Some("/topic/prices")), None);
        assert_eq!(origin_queue(Some("/queue/")), None);
        assert_eq!(origin_queue(None), None);
    }
}
