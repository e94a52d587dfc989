//! postbus storage: the one place that talks to PostgreSQL.
//!
//! Every SQL statement the broker runs is in [`queries`]; the schema itself is in `schema/`
//! (embedded at build time and applied by [`migrate`]). The write path is batch-shaped: the
//! engine hands [`Store::write_batch`] the sends, acks and releases of many connections and
//! they commit in one PostgreSQL transaction (group commit).

mod admin;
pub mod audit;
mod batch;
pub mod clock;
mod error;
mod fanout;
mod leases;
mod manage;
pub use leases::{LeasedMessage, MAX_LEASE_MS};
pub use manage::{ManagedMessage, MessagePage, MessageRefusal, MessageState, ReplayOutcome};
pub mod migrate;
mod queries;

pub use queries::WAKE_CHANNEL;
mod read;
mod selection;
mod subscriptions;
pub use subscriptions::{SubscriptionRow, SubscriptionSpec};

pub use selection::{FILTER_FIRST_PARAM, MessagesMapping};

pub use admin::{DestinationRow, DestinationStats};
pub use audit::{AuditEntry, AuditRecord, AuditVerification};
pub use batch::{InsertOutcome, InsertRow, ReleaseRow, Unit, UnitOutcome, WriteBatch};
pub use error::StoreError;
pub use fanout::SelectorView;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

/// The server settings that decide what a committed transaction (and so a RECEIPT) means.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Durability {
    pub fsync: bool,
    pub synchronous_commit: String,
    pub synchronous_standby_names: String,
    /// Standbys attached as synchronous (sync or quorum).
    pub sync_standbys: i64,
    /// Standbys attached at all.
    pub standbys: i64,
}

impl Durability {
    /// Why a RECEIPT would not mean what it should, if it would not: None when a commit is
    /// flushed here (and, when synchronous standbys are named, on a standby too).
    pub fn warning(&self) -> Option<String> {
        if !self.fsync {
            return Some(
                "fsync is off: a committed message can be lost if the machine loses power or crashes; a RECEIPT does not mean durable (set fsync = on)".into(),
            );
        }
        match self.synchronous_commit.as_str() {
            "off" => Some(
                "synchronous_commit is off: a RECEIPT is sent before the commit is flushed, so a database crash can lose confirmed messages (set synchronous_commit = on)".into(),
            ),
            "local" if !self.synchronous_standby_names.is_empty() => Some(
                "synchronous_commit is local: a RECEIPT means durable on the primary only, not on the synchronous standby a failover promotes".into(),
            ),
            _ if !self.synchronous_standby_names.is_empty() && self.sync_standbys == 0 => Some(
                "synchronous_standby_names is set but no synchronous standby is attached: commits wait until one attaches".into(),
            ),
            _ => None,
        }
    }
}

/// How to reach PostgreSQL.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// A libpq-style URL or key=value string.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long to wait for a connection to be established.
    pub connect_timeout: Duration,
    /// How long sent data may stay unacknowledged by the database's host before the
    /// connection counts as broken (TCP_USER_TIMEOUT): a cut network path is noticed in this
    /// time instead of TCP's retransmissions' quarter of an hour.
    pub tcp_user_timeout: Duration,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            tcp_user_timeout: Duration::from_secs(10),
        }
    }
}

/// A broker node's id: the fencing token carried by every in-flight claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(pub i64);

/// The storage handle: a connection pool and the statements over it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    config: tokio_postgres::Config,
    /// Subscription selectors, parsed once, for topic fan-out.
    selectors: std::sync::Arc<fanout::SelectorCache>,
    /// Copies discarded because their subscription was at its depth limit, by subscription
    /// id, since the last [`Store::take_discards`].
    discards: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i32, u64>>>,
}

impl Store {
    /// Opens a pool to the database. Fails fast with a clear error if the URL is invalid;
    /// connections themselves are made lazily and checked by [`Store::ping`].
    pub fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid database URL: {e}")))?;
        pg.connect_timeout(cfg.connect_timeout);
        // A dead database path must be noticed, not waited on forever.
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(10));
        pg.keepalives_interval(Duration::from_secs(2));
        pg.keepalives_retries(3);
        pg.tcp_user_timeout(cfg.tcp_user_timeout);
        // JIT compilation costs more than it saves on the broker's short statements, and its
        // cost estimates once made a claim plan pay it on every execution.
        //
        // No sequential scans where an index can do: the broker's statements are prepared
        // once, and PostgreSQL keeps a generic plan made when the queue table was small. Such
        // a plan scanned the whole table for every ack batch (even an empty one) once the
        // table had grown: measured, 0.1 ms per batch at start, 13 ms per batch under a
        // backlog, and throughput halved from one run to the next depending on which plan
        // was cached. Every statement of the broker's has an index path.
        const SESSION: &str = "-c jit=off -c enable_seqscan=off";
        let options = match pg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {SESSION}"),
            _ => SESSION.to_owned(),
        };
        pg.options(&options);
        if pg.get_application_name().is_none() {
            pg.application_name("postbus");
        }
        let manager = Manager::from_config(
            pg.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(cfg.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Store {
            pool,
            config: pg,
            selectors: Default::default(),
            discards: Default::default(),
        })
    }

    /// Counts copies discarded at a subscription's depth limit.
    pub(crate) fn count_discards(&self, subscriptions: &[i32]) {
        if subscriptions.is_empty() {
            return;
        }
        tracing::debug!(
            copies = subscriptions.len(),
            "copies discarded at subscription depth limits"
        );
        let mut d = self.discards.lock().unwrap_or_else(|p| p.into_inner());
        for s in subscriptions {
            *d.entry(*s).or_default() += 1;
        }
    }

    /// The copies discarded at depth limits since the last call, by subscription id.
    pub fn take_discards(&self) -> std::collections::HashMap<i32, u64> {
        std::mem::take(&mut *self.discards.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records the sampled depths of destinations that have a depth limit (what fan-out
    /// compares with the limit).
    pub async fn record_sampled_depths(
        &self,
        ids: &[i32],
        depths: &[i64],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(queries::RECORD_SAMPLED_DEPTHS, &[&ids, &depths])
            .await?;
        Ok(())
    }

    /// The connection pool now: (size limit, connections open, idle, tasks waiting).
    pub fn pool_status(&self) -> (usize, usize, usize, usize) {
        let s = self.pool.status();
        (s.max_size, s.size, s.available, s.waiting)
    }

    /// Checks that the database answers.
    /// What a commit on this server means for durability (reported at start and in the metrics).
    pub async fn durability(&self) -> Result<Durability, StoreError> {
        let client = self.client().await?;
        let r = client.query_one(queries::DURABILITY, &[]).await?;
        Ok(Durability {
            fsync: r.get::<_, String>(0) == "on",
            synchronous_commit: r.get(1),
            synchronous_standby_names: r.get(2),
            sync_standbys: r.get(3),
            standbys: r.get(4),
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::from_pool)
    }

    /// A dedicated connection outside the pool (for LISTEN, or for looking up the outcome of a
    /// commit whose connection broke).
    pub async fn dedicated_connection(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        StoreError,
    > {
        Ok(self.config.connect(tokio_postgres::NoTls).await?)
    }
}

pub use tokio_postgres::{Client as PgClient, Error as PgError, SimpleQueryMessage};

/// A plain connection outside any pool (for tools and tests that run their own SQL).
/// Spawn the returned connection future; the client works while it runs.
pub async fn connect_raw(
    url: &str,
) -> Result<
    (
        PgClient,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    PgError,
> {
    tokio_postgres::connect(url, tokio_postgres::NoTls).await
}

/// Commits a transaction that writes WAL (one row's update). With a synchronous standby its
/// COMMIT waits, as every such commit does, until the standby has the WAL up to it, and so
/// everything committed before it: what this session saw committed (a transaction record, `pg_xact_status`) is then
/// as durable as a commit of its own. Run before confirming a commit learned by reading rather
/// than from its own COMMIT's answer, which a session that ended in the wait for the standby
/// never gave ("The transaction has already committed locally, but might not have been
/// replicated to the standby").
pub(crate) async fn durability_barrier(
    client: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(queries::DURABILITY_BARRIER).await
}
