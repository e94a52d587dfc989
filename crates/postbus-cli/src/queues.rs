//! `postbus queue ...`: queue management straight against PostgreSQL (with `--url`, over the
//! broker's admin API instead: see `api.rs`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use postbus_model::{DestinationKind, QueueSettings};
use postbus_store::{Store, StoreConfig};

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// List destinations with their depth.
    List,
    /// Create a queue with settings.
    Create(CreateArgs),
    /// Change some settings of an existing queue (admin API only: needs --url).
    ///
    /// Only the settings given change; the others keep their values. The broker applies the
    /// change to its running queue and audits it. Example:
    /// `postbus --url http://127.0.0.1:8161 queue update orders --max-deliveries 5 --exclusive true`
    Update(UpdateArgs),
    /// Delete a queue (refused while it holds messages, unless --force).
    Delete {
        name: String,
        /// Delete its messages too.
        #[arg(long)]
        force: bool,
    },
    /// Delete every message of the queue that no consumer holds.
    Purge { name: String },
    /// One queue's settings and depth.
    Stats { name: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// Deliveries before a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 10)]
    pub max_deliveries: i32,
    /// Delay before redelivery, ms.
    #[arg(long, default_value_t = 0)]
    pub redelivery_delay_ms: i64,
    /// Multiplier per further redelivery (exponential backoff).
    #[arg(long, default_value_t = 1.0)]
    pub redelivery_backoff: f64,
    /// Cap on the redelivery delay, ms.
    #[arg(long, default_value_t = 60_000)]
    pub redelivery_max_delay_ms: i64,
    /// Dead-letter queue (default DLQ.<name>).
    #[arg(long)]
    pub dead_letter_queue: Option<String>,
    /// Where expired messages go (default: dropped).
    #[arg(long)]
    pub expiry_queue: Option<String>,
    /// How long dedup ids are remembered, ms.
    #[arg(long, default_value_t = 86_400_000)]
    pub dedup_window_ms: i64,
    /// One active consumer at a time.
    #[arg(long)]
    pub exclusive: bool,
    /// Record every message sent to it and acknowledged from it in the audit log (ids only).
    #[arg(long)]
    pub audit_messages: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The queue to change.
    pub name: String,
    /// Deliveries before a message moves to the dead-letter queue.
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<i32>,
    /// Delay before redelivery, ms.
    #[arg(long, value_name = "N")]
    pub redelivery_delay_ms: Option<i64>,
    /// Multiplier per further redelivery (exponential backoff).
    #[arg(long, value_name = "F")]
    pub redelivery_backoff: Option<f64>,
    /// Cap on the redelivery delay, ms.
    #[arg(long, value_name = "N")]
    pub redelivery_max_delay_ms: Option<i64>,
    /// Dead-letter queue; '' for the default (DLQ.<name>).
    #[arg(long, value_name = "QUEUE")]
    pub dead_letter_queue: Option<String>,
    /// Where expired messages go; '' to drop them.
    #[arg(long, value_name = "QUEUE")]
    pub expiry_queue: Option<String>,
    /// How long dedup ids are remembered, ms.
    #[arg(long, value_name = "N")]
    pub dedup_window_ms: Option<i64>,
    /// One active consumer at a time: true or false.
    #[arg(long, value_name = "BOOL")]
    pub exclusive: Option<bool>,
    /// Record every message sent to it and acknowledged from it in the audit log: true or false.
    #[arg(long, value_name = "BOOL")]
    pub audit_messages: Option<bool>,
    /// Most messages the queue may hold (0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<i64>,
}

/// The store for queue and database commands: --database-url, or the development database.
pub fn store(cli: &Cli) -> anyhow::Result<Store> {
    let url = match &cli.database_url {
        Some(u) => u.clone(),
        None => {
            let port_file = cli.data_dir.join("pg").join("postbus.port");
            let port = std::fs::read_to_string(&port_file).with_context(|| {
                format!(
                    "no --database-url given and no development database at {} (start postbusd first, or pass --database-url)",
                    port_file.display()
                )
            })?;
            format!("postgresql://postgres@127.0.0.1:{}/postbus", port.trim())
        }
    };
    Ok(Store::connect(&StoreConfig::new(url))?)
}

pub async fn run(cli: &Cli, cmd: &QueueCmd) -> anyhow::Result<()> {
    // Opened in the arms, so that `queue update` says it needs --url, not a database.
    let opened = store(cli);
    match cmd {
        QueueCmd::Update(_) => {
            // A running broker keeps queue settings in memory: changing them behind its back
            // would not take effect, so this goes through the broker only.
            return Err(crate::api::needs_url("postbus queue update").into());
        }
        QueueCmd::List => {
            let store = opened?;
            let stats = store.destination_stats().await?;
            if cli.json {
                println!("{}", serde_json::to_string(&stats)?);
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header([
                "kind",
                "name",
                "ready",
                "in flight",
                "scheduled",
                "oldest ready (s)",
            ]);
            let now = postbus_model::now_ms();
            for s in stats {
                let age = s
                    .oldest_ready_ms
                    .map(|t| format!("{:.1}", (now - t) as f64 / 1000.0))
                    .unwrap_or_default();
                t.add_row([
                    s.kind,
                    s.name,
                    s.ready.to_string(),
                    s.in_flight.to_string(),
                    s.scheduled.to_string(),
                    age,
                ]);
            }
            println!("{t}");
        }
        QueueCmd::Create(a) => {
            let store = opened?;
            postbus_model::destination::validate_name(&a.name)?;
            let settings = QueueSettings {
                max_deliveries: a.max_deliveries,
                redelivery_delay_ms: a.redelivery_delay_ms,
                redelivery_backoff: a.redelivery_backoff,
                redelivery_max_delay_ms: a.redelivery_max_delay_ms,
                dead_letter_queue: a.dead_letter_queue.clone(),
                expiry_queue: a.expiry_queue.clone(),
                dedup_window_ms: a.dedup_window_ms,
                exclusive: a.exclusive,
                audit_messages: a.audit_messages,
                // Depth limits apply to subscriptions (broker.subscription_max_depth) for now.
                max_depth: 0,
            };
            let (row, created) = store
                .create_destination(DestinationKind::Queue, &a.name, &settings, false)
                .await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"name": row.name, "id": row.id, "created": created, "settings": row.settings})
                );
            } else if created {
                println!("created queue {}", row.name);
            }
            if created {
                audit(
                    &store,
                    "destination.created",
                    &a.name,
                    serde_json::json!({"settings": row.settings}),
                )
                .await?;
            } else if !cli.json {
                bail!(
                    "queue {} already exists (its settings were left as they are)",
                    row.name
                );
            }
        }
        QueueCmd::Delete { name, force } => {
            let store = opened?;
            let row = find(&store, name).await?;
            let deleted = store.delete_destination(row.id, *force).await?;
            audit(
                &store,
                "destination.deleted",
                name,
                serde_json::json!({"messages": deleted}),
            )
            .await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "deleted_messages": deleted})
                );
            } else {
                println!("deleted queue {name} ({deleted} messages); restart brokers that used it");
            }
        }
        QueueCmd::Purge { name } => {
            let store = opened?;
            let row = find(&store, name).await?;
            let n = store.purge(row.id).await?;
            audit(
                &store,
                "destination.purged",
                name,
                serde_json::json!({"messages": n}),
            )
            .await?;
            if cli.json {
                println!("{}", serde_json::json!({"name": name, "purged": n}));
            } else {
                println!("purged {n} messages from {name}");
            }
        }
        QueueCmd::Stats { name } => {
            let store = opened?;
            let row = find(&store, name).await?;
            let stats = store
                .destination_stats()
                .await?
                .into_iter()
                .find(|s| s.id == row.id);
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "settings": row.settings, "depth": stats})
                );
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header(["setting", "value"]);
            let s = &row.settings;
            let dlq = s
                .dead_letter_queue
                .clone()
                .unwrap_or_else(|| format!("DLQ.{name}"));
            for (k, v) in [
                ("max deliveries", s.max_deliveries.to_string()),
                ("redelivery delay (ms)", s.redelivery_delay_ms.to_string()),
                ("redelivery backoff", s.redelivery_backoff.to_string()),
                (
                    "redelivery max delay (ms)",
                    s.redelivery_max_delay_ms.to_string(),
                ),
                ("dead-letter queue", dlq),
                (
                    "expiry queue",
                    s.expiry_queue.clone().unwrap_or_else(|| "(drop)".into()),
                ),
                ("dedup window (ms)", s.dedup_window_ms.to_string()),
                ("exclusive", s.exclusive.to_string()),
                ("audit messages", s.audit_messages.to_string()),
            ] {
                t.add_row([k.to_owned(), v]);
            }
            if let Some(d) = stats {
                t.add_row(["ready".to_owned(), d.ready.to_string()]);
                t.add_row(["in flight".to_owned(), d.in_flight.to_string()]);
                t.add_row(["scheduled".to_owned(), d.scheduled.to_string()]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

async fn find(store: &Store, name: &str) -> anyhow::Result<postbus_store::DestinationRow> {
    store
        .find_destination(DestinationKind::Queue, name)
        .await?
        .with_context(|| format!("no queue named {name} (see `postbus queue list`)"))
}

/// Records an administrative change in the audit log, as the operating-system user who ran it.
async fn audit(
    store: &postbus_store::Store,
    kind: &str,
    queue: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let who = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    store
        .append_audit(
            None,
            &[postbus_store::AuditRecord::new(kind)
                .principal(who)
                .destination(format!("/queue/{queue}"))
                .detail(detail)],
        )
        .await?;
    Ok(())
}
