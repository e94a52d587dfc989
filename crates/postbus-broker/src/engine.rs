//! The engine: what every session shares. It owns the store handle, this node's lease, the
//! group-commit writers, the queue runtimes and the background jobs (scheduler, expiry sweep,
//! lease renewal, recovery of dead nodes' messages).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postbus_model::{Destination, DestinationKind, QueueSettings, StoredMessage};
use postbus_store::{
    AuditRecord, DestinationRow, InsertOutcome, NodeId, ReleaseRow, Store, StoreError,
    SubscriptionSpec, Unit, UnitOutcome,
};
use tokio::sync::oneshot;

use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::queue::{QueueRuntime, run_dispatcher};
use crate::security::Security;
use crate::writer::{CommitObserver, WriteError, WriterLimits, Writers};

/// Errors the engine reports to sessions and the admin surface.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "queue {0} does not exist and auto-creation is off: create it with `postbus queue create {0}`"
    )]
    NoSuchQueue(String),
    #[error("{0}")]
    BadDestination(#[from] postbus_model::DestinationError),
    #[error(
        "topic {0} does not exist and auto-creation is off: create it with `postbus queue create --topic {0}`"
    )]
    NoSuchTopic(String),
    #[error("{0}")]
    Subscription(String),
    #[error("{0}")]
    TempQueue(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// Where messages of temporary queues go after too many deliveries.
const TEMP_QUEUE_DLQ: &str = "DLQ.temp-queues";

struct Inner {
    config: BrokerConfig,
    security: Arc<Security>,
    store: Store,
    node: NodeId,
    node_name: String,
    writers: Writers,
    queues: Mutex<Queues>,
    /// Topic destination rows by name (their ids scope dedup ids; their settings are their
    /// subscriptions').
    topics: Mutex<HashMap<String, DestinationRow>>,
    /// Subscription id -> consumers on it on this node. Joining and leaving subscriptions go
    /// through this lock one at a time, so a consumer joining as the last one leaves never
    /// ends up on a subscription that the leaving one removes.
    subscribers: tokio::sync::Mutex<HashMap<i32, usize>>,
    next_id: AtomicU64,
    clients: Mutex<Clients>,
    /// Receivers outside sessions (HTTP long polls) waiting for messages, by queue id.
    receivers: Mutex<HashMap<i32, Arc<tokio::sync::Notify>>>,
    /// Topics whose SQL publications are being copied now, and whether another wake-up came
    /// meanwhile (then the copy runs again).
    fanning_out: Mutex<HashMap<i32, bool>>,
    /// This broker's STOMP connections (what the admin API lists and closes).
    connections: Mutex<Connections>,
    /// Handshakes in progress ([`BrokerConfig::max_concurrent_handshakes`]).
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Audit records on their way to the chain (written in batches by a background task).
    audit: Arc<AuditQueue>,
    /// Set by [`Engine::shutdown`]: background jobs stop (a deregistered node must not take
    /// its own missing row for a verdict of its peers).
    stopped: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    /// Traces, when an OTLP endpoint is configured.
    otel: Option<Arc<Otel>>,
}

/// A STOMP connection as an operator sees it (admin API).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: String,
    pub principal: String,
    pub client_id: Option<String>,
    pub version: &'static str,
    /// Epoch ms.
    pub connected_at: i64,
    /// Filled in when listed: its consumers and the messages in flight to them.
    pub subscriptions: usize,
    pub in_flight: usize,
}

/// The registered connections, and how many each principal has (checked on every CONNECT, so
/// counted as they come and go rather than by a scan).
#[derive(Default)]
struct Connections {
    by_id: HashMap<u64, ConnectionEntry>,
    per_principal: HashMap<String, usize>,
}

struct ConnectionEntry {
    info: ConnectionInfo,
    /// Told when an operator closes the connection.
    close: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Clients {
    /// Client ids with a live connection: client id -> (connection id, kick signal).
    live: HashMap<String, (u64, Arc<tokio::sync::Notify>)>,
    /// Connections told to close because a newer one took their client id.
    ending: std::collections::HashSet<u64>,
}

#[derive(Default)]
struct Queues {
    by_name: HashMap<String, Arc<QueueRuntime>>,
    /// Temporary queues by their global name.
    temp_by_name: HashMap<String, Arc<QueueRuntime>>,
    by_id: HashMap<i32, Arc<QueueRuntime>>,
    /// Queues whose dispatcher task runs.
    dispatching: std::collections::HashSet<i32>,
}

/// The shared broker engine (cheap to clone).
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

struct WakeOnCommit(Weak<Inner>);

impl CommitObserver for WakeOnCommit {
    fn reserve(&self, queue_id: i32, sizes: &[usize]) -> usize {
        let Some(inner) = self.0.upgrade() else {
            return 0;
        };
        let queue = inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(&queue_id)
            .cloned();
        queue.map(|q| q.reserve_fresh(sizes)).unwrap_or(0)
    }

    fn committed(&self, units: &[Unit], outcomes: &[UnitOutcome], elapsed: Duration) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let engine = Engine(inner);
        let m = engine.metrics().clone();
        m.batch_units.observe(units.len() as f64);
        m.db_query
            .with_label_values(&["batch"])
            .observe(elapsed.as_secs_f64());
        for (unit, outcome) in units.iter().zip(outcomes) {
            let UnitOutcome::Committed { inserted, .. } = outcome else {
                continue;
            };
            for (row, result) in unit.inserts.iter().zip(inserted) {
                let runtime = match &row.topic {
                    Some(_) => None,
                    None => engine.lock_queues().by_id.get(&row.queue_id).cloned(),
                };
                match (result, runtime) {
                    (InsertOutcome::Stored(_), Some(q)) => q.counters.enqueued.inc(),
                    (InsertOutcome::Stored(_), None) => {
                        let label = match &row.topic {
                            Some(t) => m.label(&format!("/topic/{t}")),
                            None => engine.metric_label(row.queue_id),
                        };
                        m.enqueued.with_label_values(&[label.as_str()]).inc()
                    }
                    (InsertOutcome::Duplicate(_), _) => {
                        let label = match &row.topic {
                            Some(t) => m.label(&format!("/topic/{t}")),
                            None => engine.metric_label(row.queue_id),
                        };
                        m.deduplicated.with_label_values(&[label.as_str()]).inc()
                    }
                }
            }
        }
        // Fresh messages claimed in the insert go to their consumers from memory.
        let mut fresh: HashMap<i32, Vec<StoredMessage>> = HashMap::new();
        // Queue -> (messages, body bytes) reserved for inserts that stored nothing.
        let mut unreserve: HashMap<i32, (usize, usize)> = HashMap::new();
        // Queues that got plain messages in the table: fresh ones must not overtake them.
        let mut backlog: std::collections::HashSet<i32> = Default::default();
        // Queues that got grouped messages (always written to the table).
        let mut grouped: std::collections::HashSet<i32> = Default::default();
        for (unit, outcome) in units.iter().zip(outcomes) {
            let inserted = match outcome {
                UnitOutcome::Committed { inserted, .. } => Some(inserted),
                _ => None,
            };
            for (k, row) in unit.inserts.iter().enumerate() {
                if !row.pre_claimed {
                    if row.message.group_id.is_none() {
                        backlog.insert(row.queue_id);
                    } else {
                        grouped.insert(row.queue_id);
                    }
                    continue;
                }
                match inserted.and_then(|i| i.get(k)) {
                    Some(InsertOutcome::Stored(id)) => {
                        fresh.entry(row.queue_id).or_default().push(fresh_message(
                            *id,
                            row.queue_id,
                            &row.message,
                        ));
                    }
                    _ => {
                        let e = unreserve.entry(row.queue_id).or_default();
                        e.0 += 1;
                        e.1 += row.message.body.len();
                    }
                }
            }
        }
        let mut touched: Vec<i32> = units
            .iter()
            .flat_map(|u| u.inserts.iter().map(|r| r.queue_id))
            .collect();
        // Dead-letter moves that committed go to the audit log.
        for (unit, outcome) in units.iter().zip(outcomes) {
            let UnitOutcome::Committed { lost_releases, .. } = outcome else {
                continue;
            };
            for r in unit.releases.iter().filter(|r| r.dead_letter.is_some()) {
                if lost_releases.contains(&r.id) {
                    continue;
                }
                let from = m.label(r.origin.as_deref().unwrap_or("unknown"));
                m.dead_lettered.with_label_values(&[from.as_str()]).inc();
                let dlq = r.dead_letter.unwrap_or_default();
                let name = engine
                    .lock_queues()
                    .by_id
                    .get(&dlq)
                    .map(|q| format!("/queue/{}", q.name))
                    .unwrap_or_else(|| format!("queue id {dlq}"));
                engine.audit(
                    AuditRecord::new("message.dead_lettered")
                        .destination(name)
                        .detail(serde_json::json!({
                            "row": r.id,
                            "from": r.origin,
                            "reason": r.reason,
                        })),
                );
            }
        }
        // Dead-lettered messages land in their DLQ's table unclaimed.
        let dead_lettered = units
            .iter()
            .flat_map(|u| u.releases.iter().filter_map(|r| r.dead_letter));
        backlog.extend(dead_lettered.clone());
        touched.extend(dead_lettered);
        touched.sort_unstable();
        touched.dedup();
        let queues: Vec<(i32, Option<Arc<QueueRuntime>>)> = {
            let queues = engine.lock_queues();
            touched
                .iter()
                .map(|id| (*id, queues.by_id.get(id).cloned()))
                .collect()
        };
        for (id, queue) in queues {
            let Some(queue) = queue else { continue };
            if backlog.contains(&id) {
                queue.mark_backlog();
            } else if grouped.contains(&id) {
                queue.mark_grouped();
            }
            if let Some((n, bytes)) = unreserve.remove(&id) {
                queue.unreserve(n, bytes);
            }
            if let Some(messages) = fresh.remove(&id) {
                let give_back = queue.accept_fresh(messages);
                if !give_back.is_empty() {
                    let engine = engine.clone();
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        engine.give_back(&queue, give_back).await;
                        queue.release_done();
                    });
                }
            }
            queue.wake();
        }
        let receivers = lock(&engine.0.receivers);
        for id in &touched {
            if let Some(n) = receivers.get(id) {
                n.notify_waiters();
            }
        }
    }

    fn not_committed(&self, units: &[Unit]) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let engine = Engine(inner);
        engine
            .metrics()
            .db_errors
            .with_label_values(&["batch"])
            .inc();
        for unit in units {
            for row in unit.inserts.iter().filter(|r| r.pre_claimed) {
                let queue = engine.lock_queues().by_id.get(&row.queue_id).cloned();
                if let Some(q) = queue {
                    q.unreserve(1, row.message.body.len());
                }
            }
        }
    }
}

/// The message a pre-claimed insert stored, rebuilt from what was sent (no read-back).
fn fresh_message(
    id: postbus_model::MessageId,
    queue_id: i32,
    m: &postbus_model::NewMessage,
) -> StoredMessage {
    StoredMessage {
        id,
        queue_id,
        body: m.body.clone(),
        content_type: m.content_type.clone(),
        persistent: m.persistent,
        priority: m.priority,
        sent_at: m.sent_at,
        expires_at: m.expires_at,
        correlation_id: m.correlation_id.clone(),
        reply_to: m.reply_to.clone(),
        jms_type: m.jms_type.clone(),
        group_id: m.group_id.clone(),
        group_seq: m.group_seq,
        user_id: m.user_id.clone(),
        traceparent: m.traceparent.clone(),
        tracestate: m.tracestate.clone(),
        properties: m.properties.clone(),
        delivery_count: 0,
        dlq_reason: None,
        original_destination: None,
        last_error: None,
        publish_id: None,
        topic: None,
    }
}

impl Engine {
    /// Registers this node, takes back what a previous incarnation held, and starts the
    /// writers and background jobs.
    /// Starts an engine that admits every client and allows everything (tests; see
    /// [`Engine::start_secured`]).
    pub async fn start(config: BrokerConfig, store: Store) -> Result<Engine, EngineError> {
        Self::start_secured(config, store, Arc::new(Security::anonymous())).await
    }

    /// Starts an engine that authenticates and authorizes clients with `security`.
    pub async fn start_secured(
        config: BrokerConfig,
        store: Store,
        security: Arc<Security>,
    ) -> Result<Engine, EngineError> {
        let hostname = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let node_name = config.node_name.clone().unwrap_or_else(|| hostname.clone());
        let node = store
            .register_node(&node_name, &hostname, config.node_lease_ms as i32)
            .await?;
        let mut recovered = store.reap_nodes(node, &node_name).await?;
        recovered.extend(store.release_orphans().await?);
        store.remove_gone_node_subscriptions().await?;
        store.remove_gone_node_temp_queues().await?;
        tracing::info!(node = node.0, name = %node_name, recovered_queues = recovered.len(), "broker node registered");
        let otel = match &config.otlp_endpoint {
            Some(url) => Some(Arc::new(Otel::start(url).map_err(EngineError::Config)?)),
            None => None,
        };
        let audit = Arc::new(AuditQueue::default());
        let metrics = Arc::new(Metrics::new(
            config.metrics_max_destinations,
            config.max_connections,
        ));
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_handshakes.max(1),
        ));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let limits = WriterLimits {
                max_in_flight: config.writers,
                max_units: config.max_batch_units,
                max_bytes: config.max_batch_bytes,
                retry_for: Duration::from_millis(config.write_retry_ms),
            };
            let writers = Writers::start(
                store.clone(),
                node,
                limits,
                Arc::new(WakeOnCommit(weak.clone())),
                otel.clone(),
            );
            Inner {
                config,
                security,
                store,
                node,
                node_name,
                writers,
                queues: Mutex::new(Queues::default()),
                topics: Mutex::new(HashMap::new()),
                subscribers: tokio::sync::Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                clients: Mutex::new(Clients::default()),
                receivers: Mutex::new(HashMap::new()),
                fanning_out: Mutex::new(HashMap::new()),
                connections: Mutex::new(Connections::default()),
                handshakes,
                audit: audit.clone(),
                stopped: std::sync::atomic::AtomicBool::new(false),
                metrics,
                otel,
            }
        });
        let engine = Engine(inner);
        tokio::spawn(write_audit(
            engine.0.store.clone(),
            node,
            Arc::downgrade(&audit),
        ));
        engine.check_durability(true).await;
        engine.spawn_background();
        Ok(engine)
    }

    /// The tracer, when traces are exported.
    pub fn otel(&self) -> Option<&Arc<Otel>> {
        self.0.otel.as_ref()
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// A destination's metric label (`/queue/NAME`...) for a queue id this broker knows.
    fn metric_label(&self, queue_id: i32) -> String {
        let name = self
            .lock_queues()
            .by_id
            .get(&queue_id)
            .map(|q| format!("/{}/{}", q.kind.as_str(), q.name))
            .unwrap_or_else(|| format!("queue id {queue_id}"));
        self.0.metrics.label(&name)
    }

    /// Reads what a commit means on the database (fsync, synchronous_commit, synchronous
    /// standbys) into the metrics; logs it, loudly when a RECEIPT would not mean durable and
    /// whenever that verdict changes (`announce`: always log, at start).
    async fn check_durability(&self, announce: bool) {
        let m = &self.0.metrics;
        let d = match self.0.store.durability().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading the database's durability settings failed");
                return;
            }
        };
        let warning = d.warning();
        let was_durable = m.receipts_durable.get() == 1;
        m.db_fsync.set(i64::from(d.fsync));
        m.db_sync_standbys.set(d.sync_standbys);
        m.db_synchronous_commit.reset();
        m.db_synchronous_commit
            .with_label_values(&[d.synchronous_commit.as_str()])
            .set(1);
        m.receipts_durable.set(i64::from(warning.is_none()));
        let changed = was_durable != warning.is_none();
        if announce || changed {
            match &warning {
                None => tracing::info!(
                    fsync = d.fsync,
                    synchronous_commit = %d.synchronous_commit,
                    synchronous_standby_names = %d.synchronous_standby_names,
                    sync_standbys = d.sync_standbys,
                    standbys = d.standbys,
                    "database durability: a RECEIPT means the commit is durable"
                ),
                Some(w) => tracing::warn!(
                    fsync = d.fsync,
                    synchronous_commit = %d.synchronous_commit,
                    synchronous_standby_names = %d.synchronous_standby_names,
                    sync_standbys = d.sync_standbys,
                    standbys = d.standbys,
                    "RECEIPTS ARE NOT DURABLE: {w}"
                ),
            }
        }
    }

    /// Samples destination depths and consumer counts into the metrics (a few index scans,
    /// every `broker.metrics_depth_interval_ms`, never per scrape), and the durability
    /// settings.
    async fn sample_depths(&self) {
        let m = &self.0.metrics;
        self.check_durability(false).await;
        let started = std::time::Instant::now();
        let stats = match self.0.store.destination_stats().await {
            Ok(s) => s,
            Err(e) => {
                m.db_errors.with_label_values(&["depth"]).inc();
                tracing::warn!(error = %e, "sampling destination depths failed");
                return;
            }
        };
        m.db_query
            .with_label_values(&["depth"])
            .observe(started.elapsed().as_secs_f64());
        let now = postbus_store::clock::now_ms();
        // What fan-out compares with subscriptions' depth limits.
        let ids: Vec<i32> = stats.iter().map(|s| s.id).collect();
        let depths: Vec<i64> = stats
            .iter()
            .map(|s| s.ready + s.in_flight + s.scheduled)
            .collect();
        if let Err(e) = self.0.store.record_sampled_depths(&ids, &depths).await {
            tracing::warn!(error = %e, "recording sampled depths failed");
        }
        let names: HashMap<i32, String> = stats
            .iter()
            .map(|s| (s.id, format!("/{}/{}", s.kind, s.name)))
            .collect();
        for (id, n) in self.0.store.take_discards() {
            let name = names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("subscription id {id}"));
            m.discarded
                .with_label_values(&[m.label(&name).as_str()])
                .inc_by(n);
        }
        // Label -> (ready, in flight, scheduled, oldest ready age).
        let mut by_label: HashMap<String, (i64, i64, i64, f64)> = HashMap::new();
        for s in stats {
            let label = m.label(&format!("/{}/{}", s.kind, s.name));
            let e = by_label.entry(label).or_default();
            e.0 += s.ready;
            e.1 += s.in_flight;
            e.2 += s.scheduled;
            let age = s
                .oldest_ready_ms
                .map(|t| (now - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            e.3 = e.3.max(age);
        }
        let consumers: Vec<(String, usize)> = self
            .lock_queues()
            .by_id
            .values()
            .map(|q| {
                (
                    format!("/{}/{}", q.kind.as_str(), q.name),
                    q.consumer_count(),
                )
            })
            .collect();
        m.depth.reset();
        m.oldest_ready_age.reset();
        m.consumers.reset();
        for (label, (ready, in_flight, scheduled, age)) in &by_label {
            m.depth
                .with_label_values(&[label.as_str(), "ready"])
                .set(*ready);
            m.depth
                .with_label_values(&[label.as_str(), "in_flight"])
                .set(*in_flight);
            m.depth
                .with_label_values(&[label.as_str(), "scheduled"])
                .set(*scheduled);
            m.oldest_ready_age
                .with_label_values(&[label.as_str()])
                .set(*age);
            m.consumers.with_label_values(&[label.as_str()]).set(0);
        }
        for (name, n) in consumers {
            let label = m.label(&name);
            m.consumers
                .with_label_values(&[label.as_str()])
                .add(n as i64);
        }
    }

    /// Whether the policies allow `who` to do `action` to `destination`. A denial is logged,
    /// counted and audited here (`protocol` says where it came from), and comes back as the
    /// sentence the client gets: who may not do what, and which rule decided.
    pub fn authorize(
        &self,
        who: &postbus_auth::Identity,
        action: postbus_auth::Action,
        destination: &str,
        protocol: &str,
    ) -> Result<(), String> {
        let d = self.0.security.decide(who, action, destination);
        if d.allowed {
            return Ok(());
        }
        tracing::warn!(
            principal = %who.principal,
            action = action.as_str(),
            destination,
            protocol,
            reason = %d.explain(),
            "authorization denied"
        );
        self.0
            .metrics
            .policy_denials
            .with_label_values(&[action.as_str()])
            .inc();
        self.audit(
            AuditRecord::new("authz.denied")
                .principal(who.principal.clone())
                .destination(destination)
                .detail(serde_json::json!({
                    "action": action.as_str(),
                    "rule": d.rule,
                    "protocol": protocol,
                })),
        );
        Err(format!(
            "not authorized: {} may not {action} {destination} ({})",
            who.principal,
            d.explain()
        ))
    }

    /// Records a security-relevant event in the audit log (written within ~100 ms, batched).
    pub fn audit(&self, record: AuditRecord) {
        self.0.audit.push(record);
    }

    /// Authentication and the policies in force.
    pub fn security(&self) -> &Arc<Security> {
        &self.0.security
    }

    /// Whether a queue (or, with `topic`, a topic) exists, for the `create` permission.
    pub async fn destination_exists(
        &self,
        kind: DestinationKind,
        name: &str,
    ) -> Result<bool, EngineError> {
        let cached = match kind {
            DestinationKind::Queue => self.lock_queues().by_name.contains_key(name),
            DestinationKind::Topic => self.lock_topics().contains_key(name),
            _ => false,
        };
        Ok(cached || self.0.store.find_destination(kind, name).await?.is_some())
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn node(&self) -> NodeId {
        self.0.node
    }

    /// A fresh id for a connection or a consumer.
    pub fn next_id(&self) -> u64 {
        self.0.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a unit to the group-commit writer of connection `conn`.
    /// Submits a unit for the next group commit; `confirmed`: the client asked for a receipt
    /// (see `Writers::submit` for what that changes).
    pub fn submit(
        &self,
        conn: u64,
        unit: Unit,
        confirmed: bool,
    ) -> oneshot::Receiver<Result<UnitOutcome, WriteError>> {
        self.0.writers.submit(conn, unit, confirmed)
    }

    /// Submits a unit (committed durably) and waits for its outcome.
    pub async fn write(&self, conn: u64, unit: Unit) -> Result<UnitOutcome, WriteError> {
        self.submit(conn, unit, true)
            .await
            .unwrap_or_else(|_| Err(WriteError::Failed("the broker is shutting down".into())))
    }

    /// Writes a unit that gives messages this node holds back to their queue (a consumer gone,
    /// claimed messages nobody can take, dead-letter moves), retrying until it commits or the
    /// broker stops. Such a release is fenced by the node id (only rows this node still owns
    /// change), so repeating it is safe; dropping it would leave the messages held by a live
    /// node, undelivered until it restarts (found by the fault suite, scenario 3b).
    pub async fn write_release(&self, conn: u64, unit: Unit) -> Result<UnitOutcome, WriteError> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.write(conn, unit.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if self.0.stopped.load(Ordering::SeqCst) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, releases = unit.releases.len(), "returning messages to their queue failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The runtime of a queue, creating the queue first if `create` (and it does not exist).
    pub async fn queue(&self, name: &str, create: bool) -> Result<Arc<QueueRuntime>, EngineError> {
        if let Some(q) = self.lock_queues().by_name.get(name) {
            return Ok(q.clone());
        }
        postbus_model::destination::validate_name(name)?;
        let row = match self
            .0
            .store
            .find_destination(DestinationKind::Queue, name)
            .await?
        {
            Some(row) => row,
            None if create => {
                let settings = QueueSettings::default();
                let (row, created) = self
                    .0
                    .store
                    .create_destination(DestinationKind::Queue, name, &settings, true)
                    .await?;
                if created {
                    tracing::info!(queue = name, "queue auto-created");
                    self.audit(
                        AuditRecord::new("destination.created")
                            .destination(format!("/queue/{name}"))
                            .detail(serde_json::json!({"auto_created": true})),
                    );
                }
                row
            }
            None => return Err(EngineError::NoSuchQueue(name.to_owned())),
        };
        let q = self.runtime(&row);
        self.lock_queues()
            .by_name
            .insert(name.to_owned(), q.clone());
        Ok(q)
    }

    /// A topic's destination row, created on first use (when auto-creation is on).
    pub async fn topic(&self, name: &str) -> Result<DestinationRow, EngineError> {
        if let Some(t) = self.lock_topics().get(name) {
            return Ok(t.clone());
        }
        postbus_model::destination::validate_name(name)?;
        let row = match self
            .0
            .store
            .find_destination(DestinationKind::Topic, name)
            .await?
        {
            Some(row) => row,
            None if self.0.config.auto_create_queues => {
                let (row, created) = self
                    .0
                    .store
                    .create_destination(
                        DestinationKind::Topic,
                        name,
                        &QueueSettings::default(),
                        true,
                    )
                    .await?;
                if created {
                    tracing::info!(topic = name, "topic auto-created");
                    self.audit(
                        AuditRecord::new("destination.created")
                            .destination(format!("/topic/{name}"))
                            .detail(serde_json::json!({"auto_created": true})),
                    );
                }
                row
            }
            None => return Err(EngineError::NoSuchTopic(name.to_owned())),
        };
        self.lock_topics().insert(name.to_owned(), row.clone());
        Ok(row)
    }

    fn lock_topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, DestinationRow>> {
        self.0.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a subscription (creating it, or joining a durable or shared one that exists) and
    /// returns its runtime. A durable, unshared subscription asked for with another topic or
    /// selector is replaced (its messages go, as JMS specifies); a shared one is an error.
    pub async fn subscription(
        &self,
        mut spec: SubscriptionSpec,
    ) -> Result<Arc<QueueRuntime>, EngineError> {
        if !postbus_model::destination::is_pattern(&spec.topic_pattern) {
            // Copies take the topic's settings (redelivery, dead-letter queue, expiry queue);
            // the depth limit is the topic's if it has one, else the broker's.
            let topic = self.topic(&spec.topic_pattern).await?;
            let limit = spec.settings.max_depth;
            spec.settings = topic.settings.clone();
            if spec.settings.max_depth == 0 {
                spec.settings.max_depth = limit;
            }
        }
        if spec.settings.dead_letter_queue.is_none() {
            let base = if postbus_model::destination::is_pattern(&spec.topic_pattern) {
                "topics".to_owned()
            } else {
                spec.topic_pattern.clone()
            };
            spec.settings.dead_letter_queue = Some(format!("DLQ.{base}"));
        }
        let mut subscribers = self.0.subscribers.lock().await;
        let node = self.0.node;
        let (mut row, created) = self.0.store.ensure_subscription(&spec, node).await?;
        let same = row.topic_pattern == spec.topic_pattern && row.selector == spec.selector;
        if !created && !same {
            if spec.shared {
                return Err(EngineError::Subscription(format!(
                    "shared subscription {:?} exists for topic {} with selector {:?}: subscribe with the same topic and selector, or remove it first",
                    spec.subscription_name.as_deref().unwrap_or(""),
                    row.topic_pattern,
                    row.selector.as_deref().unwrap_or("")
                )));
            }
            if subscribers.get(&row.destination.id).is_some_and(|n| *n > 0) {
                return Err(EngineError::Subscription(format!(
                    "durable subscription {:?} has a consumer with another topic or selector: close it first",
                    spec.subscription_name.as_deref().unwrap_or("")
                )));
            }
            tracing::info!(subscription = %spec.name, "durable subscription changed its topic or selector: replacing it");
            self.forget_runtime(row.destination.id);
            self.0
                .store
                .detach_subscription(row.destination.id, None, true)
                .await?;
            row = self.0.store.ensure_subscription(&spec, node).await?.0;
        }
        *subscribers.entry(row.destination.id).or_default() += 1;
        Ok(self.runtime(&row.destination))
    }

    /// A consumer left a subscription. When it was this node's last one, the node detaches,
    /// and a non-durable subscription nobody else consumes from is removed with its copies.
    pub async fn leave_subscription(&self, id: i32) -> Result<(), EngineError> {
        let mut subscribers = self.0.subscribers.lock().await;
        let left = match subscribers.get_mut(&id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        if left {
            subscribers.remove(&id);
        }
        if self
            .0
            .store
            .detach_subscription(id, Some(self.0.node), false)
            .await?
        {
            self.forget_runtime(id);
        }
        Ok(())
    }

    /// Removes a durable subscription for good (UNSUBSCRIBE by name), with its copies. Its
    /// consumer here, if any, is being removed by the same UNSUBSCRIBE (a client id has one
    /// connection, and JMS allows one consumer per unshared durable subscription).
    pub async fn drop_subscription(&self, id: i32) -> Result<bool, EngineError> {
        let mut subscribers = self.0.subscribers.lock().await;
        subscribers.remove(&id);
        let removed = self.0.store.detach_subscription(id, None, true).await?;
        self.forget_runtime(id);
        Ok(removed)
    }

    /// Stops a subscription's or temporary queue's dispatcher and forgets its runtime.
    /// Forgets a deleted queue: its runtime closes (its consumers get no more messages) and
    /// the next use of its name creates or finds it anew.
    pub fn forget_queue(&self, id: i32) {
        self.lock_queues().by_name.retain(|_, q| q.id != id);
        self.forget_runtime(id);
    }

    fn forget_runtime(&self, id: i32) {
        let mut queues = self.lock_queues();
        if let Some(q) = queues.by_id.remove(&id) {
            q.close();
            queues.temp_by_name.remove(&q.name);
        }
        queues.dispatching.remove(&id);
    }

    /// The global name of connection `conn`'s temporary queue `local`: anyone may send to it
    /// (it is what a reply-to carries), only that connection may consume from it.
    pub fn temp_queue_name(&self, conn: u64, local: &str) -> String {
        format!("tmp.{}.{}.{}", self.0.node.0, conn, local)
    }

    /// A temporary queue by its global name, created (for this node) if `create`.
    pub async fn temp_queue(
        &self,
        global: &str,
        create: bool,
    ) -> Result<Arc<QueueRuntime>, EngineError> {
        if let Some(q) = self.lock_queues().temp_by_name.get(global) {
            return Ok(q.clone());
        }
        postbus_model::destination::validate_name(global)?;
        let row = match self
            .0
            .store
            .find_destination(DestinationKind::TempQueue, global)
            .await?
        {
            Some(row) => row,
            None if create => {
                self.0
                    .store
                    .create_temp_queue(global, self.0.node, TEMP_QUEUE_DLQ)
                    .await?
            }
            None => {
                return Err(EngineError::TempQueue(format!(
                    "temporary queue {global} does not exist (the connection that created it is gone)"
                )));
            }
        };
        let q = self.runtime(&row);
        self.lock_queues()
            .temp_by_name
            .insert(global.to_owned(), q.clone());
        Ok(q)
    }

    /// Deletes a temporary queue with its messages (its connection closed).
    pub async fn drop_temp_queue(&self, id: i32) -> Result<(), EngineError> {
        self.forget_runtime(id);
        self.0.store.delete_destination(id, true).await?;
        Ok(())
    }

    /// The runtime of a destination (queue, temporary queue or subscription), made on first
    /// use and kept by id.
    fn runtime(&self, row: &DestinationRow) -> Arc<QueueRuntime> {
        self.lock_queues()
            .by_id
            .entry(row.id)
            .or_insert_with(|| {
                Arc::new(QueueRuntime::new(
                    row.id,
                    row.kind,
                    row.name.clone(),
                    row.settings.clone(),
                    self.0.config.dispatch_buffer(),
                    self.0
                        .metrics
                        .counters(&format!("/{}/{}", row.kind.as_str(), row.name)),
                ))
            })
            .clone()
    }

    /// Makes sure the queue's dispatcher runs (it is started with the first consumer).
    pub fn ensure_dispatcher(&self, queue: &Arc<QueueRuntime>) {
        let mut queues = self.lock_queues();
        if queues.dispatching.insert(queue.id) {
            tokio::spawn(run_dispatcher(self.clone(), queue.clone()));
        }
    }

    fn lock_queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.0.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a live connection for a client id. An older connection with the same client
    /// id is told to close (its last COMMIT may be the one the new connection retries), and
    /// this waits briefly for it to finish.
    pub async fn claim_client_id(&self, client_id: &str, conn: u64) -> Arc<tokio::sync::Notify> {
        let kick = Arc::new(tokio::sync::Notify::new());
        let old = {
            let mut clients = self.lock_clients();
            let old = clients
                .live
                .insert(client_id.to_owned(), (conn, kick.clone()));
            if let Some((old_conn, _)) = &old {
                clients.ending.insert(*old_conn);
            }
            old
        };
        if let Some((old_conn, old_kick)) = old {
            old_kick.notify_one();
            // Wait (bounded) for the old session to finish its writes and go.
            for _ in 0..250 {
                if !self.lock_clients().ending.contains(&old_conn) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        kick
    }

    /// Records a connection that completed its CONNECT; the returned signal fires when an
    /// operator closes it. Refused (with the reason) when its principal already has
    /// `broker.max_connections_per_principal` connections here.
    pub fn register_connection(
        &self,
        info: ConnectionInfo,
    ) -> Result<Arc<tokio::sync::Notify>, String> {
        let limit = self.0.config.max_connections_per_principal;
        let mut connections = lock(&self.0.connections);
        let count = connections
            .per_principal
            .get(&info.principal)
            .copied()
            .unwrap_or(0);
        if limit > 0 && count >= limit {
            return Err(format!(
                "too many connections for principal {} (broker.max_connections_per_principal is {limit}): close some first",
                info.principal
            ));
        }
        let close = Arc::new(tokio::sync::Notify::new());
        connections
            .per_principal
            .insert(info.principal.clone(), count + 1);
        connections.by_id.insert(
            info.id,
            ConnectionEntry {
                info,
                close: close.clone(),
            },
        );
        Ok(close)
    }

    /// Forgets a connection that ended.
    pub fn deregister_connection(&self, conn: u64) {
        let mut connections = lock(&self.0.connections);
        let Some(entry) = connections.by_id.remove(&conn) else {
            return;
        };
        let principal = entry.info.principal;
        if let Some(n) = connections.per_principal.get_mut(&principal) {
            *n -= 1;
            if *n == 0 {
                connections.per_principal.remove(&principal);
            }
        }
    }

    /// Waits for a turn to process a CONNECT ([`BrokerConfig::max_concurrent_handshakes`]);
    /// the turn ends when the permit is dropped.
    pub async fn handshake_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.0
            .handshakes
            .clone()
            .acquire_owned()
            .await
            .expect("the handshake semaphore is never closed")
    }

    /// This broker's connections, with their consumer and in-flight counts.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let consumers = self.consumers();
        let mut list: Vec<ConnectionInfo> = lock(&self.0.connections)
            .by_id
            .values()
            .map(|e| e.info.clone())
            .collect();
        for c in &mut list {
            for k in consumers.iter().filter(|k| k.connection == c.id) {
                c.subscriptions += 1;
                c.in_flight += k.in_flight;
            }
        }
        list.sort_by_key(|c| c.id);
        list
    }

    /// Closes connection `conn` (its client gets an ERROR frame); false if there is none.
    pub fn close_connection(&self, conn: u64) -> bool {
        match lock(&self.0.connections).by_id.get(&conn) {
            Some(e) => {
                e.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Every consumer attached on this broker.
    pub fn consumers(&self) -> Vec<crate::queue::ConsumerInfo> {
        let queues: Vec<Arc<QueueRuntime>> = self.lock_queues().by_id.values().cloned().collect();
        let mut out: Vec<_> = queues
            .iter()
            .flat_map(|q| q.consumers(&format!("/{}/{}", q.kind.as_str(), q.name)))
            .collect();
        out.sort_by(|a, b| (a.connection, &a.subscription).cmp(&(b.connection, &b.subscription)));
        out
    }

    /// Re-reads a destination's settings after an operator changed them (any broker's
    /// admin API: the 's<id>' wake-up).
    fn reload_settings(&self, id: i32) {
        let Some(queue) = self.lock_queues().by_id.get(&id).cloned() else {
            return;
        };
        let store = self.0.store.clone();
        tokio::spawn(async move {
            match store.find_destination(queue.kind, &queue.name).await {
                Ok(Some(row)) => {
                    queue.replace_settings(row.settings);
                    queue.wake();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(queue = %queue.name, error = %e, "reloading changed settings failed")
                }
            }
        });
    }

    /// Releases a client id when its connection ends.
    pub fn release_client_id(&self, client_id: &str, conn: u64) {
        let mut clients = self.lock_clients();
        clients.ending.remove(&conn);
        if clients.live.get(client_id).is_some_and(|(c, _)| *c == conn) {
            clients.live.remove(client_id);
        }
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.0.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Splits claimed messages into those to deliver and those past their queue's
    /// max-deliveries (which go to the dead-letter queue instead).
    pub fn split_dead_letters(
        &self,
        queue: &QueueRuntime,
        messages: Vec<StoredMessage>,
    ) -> (Vec<StoredMessage>, Vec<StoredMessage>) {
        if is_dead_letter_queue(&queue.name) {
            return (messages, vec![]);
        }
        messages
            .into_iter()
            .partition(|m| m.delivery_count < queue.settings().max_deliveries)
    }

    /// The queue id of `queue`'s dead-letter queue (created if needed).
    pub async fn dead_letter_queue_id(&self, queue: &QueueRuntime) -> Result<i32, EngineError> {
        let name = queue
            .settings()
            .dead_letter_queue
            .clone()
            .unwrap_or_else(|| format!("DLQ.{}", queue.name));
        Ok(self.queue(&name, true).await?.id)
    }

    /// Builds the release of a message whose delivery ended without an ack: back to the queue
    /// after the redelivery delay, or to the dead-letter queue once max-deliveries is reached.
    pub async fn redelivery(
        &self,
        queue: &QueueRuntime,
        id: i64,
        delivery_count: i32,
        reason: &str,
        last_error: Option<String>,
    ) -> ReleaseRow {
        let count = delivery_count + 1;
        let mut row = ReleaseRow {
            id,
            increment: 1,
            last_error,
            ..Default::default()
        };
        if count >= queue.settings().max_deliveries && !is_dead_letter_queue(&queue.name) {
            match self.dead_letter_queue_id(queue).await {
                Ok(dlq) => {
                    row.dead_letter = Some(dlq);
                    row.reason = Some(format!(
                        "{reason}; delivered {count} times (max-deliveries {})",
                        queue.settings().max_deliveries
                    ));
                    row.origin = Some(format!("/queue/{}", queue.name));
                    return row;
                }
                Err(e) => {
                    tracing::error!(queue = %queue.name, error = %e, "cannot resolve the dead-letter queue; redelivering instead")
                }
            }
        }
        let delay = queue.settings().redelivery_delay(count);
        if delay > 0 {
            row.ready_at = Some(postbus_store::clock::now_ms() + delay);
        }
        row
    }

    /// Moves claimed messages that exceeded max-deliveries to the dead-letter queue.
    pub async fn dead_letter(&self, queue: &Arc<QueueRuntime>, messages: Vec<StoredMessage>) {
        let dlq = match self.dead_letter_queue_id(queue).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(queue = %queue.name, error = %e, "cannot resolve the dead-letter queue");
                return;
            }
        };
        for m in &messages {
            tracing::info!(
                queue = %queue.name,
                message = m.id.0,
                deliveries = m.delivery_count,
                trace_id = m.traceparent.as_deref().and_then(crate::otel::trace_id_of),
                "message moved to the dead-letter queue (max-deliveries reached)"
            );
        }
        let releases = messages
            .iter()
            .map(|m| ReleaseRow {
                id: m.id.0,
                increment: 0,
                dead_letter: Some(dlq),
                reason: Some(format!(
                    "delivered {} times (max-deliveries {})",
                    m.delivery_count,
                    queue.settings().max_deliveries
                )),
                origin: Some(format!("/queue/{}", queue.name)),
                ..Default::default()
            })
            .collect();
        let unit = Unit {
            releases,
            ..Default::default()
        };
        if let Err(e) = self.write_release(0, unit).await {
            tracing::error!(queue = %queue.name, error = %e, "moving messages to the dead-letter queue failed at shutdown; they will be retried");
        }
    }

    /// Returns claimed messages that were never delivered (no delivery is counted).
    pub async fn give_back(&self, queue: &QueueRuntime, messages: Vec<StoredMessage>) {
        let releases = messages
            .iter()
            .map(|m| ReleaseRow {
                id: m.id.0,
                increment: 0,
                ..Default::default()
            })
            .collect();
        if let Err(e) = self
            .write_release(
                0,
                Unit {
                    releases,
                    ..Default::default()
                },
            )
            .await
        {
            tracing::error!(queue = %queue.name, error = %e, "giving back claimed messages failed at shutdown; they return when this node's peers or its restart release them");
        }
    }

    /// Resolves a destination for sending: queues only for now.
    pub async fn resolve_send_target(
        &self,
        dest: &Destination,
    ) -> Result<Arc<QueueRuntime>, EngineError> {
        self.queue(&dest.name, self.0.config.auto_create_queues)
            .await
    }

    fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(listen_for_wakeups(weak.clone()));
        // Scheduler: delayed and redelivery-delayed messages become deliverable.
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_millis(100),
            |engine| async move {
                match engine.0.store.promote_scheduled().await {
                    Ok(queues) => engine.wake_queues(&queues),
                    Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
                }
            },
        ));
        // Expiry sweep, and forgetting old dedup ids and client transactions.
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_secs(1),
            |engine| async move {
                let e2 = engine.clone();
                let swept = engine
                    .0
                    .store
                    .sweep_expired(1000, async move |name: &str| -> Result<i32, StoreError> {
                        e2.queue(name, true)
                            .await
                            .map(|q| q.id)
                            .map_err(|e| StoreError::NotFound(e.to_string()))
                    })
                    .await;
                match swept {
                    Ok(found) if !found.is_empty() => {
                        for e in &found {
                            let label = engine.0.metrics.label(&format!("/queue/{}", e.queue_name));
                            engine
                                .0
                                .metrics
                                .expired
                                .with_label_values(&[label.as_str()])
                                .inc();
                        }
                        tracing::info!(count = found.len(), "expired messages removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                }
            },
        ));
        // SQL and HTTP receivers' leases that ran out, and topic publications sent through SQL
        // whose wake-up was missed (the listener reconnecting, a broker starting).
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_secs(1),
            |engine| async move {
                if let Err(e) = engine.0.store.expire_leases().await {
                    tracing::warn!(error = %e, "expiring SQL leases failed");
                }
                match engine.0.store.pending_publications().await {
                    Ok(topics) => {
                        for t in topics {
                            engine.fan_out_publications(t);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "looking for SQL publications failed"),
                }
            },
        ));
        // Destination depths for the metrics.
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_millis(self.0.config.metrics_depth_interval_ms.max(100)),
            |engine| async move { engine.sample_depths().await },
        ));
        // Shared topic bodies no copy points at any more.
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_secs(10),
            |engine| async move {
                let before = postbus_store::clock::now_ms() - 10_000;
                if let Err(e) = engine.0.store.sweep_payloads(before).await {
                    tracing::warn!(error = %e, "payload sweep failed");
                }
            },
        ));
        // Once a minute: old dedup and transaction records, and messages held by nodes that
        // no longer exist (rare, and it scans the in-flight index, so not with every heartbeat).
        tokio::spawn(periodic(
            weak.clone(),
            Duration::from_secs(60),
            |engine| async move {
                if let Err(e) = engine
                    .0
                    .store
                    .sweep_records(engine.0.config.transaction_record_ms)
                    .await
                {
                    tracing::warn!(error = %e, "dedup/transaction record sweep failed");
                }
                match engine.0.store.release_orphans().await {
                    Ok(queues) => engine.wake_queues(&queues),
                    Err(e) => tracing::warn!(error = %e, "orphaned message sweep failed"),
                }
            },
        ));
        // Lease: renew ours, and take back what dead nodes held.
        let lease = Duration::from_millis(self.0.config.node_lease_ms as u64);
        tokio::spawn(periodic(weak.clone(), lease / 4, |engine| async move {
            match engine.0.store.heartbeat(engine.0.node).await {
                Ok(true) => engine
                    .0
                    .metrics
                    .db_clock_skew
                    .set(postbus_store::clock::skew_ms() as f64 / 1000.0),
                // Deregistered by our own shutdown: not a verdict of the peers.
                Ok(false) if engine.0.stopped.load(Ordering::SeqCst) => {}
                Ok(false) => {
                    // Peers declared this node dead (it was paused or cut off longer than its
                    // lease) and gave its messages to others. Acting on any state from before
                    // would deliver twice: stop, and let the supervisor restart us clean.
                    tracing::error!(
                        node = engine.0.node.0,
                        "this broker node was declared dead by its peers; exiting so that it does not act on stale state"
                    );
                    std::process::exit(75);
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            match engine
                .0
                .store
                .reap_nodes(engine.0.node, &engine.0.node_name)
                .await
            {
                Ok(queues) => engine.wake_queues(&queues),
                Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
            }
            match engine.0.store.remove_gone_node_subscriptions().await {
                Ok(ids) => {
                    for id in ids {
                        engine.forget_runtime(id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "removing subscriptions of gone nodes failed"),
            }
            if let Err(e) = engine.0.store.remove_gone_node_temp_queues().await {
                tracing::warn!(error = %e, "removing temporary queues of gone nodes failed");
            }
        }));
    }

    /// Wakes queues that got messages in the table (from another broker, the scheduler or
    /// recovery): they claim before fresh messages may skip the table again.
    fn wake_queues(&self, ids: &[i32]) {
        {
            let queues = self.lock_queues();
            for id in ids {
                if let Some(q) = queues.by_id.get(id) {
                    q.mark_backlog();
                    q.wake();
                }
            }
        }
        let receivers = lock(&self.0.receivers);
        for id in ids {
            if let Some(n) = receivers.get(id) {
                n.notify_waiters();
            }
        }
    }

    /// What a receiver outside a session (an HTTP long poll) waits on for messages in queue
    /// `queue_id`: notified on every wake-up of that queue (local commits, other brokers' and
    /// SQL callers' NOTIFY, the scheduler, recovery).
    pub fn messages_signal(&self, queue_id: i32) -> Arc<tokio::sync::Notify> {
        lock(&self.0.receivers)
            .entry(queue_id)
            .or_insert_with(|| Arc::new(tokio::sync::Notify::new()))
            .clone()
    }

    /// Copies topic `topic_id`'s publications sent through SQL to its subscriptions, in a
    /// task; a wake-up that comes while one runs makes it run once more.
    fn fan_out_publications(&self, topic_id: i32) {
        {
            let mut running = lock(&self.0.fanning_out);
            if let Some(again) = running.get_mut(&topic_id) {
                *again = true;
                return;
            }
            running.insert(topic_id, false);
        }
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.0.store.fan_out_publications(topic_id).await {
                    tracing::warn!(topic = topic_id, error = %e, "copying SQL publications to subscriptions failed; retrying within a second");
                }
                let mut running = lock(&engine.0.fanning_out);
                if running.get(&topic_id) == Some(&true) {
                    running.insert(topic_id, false);
                    continue;
                }
                running.remove(&topic_id);
                return;
            }
        });
    }

    /// A clean shutdown: in-flight messages go back to their queues at once.
    pub async fn shutdown(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        // Audit records still waiting for their batch are written now.
        let pending = self.0.audit.take();
        if let Err(e) = self.0.store.append_audit(Some(self.0.node), &pending).await {
            tracing::error!(error = %e, records = pending.len(), "writing the last audit records at shutdown failed");
        }
        if let Some(otel) = self.0.otel.clone() {
            let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
        }
        if let Err(e) = self.0.store.deregister_node(self.0.node).await {
            tracing::warn!(error = %e, "deregistering the node failed; peers will recover its messages after the lease");
        }
    }
}

/// Audit records waiting for the writer.
#[derive(Default)]
struct AuditQueue {
    pending: Mutex<Vec<AuditRecord>>,
    arrived: tokio::sync::Notify,
}

impl AuditQueue {
    fn push(&self, record: AuditRecord) {
        lock(&self.pending).push(record);
        self.arrived.notify_one();
    }

    fn take(&self) -> Vec<AuditRecord> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Puts records that could not be written back in front, in order.
    fn put_back(&self, mut records: Vec<AuditRecord>) {
        let mut pending = lock(&self.pending);
        records.append(&mut pending);
        *pending = records;
    }
}

/// Writes audit records in batches: whatever arrived within 100 ms goes in one transaction. A
/// failed write is retried with the same records (they stay in order). At shutdown
/// ([`Engine::shutdown`]) what is left is written at once.
async fn write_audit(store: Store, node: NodeId, queue: Weak<AuditQueue>) {
    loop {
        // Ends within a second of the engine (the only other holder of the queue) going.
        let Some(queue) = queue.upgrade() else { return };
        if tokio::time::timeout(Duration::from_secs(1), queue.arrived.notified())
            .await
            .is_err()
        {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let batch = queue.take();
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = store.append_audit(Some(node), &batch).await {
            tracing::error!(error = %e, records = batch.len(), "writing audit records failed; retrying");
            queue.put_back(batch);
            tokio::time::sleep(Duration::from_secs(1)).await;
            queue.arrived.notify_one();
        }
    }
}

/// Wakes local dispatchers when another broker (or an SQL caller) commits messages: LISTEN on
/// a dedicated connection, reconnecting when it drops. Polling stays behind it.
async fn listen_for_wakeups(weak: Weak<Inner>) {
    use futures_util::StreamExt;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let store = inner.store.clone();
        drop(inner);
        let (client, mut connection) = match store.dedicated_connection().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "wake-up listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        });
        if client
            .batch_execute(&format!("LISTEN {}", postbus_store::WAKE_CHANNEL))
            .await
            .is_ok()
        {
            while let Some(payload) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                // Queue ids, 't<id>' for a topic with publications sent through SQL, and 's<id>' for a
                // destination whose settings an operator changed.
                let engine = Engine(inner);
                let mut ids = Vec::new();
                for part in payload.split(',') {
                    if let Some(topic) = part.strip_prefix('t').and_then(|t| t.parse().ok()) {
                        engine.fan_out_publications(topic);
                    } else if let Some(id) = part.strip_prefix('s').and_then(|t| t.parse().ok()) {
                        engine.reload_settings(id);
                    } else if let Ok(id) = part.parse() {
                        ids.push(id);
                    }
                }
                engine.wake_queues(&ids);
            }
        }
        driver.abort();
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues named `DLQ.*` are dead-letter queues: their messages are never dead-lettered again.
pub fn is_dead_letter_queue(name: &str) -> bool {
    name.starts_with("DLQ.")
}

async fn periodic<F, Fut>(weak: Weak<Inner>, every: Duration, job: F)
where
    F: Fn(Engine) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        job(Engine(inner)).await;
    }
}
