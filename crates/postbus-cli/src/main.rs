//! `postbus`: the command-line tool. Messaging commands talk STOMP to a broker; queue,
//! database and audit commands talk to PostgreSQL directly, or, with `--url` (or `POSTBUS_URL`,
//! or `url` in the configuration file), to the broker's HTTP admin API, which authorizes and
//! audits them. The admin-only commands (`queue update`, `message`, `replay`, `connection`,
//! `consumer`, `subscription`, `policy reload`, `audit query`) need `--url`. Connection
//! settings come from flags, the environment, or `cli.toml` (`config.rs`). Tables for people,
//! `--json` for scripts.
//!
//! Exit codes, for scripts (also in docs/operations.md):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (and `policy check`: allowed) |
//! | 1 | failure reported by the broker or the database (and `policy check`: denied, `audit verify`: broken, `selector test`: a case failed) |
//! | 2 | bad usage: arguments (clap), a command that needs `--url` without one, a bad configuration file |
//! | 3 | not found (HTTP 404) |
//! | 4 | refused (HTTP 401 or 403) |
//! | 5 | conflict (HTTP 409: exists already, not empty, held by a consumer) |
//! | 6 | the broker could not be reached |

mod admin;
mod api;
mod audit;
mod bench;
mod config;
mod messages;
mod messaging;
mod policy;
mod queues;
mod selectors;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "postbus", version, about = "The postbus command-line tool", long_about = None)]
#[command(next_help_heading = "Global options")]
struct Cli {
    /// Broker STOMP address (host:port). Default: `stomp` in the configuration file, else
    /// 127.0.0.1:61613.
    #[arg(long, global = true, env = "POSTBUS_STOMP")]
    stomp: Option<String>,
    /// STOMP login (the principal).
    #[arg(long, global = true, env = "POSTBUS_LOGIN")]
    login: Option<String>,
    /// STOMP passcode: the JWT. Default: the development token a `postbusd --dev-token`
    /// wrote under --data-dir, if there is one.
    #[arg(long, global = true, env = "POSTBUS_PASSCODE", hide_env_values = true)]
    passcode: Option<String>,
    /// PostgreSQL URL for queue and database commands. Default: the development database that
    /// `postbusd` started under --data-dir.
    #[arg(long, global = true, env = "POSTBUS_DATABASE_URL")]
    database_url: Option<String>,
    /// Data directory of a development broker (to find its database).
    #[arg(long, global = true, default_value = ".postbus")]
    data_dir: PathBuf,
    /// The broker's HTTP admin API (e.g. http://127.0.0.1:8161): queue and policy commands
    /// then go through it (authorized and audited by the broker) instead of straight to
    /// PostgreSQL; the admin-only commands need it. Default: `url` in the configuration file.
    #[arg(long, global = true, env = "POSTBUS_URL")]
    url: Option<String>,
    /// Bearer token for the admin API. Default: `token` in the configuration file, else
    /// --passcode, else the development token under --data-dir.
    #[arg(long, global = true, env = "POSTBUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Configuration file (TOML with the keys url, token, stomp, database_url; flags and
    /// environment variables win over it). Default: $XDG_CONFIG_HOME/postbus/cli.toml, else
    /// ~/.config/postbus/cli.toml, when it exists.
    #[arg(long, global = true, env = "POSTBUS_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send messages to a destination (waits for the broker's receipt: the message is committed).
    Send(messaging::SendArgs),
    /// Receive messages from a queue and acknowledge them.
    Receive(messaging::ReceiveArgs),
    /// Manage queues: list, create, update, delete, purge, stats.
    #[command(subcommand)]
    Queue(queues::QueueCmd),
    /// Browse, show, delete and move the messages of a queue (admin API: needs --url).
    #[command(subcommand)]
    Message(messages::MessageCmd),
    /// Move the messages of a dead-letter queue back to the queues they came from (admin API:
    /// needs --url).
    ///
    /// Repeats the broker's replay call (1000 messages a call) until no matching message is
    /// left or --limit messages moved, with a progress bar on stderr when it is a terminal.
    /// Each message goes back to the queue its origin names (or to --to), deliverable, its
    /// delivery count reset. Messages with no origin queue stay and are counted as skipped;
    /// messages a consumer holds stay too. Prints how many moved and how many were skipped.
    Replay(messages::ReplayArgs),
    /// The broker's STOMP connections: list, close (admin API: needs --url).
    #[command(subcommand)]
    Connection(admin::ConnectionCmd),
    /// The broker's consumers (admin API: needs --url).
    #[command(subcommand)]
    Consumer(admin::ConsumerCmd),
    /// Topic subscriptions: list, delete (admin API: needs --url).
    #[command(subcommand)]
    Subscription(admin::SubscriptionCmd),
    /// Database schema.
    #[command(subcommand)]
    Db(DbCmd),
    /// Check JMS message selectors and run selector test cases.
    #[command(subcommand)]
    Selector(selectors::SelectorCmd),
    /// Print a shell completion script, e.g. `postbus completions bash > /etc/bash_completion.d/postbus`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The audit log: verify its hash chain, tail it, export it (database); query it (admin API).
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Access policies: would a principal be allowed an action on a destination? Reload them
    /// on the broker.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Load-test any STOMP 1.2 broker: producers, consumers, receipts, transactions, groups.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
enum DbCmd {
    /// Apply the schema migrations that are not applied yet.
    Migrate,
    /// Show the schema version.
    Version,
}

impl Cli {
    /// The broker's STOMP address: --stomp, POSTBUS_STOMP, the configuration file, or the
    /// default.
    fn stomp_addr(&self) -> &str {
        self.stomp.as_deref().unwrap_or("127.0.0.1:61613")
    }
}

fn main() {
    let mut cli = Cli::parse();
    if let Err(e) = config::apply(&mut cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(api::exit_code(&e));
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Send(a) => messaging::send(&cli, a).await,
        Cmd::Receive(a) => messaging::receive(&cli, a).await,
        Cmd::Queue(q) => match &cli.url {
            Some(url) => api::run(&cli, url, q).await,
            None => queues::run(&cli, q).await,
        },
        Cmd::Message(m) => messages::run(&cli, m).await,
        Cmd::Replay(a) => messages::replay(&cli, a).await,
        Cmd::Connection(c) => admin::connection(&cli, c).await,
        Cmd::Consumer(c) => admin::consumer(&cli, c).await,
        Cmd::Subscription(s) => admin::subscription(&cli, s).await,
        Cmd::Db(DbCmd::Migrate) => {
            let store = queues::store(&cli)?;
            let applied = store.migrate().await.context("migration failed")?;
            let version = store.schema_version().await?;
            if cli.json {
                let list: Vec<_> = applied
                    .iter()
                    .map(|(v, t)| serde_json::json!({"version": v, "title": t}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"applied": list, "version": version})
                );
            } else if applied.is_empty() {
                println!("schema is up to date (version {version})");
            } else {
                for (v, t) in &applied {
                    println!("applied V{v}__{t}");
                }
                println!("schema is at version {version}");
            }
            Ok(())
        }
        Cmd::Db(DbCmd::Version) => {
            let store = queues::store(&cli)?;
            let version = store.schema_version().await?;
            let latest = postbus_store::migrate::latest_version();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"version": version, "latest": latest})
                );
            } else {
                println!("schema version {version} (this postbus knows up to {latest})");
            }
            Ok(())
        }
        Cmd::Bench(a) => {
            let mut a = a.clone();
            if a.passcode.is_none() {
                a.passcode = messaging::passcode(&cli);
            }
            bench::run(&a).await
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: a closed pipe (`| head`) is not an error worth a panic.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "postbus", &mut script);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&script);
            Ok(())
        }
        Cmd::Audit(a) => {
            let code = audit::run(&cli, a).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Policy(p) => {
            let code = policy::run(&cli, p).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Selector(selectors::SelectorCmd::Register { selector }) => {
            let store = queues::store(&cli)?;
            let condition = store.register_selector(selector).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"selector": selector, "registered": true, "sql": condition})
                );
            } else {
                println!("registered for SQL receivers: {selector}");
                println!("  SQL: {condition}");
            }
            Ok(())
        }
        Cmd::Selector(s) => {
            let code = selectors::run(&cli, s)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}
