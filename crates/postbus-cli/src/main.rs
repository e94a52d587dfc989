//! `postbus`: the command-line tool. Messaging commands talk STOMP to a broker; queue and
//! database commands talk to PostgreSQL directly (the HTTP admin API comes with the operations
//! work). Tables for people, `--json` for scripts; exit code 0 on success, 1 on failure, 2 on
//! bad usage.

mod api;
mod audit;
mod bench;
mod messaging;
mod policy;
mod queues;
mod selectors;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "postbus", version, about = "The postbus command-line tool", long_about = None)]
struct Cli {
    /// Broker STOMP address (host:port).
    #[arg(
        long,
        global = true,
        env = "POSTBUS_STOMP",
        default_value = "127.0.0.1:61613"
    )]
    stomp: String,
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
    /// The broker's HTTP admin API (e.g. http://127.0.0.1:8161): queue commands then go
    /// through it (authorized and audited by the broker) instead of straight to PostgreSQL.
    #[arg(long, global = true, env = "POSTBUS_URL")]
    url: Option<String>,
    /// Bearer token for the admin API. Default: the development token under --data-dir.
    #[arg(long, global = true, env = "POSTBUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    /// Manage queues: list, create, delete, purge, stats.
    #[command(subcommand)]
    Queue(queues::QueueCmd),
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
    /// The audit log: verify its hash chain, tail it, export it.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Check access policies: would a principal be allowed an action on a destination?
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

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
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
            let code = policy::run(&cli, p)?;
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
