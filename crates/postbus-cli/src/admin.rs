//! The broker's live state and its policies over the admin API (`--url`): `postbus connection
//! list|close`, `postbus consumer list`, `postbus subscription list|delete`, `postbus policy
//! reload`, `postbus policy check` against the policies in force, and `postbus audit query`.
//!
//! Connections and consumers are those of the broker answering (each broker knows its own);
//! subscriptions, policies and the audit log are shared through the database.

use clap::Subcommand;
use comfy_table::Table;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Cli;
use crate::api::{Api, text, utc_ms};

#[derive(Subcommand, Debug)]
pub enum ConnectionCmd {
    /// The STOMP connections of the broker answering: peer, principal, client id, version,
    /// subscriptions and messages in flight.
    List,
    /// Close one connection: the client gets an ERROR frame ("closed by an administrator") and
    /// its unacknowledged messages are redelivered.
    Close {
        /// The connection's id, as `postbus connection list` shows it.
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConsumerCmd {
    /// The consumers on the broker answering (of destinations you may administer): connection,
    /// subscription id, destination, ack mode, selector, prefetch and messages in flight.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SubscriptionCmd {
    /// Topic subscriptions (durable, shared and per-connection) with their depth.
    List,
    /// Delete a subscription and its messages (refused, exit 5, while a consumer is attached).
    Delete {
        /// The subscription's name, as `postbus subscription list` shows it
        /// (e.g. durable:CLIENT:NAME).
        name: String,
    },
}

fn print_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut t = Table::new();
    t.set_header(header);
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

pub async fn connection(cli: &Cli, cmd: &ConnectionCmd) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus connection")?;
    match cmd {
        ConnectionCmd::List => {
            let v = api.get(&["connections"]).await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            println!("connections to node {}:", text(&v["node"]));
            print_table(
                &[
                    "id",
                    "peer",
                    "principal",
                    "client id",
                    "version",
                    "connected (UTC)",
                    "subscriptions",
                    "in flight",
                ],
                items(&v, "connections").map(|c| {
                    vec![
                        text(&c["id"]),
                        text(&c["peer"]),
                        text(&c["principal"]),
                        text(&c["client_id"]),
                        text(&c["version"]),
                        utc_ms(&c["connected_at"]),
                        text(&c["subscriptions"]),
                        text(&c["in_flight"]),
                    ]
                }),
            );
        }
        ConnectionCmd::Close { id } => {
            let v = api
                .call(Method::DELETE, &["connections", &id.to_string()], &[], None)
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("closed connection {}", text(&v["closed"]));
            }
        }
    }
    Ok(())
}

pub async fn consumer(cli: &Cli, cmd: &ConsumerCmd) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus consumer")?;
    let ConsumerCmd::List = cmd;
    let v = api.get(&["consumers"]).await?;
    if cli.json {
        println!("{v}");
        return Ok(());
    }
    println!("consumers on node {}:", text(&v["node"]));
    print_table(
        &[
            "connection",
            "subscription",
            "destination",
            "ack",
            "selector",
            "prefetch",
            "in flight",
        ],
        items(&v, "consumers").map(|c| {
            vec![
                text(&c["connection"]),
                text(&c["subscription"]),
                text(&c["destination"]),
                text(&c["ack"]),
                text(&c["selector"]),
                text(&c["prefetch"]),
                text(&c["in_flight"]),
            ]
        }),
    );
    Ok(())
}

pub async fn subscription(cli: &Cli, cmd: &SubscriptionCmd) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus subscription")?;
    match cmd {
        SubscriptionCmd::List => {
            let v = api.get(&["subscriptions"]).await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            print_table(
                &[
                    "name",
                    "topic",
                    "selector",
                    "durable",
                    "shared",
                    "client id",
                    "ready",
                    "in flight",
                    "scheduled",
                ],
                items(&v, "subscriptions").map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["topic"]),
                        text(&s["selector"]),
                        text(&s["durable"]),
                        text(&s["shared"]),
                        text(&s["client_id"]),
                        text(&s["ready"]),
                        text(&s["in_flight"]),
                        text(&s["scheduled"]),
                    ]
                }),
            );
        }
        SubscriptionCmd::Delete { name } => {
            let v = api
                .call(Method::DELETE, &["subscriptions", name], &[], None)
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!(
                    "deleted subscription {} ({} messages)",
                    text(&v["deleted"]),
                    text(&v["messages"])
                );
            }
        }
    }
    Ok(())
}

/// `postbus policy reload`: the broker rereads its policy directory now.
pub async fn policy_reload(cli: &Cli) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus policy reload")?;
    let v = api
        .call(Method::POST, &["policies", "reload"], &[], None)
        .await?;
    if cli.json {
        println!("{v}");
    } else {
        println!("policies reloaded: {} rules in force", text(&v["rules"]));
    }
    Ok(())
}

/// `postbus --url URL policy check ...`: the decision of the policies in force on the broker.
/// Returns the exit code: 0 allowed, 1 denied.
pub async fn policy_check(
    cli: &Cli,
    url: &str,
    a: &crate::policy::CheckArgs,
) -> anyhow::Result<i32> {
    let api = Api::new(cli, url)?;
    let roles: Vec<&String> = a.roles.iter().filter(|r| !r.is_empty()).collect();
    let v = api
        .call(
            Method::POST,
            &["policies", "check"],
            &[],
            Some(json!({
                "principal": a.principal,
                "roles": roles,
                "action": a.action,
                "destination": a.destination,
            })),
        )
        .await?;
    let allowed = v["allowed"].as_bool().unwrap_or(false);
    if cli.json {
        println!("{v}");
    } else {
        let why = v["explanation"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text(&v["rule"]));
        println!(
            "{}: {} {} {} ({why})",
            if allowed { "ALLOW" } else { "DENY" },
            a.principal,
            a.action,
            a.destination,
        );
    }
    Ok(if allowed { 0 } else { 1 })
}

/// `postbus audit query`: audit records after a sequence number, as the broker reads them.
pub async fn audit_query(cli: &Cli, after: i64, limit: i64) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus audit query")?;
    let v = api
        .call(
            Method::GET,
            &["audit"],
            &[("after", after.to_string()), ("limit", limit.to_string())],
            None,
        )
        .await?;
    if cli.json {
        println!("{v}");
        return Ok(());
    }
    print_table(
        &[
            "seq",
            "at (UTC)",
            "kind",
            "principal",
            "destination",
            "detail",
        ],
        items(&v, "records").map(|r| {
            vec![
                text(&r["seq"]),
                text(&r["at"]),
                text(&r["kind"]),
                text(&r["principal"]),
                text(&r["destination"]),
                r["detail"].to_string(),
            ]
        }),
    );
    let records = v["records"].as_array().map_or(&[][..], Vec::as_slice);
    if let Some(last) = records.last().filter(|_| records.len() as i64 >= limit) {
        eprintln!(
            "more records may follow: continue with --after {}",
            text(&last["seq"])
        );
    }
    Ok(())
}
