//! One queue's runtime on this broker node: its local consumers, their credit (prefetch),
//! message-group ownership, exclusive consumers, and what is in flight to whom.
//!
//! The state sits behind a `std::sync::Mutex` because every critical section is short and
//! never awaits: placing claimed messages on consumers, marking acks, adding and removing
//! consumers. The dispatcher task (see [`run_dispatcher`]) is the only one that claims from
//! PostgreSQL for this queue on this node, so claims are never concurrent with each other here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use postbus_model::{DestinationKind, QueueSettings, StoredMessage};
use tokio::sync::{Notify, mpsc};

use crate::engine::Engine;
use crate::selecting::ConsumerSelector;

/// A consumer's id, unique within this broker process.
pub type ConsumerId = u64;

/// STOMP acknowledgement modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Acknowledged by the broker as soon as the MESSAGE frame is written.
    Auto,
    /// An ACK acknowledges that message and every earlier one delivered to the subscription.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

impl AckMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }

    /// The mode's name in the SUBSCRIBE `ack` header.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

/// A consumer as an operator sees it (admin API).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConsumerInfo {
    pub connection: u64,
    pub subscription: String,
    pub destination: String,
    pub ack: &'static str,
    pub selector: Option<String>,
    pub prefetch: u32,
    pub exclusive: bool,
    pub in_flight: usize,
}

/// A message handed to a session for writing.
pub struct Delivery {
    pub subscription: Arc<str>,
    pub consumer: ConsumerId,
    pub queue: Arc<QueueRuntime>,
    pub message: StoredMessage,
}

/// What a queue sends to a session.
pub enum SessionEvent {
    Deliver(Delivery),
}

/// What a session tells the queue about a new consumer.
pub struct ConsumerSpec {
    pub id: ConsumerId,
    /// The connection it belongs to, and its ack mode (what the admin API shows).
    pub connection: u64,
    pub ack: AckMode,
    pub subscription: Arc<str>,
    pub prefetch: u32,
    pub exclusive: bool,
    /// A JMS selector: the consumer gets only plain (ungrouped) messages that match, claimed for
    /// it alone; without one it shares everything else round-robin.
    pub selector: Option<Arc<ConsumerSelector>>,
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

/// A message in flight to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub id: i64,
    /// Deliveries before this one that ended without an ack.
    pub delivery_count: i32,
    pub group: Option<String>,
}

struct ConsumerSlot {
    spec: ConsumerSpec,
    /// Delivery order -> message; the order a cumulative ACK follows.
    in_flight: BTreeMap<u64, InFlight>,
    /// Message id -> delivery order.
    index: HashMap<i64, u64>,
    /// Messages with an ack, nack or transaction under way: not to be settled twice.
    settling: HashSet<i64>,
    next_seq: u64,
    /// Ids this consumer's selector rejected after the SQL narrowing let them through; excluded
    /// from its next claims (message properties never change).
    rejected: HashSet<i64>,
}

impl ConsumerSlot {
    /// Messages this consumer may still be sent. A message it has acknowledged (or acked in
    /// an open transaction) no longer counts while the ack commits: the client is done with
    /// it, and holding its slot until the commit would bound each consumer to `prefetch`
    /// messages per commit latency. Should the ack fail, the message counts again.
    fn credit(&self) -> usize {
        let unacked = self.in_flight.len().saturating_sub(self.settling.len());
        (self.spec.prefetch as usize).saturating_sub(unacked)
    }

    /// Records a message as in flight to this consumer and sends it to its session. A closed
    /// channel means the session is going away; the message stays in flight and is released
    /// when the session removes the consumer.
    fn hand_over(&mut self, queue: &Arc<QueueRuntime>, m: StoredMessage) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(
            seq,
            InFlight {
                id: m.id.0,
                delivery_count: m.delivery_count,
                group: m.group_id.clone(),
            },
        );
        self.index.insert(m.id.0, seq);
        let delivery = Delivery {
            subscription: self.spec.subscription.clone(),
            consumer: self.spec.id,
            queue: queue.clone(),
            message: m,
        };
        let _ = self.spec.events.send(SessionEvent::Deliver(delivery));
    }

    /// Credit this consumer offers to the shared (unselected) flow.
    fn plain_credit(&self) -> usize {
        if self.spec.selector.is_some() {
            0
        } else {
            self.credit()
        }
    }
}

/// Most rejected ids remembered per selective consumer; past it, the consumer's claims stop
/// (logged) rather than grow without bound. Only selectors whose SQL narrowing is partial
/// (arithmetic) get near it.
const MAX_REJECTED: usize = 10_000;

#[derive(Default)]
struct QueueState {
    consumers: Vec<ConsumerSlot>,
    /// Round-robin position among consumers.
    next: usize,
    /// Group id -> (owning consumer, messages of the group in flight to it).
    groups: HashMap<String, (ConsumerId, u32)>,
    /// Claimed by this node but not yet placed on a consumer, in claim order: claimed from the
    /// table for credit, or fresh messages inserted pre-claimed into the dispatch buffer.
    pending: VecDeque<StoredMessage>,
    /// Body bytes of `pending`.
    pending_bytes: usize,
    /// Releases under way: while any is, nothing is claimed, so a released message cannot be
    /// overtaken by a later one of its group.
    releasing: u32,
    /// Counts releases started; a claim that ran while one started may hold messages that
    /// must not overtake the released ones, so it gives them back (see `take_claimed`).
    release_epoch: u64,
    /// Messages still settling (an ack or rollback under way) whose consumer is gone, with
    /// their group: the group stays with nobody until they settle.
    orphans: HashMap<i64, Option<String>>,
    /// Room promised to messages being inserted pre-claimed (dispatched from memory once
    /// their batch commits), and their body bytes.
    reserved: usize,
    reserved_bytes: usize,
    /// True when the last claim found no more deliverable messages outside groups in the
    /// table: only then may fresh messages skip the table, or they would overtake a backlog.
    drained: bool,
    /// Bumped whenever messages may have reached the table unclaimed; a claim that started
    /// before a bump cannot prove the table drained.
    backlog_epoch: u64,
    /// Grouped messages may be waiting in the table (cleared when a grouped claim drains it).
    grouped_waiting: bool,
    closed: bool,
}

impl QueueState {
    fn push_pending(&mut self, m: StoredMessage) {
        self.pending_bytes += m.body.len();
        self.pending.push_back(m);
    }

    fn take_pending(&mut self) -> VecDeque<StoredMessage> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Messages held here beyond what consumers took: pending, and promised to fresh inserts.
    fn held(&self) -> (usize, usize) {
        (
            self.pending.len() + self.reserved,
            self.pending_bytes + self.reserved_bytes,
        )
    }

    /// Credit the plain (unselected) flow offers.
    fn plain_credit(&self) -> usize {
        self.consumers.iter().map(|c| c.plain_credit()).sum()
    }
}

/// How much a queue may hold in memory beyond its consumers' credit: fresh messages inserted
/// pre-claimed while the consumers are busy, handed to them as they ack. Past it, fresh
/// messages go to the table unclaimed and the queue serves its backlog from there.
#[derive(Debug, Clone, Copy)]
pub struct DispatchBuffer {
    pub messages: usize,
    pub bytes: usize,
}

/// Why an ACK or NACK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error(
        "message {0} is not in flight to this subscription (already acknowledged, or never delivered here)"
    )]
    NotInFlight(String),
    #[error("message {0} is already being acknowledged or is part of an open transaction")]
    AlreadySettling(String),
}

/// One queue on this node.
pub struct QueueRuntime {
    pub id: i32,
    /// Queue, temporary queue or subscription.
    pub kind: DestinationKind,
    pub name: String,
    /// Its settings; an operator's change (admin API) replaces them while it runs.
    settings: std::sync::RwLock<Arc<QueueSettings>>,
    /// This destination's metric counters.
    pub counters: crate::metrics::DestinationCounters,
    buffer: DispatchBuffer,
    state: Mutex<QueueState>,
    wake: Notify,
    /// Producers held back while the dispatch buffer is full (see [`QueueRuntime::is_full`]).
    room: Notify,
}

/// How a settlement ended.
pub enum Settled {
    /// Acked or released for good: the messages leave the consumer.
    Done,
    /// The ack did not commit: the messages stay in flight and may be acked again.
    Failed,
}

impl QueueRuntime {
    pub fn new(
        id: i32,
        kind: DestinationKind,
        name: String,
        settings: QueueSettings,
        buffer: DispatchBuffer,
        counters: crate::metrics::DestinationCounters,
    ) -> Self {
        QueueRuntime {
            id,
            kind,
            name,
            settings: std::sync::RwLock::new(Arc::new(settings)),
            counters,
            buffer,
            state: Mutex::new(QueueState {
                grouped_waiting: true,
                ..QueueState::default()
            }),
            wake: Notify::new(),
            room: Notify::new(),
        }
    }

    /// True while this queue's producers should be held back (producer flow control): the
    /// queue dispatches from memory and its dispatch buffer is full, so its consumers are
    /// behind; more fresh messages would spill into the table, and each would then cost a
    /// claim UPDATE. A queue serving a backlog from the table, or without consumers, never
    /// holds producers back. (Holding them while a backlog drained was tried: it stalled
    /// producers for up to a poll interval whenever a claim could not prove the table empty,
    /// and tail latency at 5,000 msgs/s went from 1.7 to 7 ms at p50.)
    pub fn is_full(&self) -> bool {
        let st = self.lock();
        if !st.drained || st.closed || st.consumers.is_empty() || self.is_exclusive(&st) {
            return false;
        }
        let (count, bytes) = st.held();
        count >= st.plain_credit() + self.buffer.messages || bytes >= self.buffer.bytes
    }

    /// Room again (see [`QueueRuntime::is_full`]): the buffer is below half, or the queue no
    /// longer dispatches from memory.
    pub fn has_room(&self) -> bool {
        let st = self.lock();
        self.has_room_locked(&st)
    }

    fn has_room_locked(&self, st: &QueueState) -> bool {
        if !st.drained || st.closed || st.consumers.is_empty() || self.is_exclusive(st) {
            return true;
        }
        let (count, bytes) = st.held();
        count < st.plain_credit() + self.buffer.messages / 2 && bytes < self.buffer.bytes / 2
    }

    /// Wakes held producers if there is room (called after anything that frees some).
    fn notify_room(&self, st: &QueueState) {
        if self.has_room_locked(st) {
            self.room.notify_waiters();
        }
    }

    /// Waits until the buffer has room or `deadline` passes.
    pub async fn wait_for_room(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// The consumers attached on this broker, as the admin API shows them; `destination` is
    /// this queue's STOMP name.
    pub fn consumers(&self, destination: &str) -> Vec<ConsumerInfo> {
        self.lock()
            .consumers
            .iter()
            .map(|c| ConsumerInfo {
                connection: c.spec.connection,
                subscription: c.spec.subscription.to_string(),
                destination: destination.to_owned(),
                ack: c.spec.ack.as_str(),
                selector: c.spec.selector.as_ref().map(|s| s.text.clone()),
                prefetch: c.spec.prefetch,
                exclusive: c.spec.exclusive,
                in_flight: c.in_flight.len(),
            })
            .collect()
    }

    /// Consumers attached on this broker.
    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock is a bug; the state is still consistent enough to
        // keep serving other consumers, so recover the guard rather than poisoning the queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the dispatcher to look for messages now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn add_consumer(&self, spec: ConsumerSpec) {
        let mut st = self.lock();
        st.consumers.push(ConsumerSlot {
            spec,
            in_flight: BTreeMap::new(),
            index: HashMap::new(),
            settling: HashSet::new(),
            next_seq: 0,
            rejected: HashSet::new(),
        });
        drop(st);
        self.wake();
    }

    /// Removes a consumer. Returns what must be given back for redelivery: the messages in
    /// flight to it that no ack or transaction is settling, and every claimed message not yet
    /// placed (they are re-claimed in order once the releases commit). The caller must release
    /// them and then call [`QueueRuntime::release_done`].
    pub fn remove_consumer(&self, id: ConsumerId) -> (Vec<InFlight>, Vec<i64>) {
        let mut st = self.lock();
        let Some(pos) = st.consumers.iter().position(|c| c.spec.id == id) else {
            return (vec![], vec![]);
        };
        let slot = st.consumers.remove(pos);
        let (returned, settling): (Vec<InFlight>, Vec<InFlight>) = slot
            .in_flight
            .into_values()
            .partition(|f| !slot.settling.contains(&f.id));
        for f in settling {
            st.orphans.insert(f.id, f.group);
        }
        for f in &returned {
            if let Some(g) = &f.group {
                dec_group(&mut st.groups, g);
            }
        }
        // Groups owned by the consumer with settling messages keep their owner id until those
        // settle; assignments with no messages left are dropped.
        st.groups.retain(|_, (owner, n)| *owner != id || *n > 0);
        let pending: Vec<i64> = st.take_pending().into_iter().map(|m| m.id.0).collect();
        // A claim running now must not keep what it gets for consumers that may be gone.
        st.release_epoch += 1;
        if !returned.is_empty() || !pending.is_empty() {
            st.releasing += 1;
        }
        self.notify_room(&st);
        (returned, pending)
    }

    /// Nothing of a departed consumer is still settling or being released.
    pub fn settled(&self) -> bool {
        let st = self.lock();
        st.orphans.is_empty() && st.releasing == 0
    }

    /// A NACK or rollback is about to release messages: pause claims until it commits.
    pub fn begin_release(&self) {
        let mut st = self.lock();
        st.releasing += 1;
        st.release_epoch += 1;
    }

    /// A release started by [`QueueRuntime::remove_consumer`] or a NACK has committed (or failed).
    pub fn release_done(&self) {
        let mut st = self.lock();
        st.releasing = st.releasing.saturating_sub(1);
        st.drained = false;
        st.grouped_waiting = true;
        st.backlog_epoch += 1;
        drop(st);
        self.wake();
    }

    /// Marks the messages an ACK (or NACK) of `ack_id` covers as settling and returns them.
    /// `cumulative`: that message and every earlier one delivered to the consumer.
    pub fn begin_settle(
        &self,
        consumer: ConsumerId,
        ack_id: i64,
        cumulative: bool,
    ) -> Result<Vec<InFlight>, SettleError> {
        let mut st = self.lock();
        let slot = st
            .consumers
            .iter_mut()
            .find(|c| c.spec.id == consumer)
            .ok_or_else(|| SettleError::NotInFlight(format!("ID:{ack_id}")))?;
        let seq = *slot
            .index
            .get(&ack_id)
            .ok_or_else(|| SettleError::NotInFlight(format!("ID:{ack_id}")))?;
        if slot.settling.contains(&ack_id) {
            return Err(SettleError::AlreadySettling(format!("ID:{ack_id}")));
        }
        let covered: Vec<InFlight> = if cumulative {
            slot.in_flight
                .range(..=seq)
                .map(|(_, f)| f.clone())
                .filter(|f| !slot.settling.contains(&f.id))
                .collect()
        } else {
            vec![slot.in_flight[&seq].clone()]
        };
        for f in &covered {
            slot.settling.insert(f.id);
        }
        drop(st);
        // Settling messages free the consumer's credit (see `ConsumerSlot::credit`).
        self.wake.notify_one();
        Ok(covered)
    }

    /// Ends a settlement begun with [`QueueRuntime::begin_settle`] (or a delivery that an auto
    /// ack covers).
    pub fn finish_settle(&self, consumer: ConsumerId, ids: &[i64], how: Settled) {
        let mut st = self.lock();
        let st = &mut *st;
        match how {
            Settled::Failed => {
                if let Some(slot) = st.consumers.iter_mut().find(|c| c.spec.id == consumer) {
                    for id in ids {
                        slot.settling.remove(id);
                    }
                } else {
                    // The consumer is gone and the ack failed: the messages stay held by this
                    // node until they are released (or recovered after a restart).
                    for id in ids {
                        if let Some(Some(g)) = st.orphans.remove(id) {
                            dec_group(&mut st.groups, &g);
                        }
                    }
                }
            }
            Settled::Done => {
                let mut groups_done = Vec::new();
                if let Some(slot) = st.consumers.iter_mut().find(|c| c.spec.id == consumer) {
                    for id in ids {
                        slot.settling.remove(id);
                        if let Some(seq) = slot.index.remove(id)
                            && let Some(f) = slot.in_flight.remove(&seq)
                            && let Some(g) = f.group
                        {
                            groups_done.push(g);
                        }
                    }
                } else {
                    // The consumer is gone; its settling messages still count in their groups.
                    groups_done.extend(ids.iter().filter_map(|id| st.orphans.remove(id).flatten()));
                }
                for g in groups_done {
                    dec_group(&mut st.groups, &g);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Places pending messages and returns how many more this node may claim now, the
    /// release epoch the claim starts in, and whether the queue is served exclusively.
    fn place_pending_and_credit(self: &Arc<Self>, claim_batch: usize) -> (usize, u64, bool) {
        let mut st = self.lock();
        let epoch = st.release_epoch;
        let exclusive = self.is_exclusive(&st);
        if st.closed || st.releasing > 0 || st.consumers.is_empty() {
            return (0, epoch, exclusive);
        }
        let pending = st.take_pending();
        let mut blocked_groups: HashSet<String> = HashSet::new();
        let mut exclusive_blocked = false;
        for m in pending {
            let blocked = exclusive_blocked
                || m.group_id
                    .as_ref()
                    .is_some_and(|g| blocked_groups.contains(g));
            if blocked {
                st.push_pending(m);
                continue;
            }
            if let Some(m) = self.place(&mut st, m) {
                if let Some(g) = &m.group_id {
                    blocked_groups.insert(g.clone());
                } else if self.is_exclusive(&st) {
                    exclusive_blocked = true;
                }
                st.push_pending(m);
            }
        }
        self.notify_room(&st);
        let exclusive = self.is_exclusive(&st);
        let (credit, takers) = if exclusive {
            (st.consumers.first().map(|c| c.credit()).unwrap_or(0), true)
        } else {
            let plain = st.consumers.iter().any(|c| c.spec.selector.is_none());
            (st.plain_credit(), plain)
        };
        // Claim for the consumers' credit and, when some consumer takes plain messages, for
        // the dispatch buffer too: bigger claims, and a small backlog is drained in one claim,
        // after which fresh messages are dispatched from memory again.
        let (held, held_bytes) = st.held();
        let room = if takers && held_bytes < self.buffer.bytes {
            (credit + self.buffer.messages).saturating_sub(held)
        } else {
            credit.saturating_sub(held)
        };
        (room.min(claim_batch), epoch, exclusive)
    }

    /// Reserves room for fresh messages (not grouped, not delayed) that a batch is about to
    /// insert, given their body sizes in order: those granted (a prefix) are claimed in the
    /// insert and handed to consumers from memory, within the consumers' credit plus the
    /// dispatch buffer. Only when the queue has no backlog, nothing being released, and is not
    /// exclusive; whatever is not granted goes to the table, and then the queue has a backlog.
    pub fn reserve_fresh(&self, sizes: &[usize]) -> usize {
        let mut st = self.lock();
        let open = !st.closed
            && st.drained
            && st.releasing == 0
            && !st.consumers.is_empty()
            && !self.is_exclusive(&st);
        let (mut count, mut bytes) = st.held();
        let credit = st.plain_credit();
        let mut granted = 0;
        let mut granted_bytes = 0;
        if open {
            for &size in sizes {
                let for_credit = count < credit;
                let for_buffer =
                    count < credit + self.buffer.messages && bytes + size <= self.buffer.bytes;
                if !(for_credit || for_buffer) {
                    break;
                }
                count += 1;
                bytes += size;
                granted += 1;
                granted_bytes += size;
            }
        }
        st.reserved += granted;
        st.reserved_bytes += granted_bytes;
        if granted < sizes.len() {
            st.drained = false;
            st.backlog_epoch += 1;
            self.notify_room(&st);
        }
        granted
    }

    /// Gives back room reserved for fresh messages that were not inserted.
    pub fn unreserve(&self, n: usize, bytes: usize) {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(n);
        st.reserved_bytes = st.reserved_bytes.saturating_sub(bytes);
        self.notify_room(&st);
    }

    /// Fresh messages committed pre-claimed: they join the pending list for placement. When no
    /// consumer is left they are returned, to be given back (a release is then counted as under
    /// way; call [`QueueRuntime::release_done`] after giving them back).
    pub fn accept_fresh(self: &Arc<Self>, messages: Vec<StoredMessage>) -> Vec<StoredMessage> {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(messages.len());
        let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
        st.reserved_bytes = st.reserved_bytes.saturating_sub(bytes);
        if st.consumers.is_empty() || st.closed {
            st.releasing += 1;
            st.release_epoch += 1;
            return messages;
        }
        // Place at once, behind anything already pending (which keeps its order).
        for m in messages {
            if !st.pending.is_empty() || st.releasing > 0 {
                st.push_pending(m);
            } else if let Some(m) = self.place(&mut st, m) {
                st.push_pending(m);
            }
        }
        drop(st);
        self.wake();
        Vec::new()
    }

    /// The last claim found the table drained of plain messages: fresh ones may now skip it,
    /// unless a release started, or messages reached the table, since the claim began.
    fn set_drained(&self, epoch: u64, backlog_epoch: u64) {
        let mut st = self.lock();
        if st.release_epoch == epoch && st.backlog_epoch == backlog_epoch && st.releasing == 0 {
            st.drained = true;
            self.notify_room(&st);
        }
    }

    /// Messages may be waiting in the table (another broker or a release put them there):
    /// fresh messages go through the table until a claim drains it.
    pub fn mark_backlog(&self) {
        let mut st = self.lock();
        st.drained = false;
        st.grouped_waiting = true;
        st.backlog_epoch += 1;
        self.notify_room(&st);
    }

    /// Grouped messages were written to the table (they are never dispatched from memory).
    pub fn mark_grouped(&self) {
        let mut st = self.lock();
        st.grouped_waiting = true;
        st.backlog_epoch += 1;
    }

    /// A grouped claim found no more to take, and nothing was written since it began.
    fn set_grouped_drained(&self, backlog_epoch: u64) {
        let mut st = self.lock();
        if st.backlog_epoch == backlog_epoch {
            st.grouped_waiting = false;
        }
    }

    /// Whether plain and grouped messages may be waiting in the table.
    fn backlogs(&self) -> (bool, bool) {
        let st = self.lock();
        (!st.drained, st.grouped_waiting)
    }

    /// The backlog epoch a claim starts in (see [`QueueRuntime::set_drained`]).
    fn backlog_epoch(&self) -> u64 {
        self.lock().backlog_epoch
    }

    /// The selective consumers that can take messages now: (consumer, selector, credit, the
    /// ids its selector rejected so far). None while a release is under way.
    fn selector_targets(&self) -> Vec<(ConsumerId, Arc<ConsumerSelector>, usize, Vec<i64>)> {
        let st = self.lock();
        if st.closed || st.releasing > 0 {
            return vec![];
        }
        st.consumers
            .iter()
            .filter_map(|c| {
                let sel = c.spec.selector.clone()?;
                let credit = c.credit();
                (credit > 0 && c.rejected.len() < MAX_REJECTED)
                    .then(|| (c.spec.id, sel, credit, c.rejected.iter().copied().collect()))
            })
            .collect()
    }

    /// Remembers ids a consumer's selector rejected.
    fn reject(&self, consumer: ConsumerId, ids: &[i64]) {
        let mut st = self.lock();
        if let Some(c) = st.consumers.iter_mut().find(|c| c.spec.id == consumer) {
            c.rejected.extend(ids);
            if c.rejected.len() >= MAX_REJECTED {
                tracing::warn!(queue = %self.name, consumer, "a selective consumer rejected {MAX_REJECTED} claimed messages; its claims stop until it resubscribes (its selector cannot be narrowed in SQL)");
            }
        }
    }

    /// Delivers messages claimed for one selective consumer; returns those to give back (the
    /// consumer left, a release started meanwhile, or its credit shrank).
    fn deliver_selected(
        self: &Arc<Self>,
        consumer: ConsumerId,
        messages: Vec<StoredMessage>,
        epoch: u64,
    ) -> Vec<StoredMessage> {
        let mut st = self.lock();
        let Some(i) = st.consumers.iter().position(|c| c.spec.id == consumer) else {
            return messages;
        };
        if st.release_epoch != epoch {
            return messages;
        }
        let mut back = Vec::new();
        for m in messages {
            let slot = &mut st.consumers[i];
            if slot.credit() == 0 {
                back.push(m);
                continue;
            }
            slot.hand_over(self, m);
        }
        back
    }

    fn release_epoch(&self) -> u64 {
        self.lock().release_epoch
    }

    /// The row that sends `message` to this queue (addressed as `destination`), with the
    /// dedup window and message auditing of the settings in force (read once).
    pub fn insert_row(
        &self,
        message: postbus_model::NewMessage,
        destination: &postbus_model::Destination,
    ) -> postbus_store::InsertRow {
        let settings = self.settings();
        postbus_store::InsertRow {
            queue_id: self.id,
            dedup_window_ms: settings.dedup_window_ms,
            message,
            pre_claimed: false,
            topic: None,
            audited: settings.audit_messages.then(|| destination.to_stomp()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<QueueSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts changed settings in force (an operator's update, heard from any broker).
    pub fn replace_settings(&self, settings: QueueSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// No consumers, nothing claimed and nothing being released: leases can go.
    fn is_idle(&self) -> bool {
        let st = self.lock();
        st.consumers.is_empty() && st.pending.is_empty() && st.releasing == 0
    }

    fn is_exclusive(&self, st: &QueueState) -> bool {
        self.settings().exclusive || st.consumers.first().is_some_and(|c| c.spec.exclusive)
    }

    /// Puts one claimed message on a consumer; hands it back when none can take it now.
    fn place(self: &Arc<Self>, st: &mut QueueState, m: StoredMessage) -> Option<StoredMessage> {
        let target = if self.is_exclusive(st) {
            // The first consumer is the active one; the others wait for it to go.
            if st.consumers.first().is_some_and(|c| c.credit() > 0) {
                Some(0)
            } else {
                None
            }
        } else if let Some(owner) = m
            .group_id
            .as_ref()
            .and_then(|g| st.groups.get(g))
            .map(|(c, _)| *c)
        {
            st.consumers
                .iter()
                .position(|c| c.spec.id == owner && c.credit() > 0)
        } else {
            let n = st.consumers.len();
            let start = st.next;
            let found = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| st.consumers[i].plain_credit() > 0);
            if let Some(i) = found {
                st.next = (i + 1) % n;
            }
            found
        };
        let Some(i) = target else { return Some(m) };
        if let Some(g) = &m.group_id {
            let id = st.consumers[i].spec.id;
            st.groups.entry(g.clone()).or_insert((id, 0)).1 += 1;
        }
        st.consumers[i].hand_over(self, m);
        None
    }

    /// Keeps claimed messages for placement. If a release started while the claim ran, they
    /// could overtake the released messages (a later message of a group whose earlier one
    /// just went back), and if no consumer is left they would be held by nobody: then they are
    /// handed back to be released too, with the release counted as under way.
    fn take_claimed(
        self: &Arc<Self>,
        messages: Vec<StoredMessage>,
        epoch: u64,
    ) -> Vec<StoredMessage> {
        let mut st = self.lock();
        let nobody = st.consumers.is_empty();
        if (st.release_epoch != epoch || nobody) && !messages.is_empty() {
            st.releasing += 1;
            st.release_epoch += 1;
            return messages;
        }
        for m in messages {
            st.push_pending(m);
        }
        Vec::new()
    }

    /// Stops the dispatcher (the queue was deleted or the broker is shutting down).
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
        self.wake();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

fn dec_group(groups: &mut HashMap<String, (ConsumerId, u32)>, g: &str) {
    if let Some(entry) = groups.get_mut(g) {
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            groups.remove(g);
        }
    }
}

/// Dispatch leases this node holds on a queue (see `postbus.queue_leases`).
#[derive(Default)]
struct Leases {
    groups: bool,
    exclusive: bool,
    last_try: Option<std::time::Instant>,
}

/// The dispatcher: claims deliverable messages from PostgreSQL as consumers have credit, and
/// places them. Woken by commits on this node, by acks, and by a poll for what other brokers
/// and SQL callers wrote.
///
/// Grouped messages are claimed only while this node holds the queue's 'groups' lease, and an
/// exclusive queue is served only while it holds the 'exclusive' lease: one broker at a time,
/// so group order and exclusivity hold across brokers. Leases are given up when the queue has
/// no consumers here any more.
pub async fn run_dispatcher(engine: Engine, queue: Arc<QueueRuntime>) {
    let poll = Duration::from_millis(engine.config().poll_interval_ms.max(10));
    // A fixed tick, not a sleep restarted on every wake-up: a busy queue still polls.
    let mut poll_tick = tokio::time::interval(poll);
    poll_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = engine.config().claim_batch.max(1) as usize;
    let mut backoff = Duration::from_millis(50);
    let mut leases = Leases::default();
    let mut grouped_first = false;
    loop {
        let closed = queue.is_closed();
        if (closed || queue.is_idle()) && (leases.groups || leases.exclusive) {
            match engine.store().release_leases(engine.node(), queue.id).await {
                Ok(()) => leases = Leases::default(),
                Err(e) => {
                    tracing::warn!(queue = %queue.name, error = %e, "releasing dispatch leases failed")
                }
            }
        }
        if closed {
            return;
        }
        loop {
            let (want, epoch, exclusive) = queue.place_pending_and_credit(batch);
            if want == 0 {
                break;
            }
            let needed = if exclusive {
                leases.exclusive
            } else {
                leases.groups
            };
            if !needed && leases.last_try.is_none_or(|t| t.elapsed() >= poll) {
                leases.last_try = Some(std::time::Instant::now());
                let kind = if exclusive { "exclusive" } else { "groups" };
                match engine
                    .store()
                    .acquire_lease(engine.node(), queue.id, kind)
                    .await
                {
                    Ok(held) if exclusive => leases.exclusive = held,
                    Ok(held) => leases.groups = held,
                    Err(e) => {
                        tracing::warn!(queue = %queue.name, error = %e, "taking a dispatch lease failed")
                    }
                }
            }
            if exclusive && !leases.exclusive {
                // Another broker serves this exclusive queue.
                break;
            }
            let backlog_epoch = queue.backlog_epoch();
            let may_group = leases.groups || leases.exclusive;
            // Claim only what may be in the table: a queue dispatching fresh messages from
            // memory has no plain backlog, and grouped messages are looked for when some
            // were written (or a poll or wake-up says they may have been).
            let (plain_backlog, grouped_backlog) = queue.backlogs();
            let mut kinds: Vec<bool> = Vec::with_capacity(2);
            if plain_backlog {
                kinds.push(false);
            }
            if may_group && grouped_backlog {
                kinds.insert(if grouped_first { 0 } else { kinds.len() }, true);
            }
            grouped_first = !grouped_first;
            let mut claimed = Vec::new();
            let mut failed = None;
            let mut plain_drained = false;
            let mut grouped_drained = false;
            for grouped in kinds {
                let room = want - claimed.len();
                if room == 0 {
                    break;
                }
                let started = std::time::Instant::now();
                let result = engine
                    .store()
                    .claim(engine.node(), queue.id, room as i64, grouped)
                    .await;
                let metrics = engine.metrics();
                match &result {
                    Ok(_) => metrics
                        .db_query
                        .with_label_values(&["claim"])
                        .observe(started.elapsed().as_secs_f64()),
                    Err(_) => metrics.db_errors.with_label_values(&["claim"]).inc(),
                }
                match result {
                    Ok(m) => {
                        if m.len() < room {
                            if grouped {
                                grouped_drained = true;
                            } else {
                                plain_drained = true;
                            }
                        }
                        claimed.extend(m)
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let got = claimed.len();
            let (deliverable, dead) = engine.split_dead_letters(&queue, claimed);
            if !dead.is_empty() {
                engine.dead_letter(&queue, dead).await;
            }
            let give_back = queue.take_claimed(deliverable, epoch);
            if !give_back.is_empty() {
                engine.give_back(&queue, give_back).await;
                queue.release_done();
                continue;
            }
            if let Some(e) = failed {
                tracing::warn!(queue = %queue.name, error = %e, "claim failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                break;
            }
            backoff = Duration::from_millis(50);
            if plain_drained {
                queue.set_drained(epoch, backlog_epoch);
            }
            if grouped_drained {
                queue.set_grouped_drained(backlog_epoch);
            }
            if got < want {
                // Drained: one more placement round, then wait for news.
                queue.place_pending_and_credit(batch);
                break;
            }
        }
        serve_selective_consumers(&engine, &queue).await;
        tokio::select! {
            _ = queue.wake.notified() => {}
            // Other brokers or SQL callers may have written without a (throttled) NOTIFY
            // reaching us. Look before giving up dispatching from memory: marking a backlog
            // blindly would send fresh messages through the table until consumers had credit
            // for a claim to prove it drained again.
            _ = poll_tick.tick() => {
                queue.mark_grouped();
                let (epoch, backlog_epoch) = (queue.release_epoch(), queue.backlog_epoch());
                if queue.is_idle() {
                    // Nobody to dispatch to: the next consumer's first claim finds out.
                    queue.mark_backlog();
                    continue;
                }
                match engine.store().has_ready(queue.id).await {
                    Ok(false) => queue.set_drained(epoch, backlog_epoch),
                    Ok(true) => queue.mark_backlog(),
                    Err(e) => {
                        tracing::warn!(queue = %queue.name, error = %e, "checking for waiting messages failed");
                        queue.mark_backlog();
                    }
                }
            }
        }
    }
}

/// Claims for each selective consumer with credit: PostgreSQL narrows with the selector's SQL,
/// the evaluator decides exactly; what it rejects goes back and is not claimed for that
/// consumer again.
async fn serve_selective_consumers(engine: &Engine, queue: &Arc<QueueRuntime>) {
    for (consumer, selector, credit, rejected) in queue.selector_targets() {
        let epoch = queue.release_epoch();
        let claimed = match engine
            .store()
            .claim_selected(
                engine.node(),
                queue.id,
                credit as i64,
                &selector.filter,
                &rejected,
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(queue = %queue.name, consumer, error = %e, "selective claim failed");
                continue;
            }
        };
        if claimed.is_empty() {
            continue;
        }
        let (deliverable, dead) = engine.split_dead_letters(queue, claimed);
        if !dead.is_empty() {
            engine.dead_letter(queue, dead).await;
        }
        let (hits, misses): (Vec<StoredMessage>, Vec<StoredMessage>) =
            deliverable.into_iter().partition(|m| selector.matches(m));
        tracing::debug!(queue = %queue.name, consumer, hits = hits.len(), misses = misses.len(), "selective claim");
        if !misses.is_empty() {
            queue.reject(consumer, &misses.iter().map(|m| m.id.0).collect::<Vec<_>>());
        }
        let mut back = queue.deliver_selected(consumer, hits, epoch);
        back.extend(misses);
        if !back.is_empty() {
            engine.give_back(queue, back).await;
            // What went back may suit another consumer.
            queue.wake();
        }
    }
}
