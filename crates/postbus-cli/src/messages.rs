//! `postbus message list|show|delete|move` and `postbus replay`: operators' work on the
//! messages of a queue or a dead-letter queue, over the broker's admin API (`--url`).
//!
//! A listing pages through `GET /v1/admin/queues/{name}/messages` (1000 a page at most);
//! a replay repeats `POST /v1/admin/queues/{name}/replay` (1000 a call) until the broker says
//! no matching message is left or `--limit` is reached, with a progress bar on stderr.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Cli;
use crate::api::{Api, parse_message_id, text, utc_ms};

/// Most messages one listing page or one replay call asks for.
const PAGE: u64 = 1000;

#[derive(Subcommand, Debug)]
pub enum MessageCmd {
    /// List the messages of a queue (any state), in id order, without their bodies.
    ///
    /// Shows at most --limit messages (paging through the admin API as needed); --all follows
    /// every page. Works on dead-letter queues too (`postbus message list DLQ.orders`), where
    /// the origin column says where a message came from.
    List {
        /// The queue, e.g. orders or DLQ.orders.
        queue: String,
        /// Only messages this JMS selector accepts, e.g. "amount > 1000 AND region = 'EU'".
        #[arg(long)]
        selector: Option<String>,
        /// Most messages to show.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "all")]
        limit: u64,
        /// Start after this message id (what the previous listing said to continue with).
        #[arg(long, value_name = "ID", value_parser = parse_message_id)]
        after: Option<i64>,
        /// Every message: follow the pages to the end.
        #[arg(long)]
        all: bool,
    },
    /// Show one message: its headers, its properties and its body.
    Show {
        /// The queue holding it.
        queue: String,
        /// The message's id: 123 or ID:123.
        #[arg(value_parser = parse_message_id)]
        id: i64,
    },
    /// Delete one message (refused, exit 5, while a consumer holds it).
    Delete {
        /// The queue holding it.
        queue: String,
        /// The message's id: 123 or ID:123.
        #[arg(value_parser = parse_message_id)]
        id: i64,
    },
    /// Move one message to another, existing queue (refused, exit 5, while a consumer holds it).
    Move {
        /// The queue holding it.
        queue: String,
        /// The message's id: 123 or ID:123.
        #[arg(value_parser = parse_message_id)]
        id: i64,
        /// The queue to move it to (it must exist).
        #[arg(long, value_name = "QUEUE")]
        to: String,
    },
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The dead-letter queue, e.g. DLQ.orders.
    pub dlq: String,
    /// Only messages this JMS selector accepts.
    #[arg(long)]
    pub selector: Option<String>,
    /// Most messages to move (default: all that match).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Move them to this queue instead of the queue each came from.
    #[arg(long, value_name = "QUEUE")]
    pub to: Option<String>,
}

pub async fn run(cli: &Cli, cmd: &MessageCmd) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus message")?;
    match cmd {
        MessageCmd::List {
            queue,
            selector,
            limit,
            after,
            all,
        } => list(cli, &api, queue, selector.as_deref(), *limit, *after, *all).await,
        MessageCmd::Show { queue, id } => {
            let v = api
                .get(&["queues", queue, "messages", &id.to_string()])
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                show(&v);
            }
            Ok(())
        }
        MessageCmd::Delete { queue, id } => {
            let v = api
                .call(
                    Method::DELETE,
                    &["queues", queue, "messages", &id.to_string()],
                    &[],
                    None,
                )
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("deleted message {} from {queue}", text(&v["deleted"]));
            }
            Ok(())
        }
        MessageCmd::Move { queue, id, to } => {
            let v = api
                .call(
                    Method::POST,
                    &["queues", queue, "messages", &id.to_string(), "move"],
                    &[],
                    Some(json!({ "to": to })),
                )
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!(
                    "moved message {} from {queue} to {}",
                    text(&v["moved"]),
                    text(&v["to"])
                );
            }
            Ok(())
        }
    }
}

async fn list(
    cli: &Cli,
    api: &Api,
    queue: &str,
    selector: Option<&str>,
    limit: u64,
    mut after: Option<i64>,
    all: bool,
) -> anyhow::Result<()> {
    let cap = (!all).then_some(limit);
    let mut messages: Vec<Value> = Vec::new();
    let mut next_after = None;
    loop {
        let page = cap.map_or(PAGE, |c| (c - messages.len() as u64).min(PAGE));
        if page == 0 {
            break;
        }
        let mut query = vec![("limit", page.to_string())];
        if let Some(s) = selector {
            query.push(("selector", s.to_owned()));
        }
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let v = api
            .call(Method::GET, &["queues", queue, "messages"], &query, None)
            .await?;
        let got = v["messages"].as_array().cloned().unwrap_or_default();
        next_after = v["next_after"].as_i64();
        let empty = got.is_empty();
        messages.extend(got);
        match next_after {
            // An empty page that still says "more" (a selector that rejected a whole page)
            // goes on from where the broker got to.
            Some(n) if after != Some(n) || !empty => after = Some(n),
            _ => break,
        }
    }
    if cli.json {
        println!(
            "{}",
            json!({"messages": messages, "next_after": next_after})
        );
        return Ok(());
    }
    if messages.is_empty() {
        println!(
            "no messages in {queue}{}",
            if selector.is_some() {
                " that the selector accepts"
            } else {
                ""
            }
        );
    } else {
        let mut t = Table::new();
        t.set_header([
            "id",
            "state",
            "priority",
            "delivery count",
            "timestamp (UTC)",
            "group",
            "size",
            "origin",
        ]);
        for m in &messages {
            t.add_row([
                text(&m["id"]),
                text(&m["state"]).replace('_', " "),
                text(&m["priority"]),
                text(&m["delivery_count"]),
                utc_ms(&m["timestamp"]),
                text(&m["group_id"]),
                text(&m["size"]),
                text(&m["origin"]),
            ]);
        }
        println!("{t}");
    }
    if let Some(n) = next_after {
        eprintln!("more messages follow: continue with --after {n}, or list them all with --all");
    }
    Ok(())
}

/// One message for people: a header table, a property table, the body.
fn show(v: &Value) {
    let mut t = Table::new();
    t.set_header(["header", "value"]);
    for (k, label) in [
        ("id", "id"),
        ("message_id", "message id"),
        ("state", "state"),
        ("priority", "priority"),
        ("persistent", "persistent"),
        ("timestamp", "timestamp (UTC)"),
        ("expires", "expires (UTC)"),
        ("delivery_count", "delivery count"),
        ("group_id", "group"),
        ("group_seq", "group sequence"),
        ("correlation_id", "correlation id"),
        ("reply_to", "reply to"),
        ("type", "type"),
        ("content_type", "content type"),
        ("user_id", "user id"),
        ("origin", "origin"),
        ("dead_letter_reason", "dead-letter reason"),
        ("last_error", "last error"),
        ("size", "size (bytes)"),
    ] {
        let value = match k {
            "timestamp" | "expires" => utc_ms(&v[k]),
            "state" => text(&v[k]).replace('_', " "),
            _ => text(&v[k]),
        };
        t.add_row([label.to_owned(), value]);
    }
    println!("{t}");
    if let Some(props) = v["properties"].as_object().filter(|p| !p.is_empty()) {
        let mut t = Table::new();
        t.set_header(["property", "value"]);
        for (k, val) in props {
            t.add_row([k.clone(), val.to_string()]);
        }
        println!("{t}");
    }
    if let Some(body) = v["body"].as_str() {
        println!("body:");
        println!("{body}");
    } else if let Some(b64) = v["body_base64"].as_str() {
        println!("body (not UTF-8, base64):");
        println!("{b64}");
    }
}

/// `postbus replay DLQ`: calls the replay endpoint until nothing matching is left (or the
/// limit is reached), showing progress against the queue's ready depth.
pub async fn replay(cli: &Cli, a: &ReplayArgs) -> anyhow::Result<()> {
    let api = Api::from_cli(cli, "postbus replay")?;
    let depth = api.get(&["queues", &a.dlq]).await?;
    let ready = depth["depth"]["ready"].as_u64().unwrap_or(0);
    let len = a.limit.map_or(ready, |l| l.min(ready));
    let bar = if cli.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} messages {msg} ({elapsed}, {eta} left)",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("from {}", a.dlq));
        bar
    };
    let mut moved: u64 = 0;
    let mut skipped: u64 = 0;
    let mut more = true;
    let mut calls = 0u64;
    let mut stalled = false;
    // Where the next call starts, when the broker says (`next_after`); the contract's calls
    // without it start from the queue's first message each time.
    let mut after: Option<i64> = None;
    while more {
        let want = a.limit.map_or(PAGE, |l| (l - moved).min(PAGE));
        if want == 0 {
            break;
        }
        let mut body = json!({ "limit": want });
        if let Some(s) = &a.selector {
            body["selector"] = json!(s);
        }
        if let Some(t) = &a.to {
            body["to"] = json!(t);
        }
        if let Some(n) = after {
            body["after"] = json!(n);
        }
        let r = api
            .call(Method::POST, &["queues", &a.dlq, "replay"], &[], Some(body))
            .await;
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                bar.abandon();
                if moved > 0 {
                    eprintln!("{moved} messages were moved before this error");
                }
                return Err(e.into());
            }
        };
        calls += 1;
        let n = v["moved"].as_u64().unwrap_or(0);
        let s = v["skipped"].as_u64().unwrap_or(0);
        moved += n;
        more = v["more"].as_bool().unwrap_or(false);
        match v.get("next_after") {
            // The next call goes on after this one: each skipped message is counted once.
            Some(next) => {
                skipped += s;
                after = next.as_i64();
            }
            // The next call starts over, and counts the skipped messages (which stay, first in
            // id order) again: the largest count is the total.
            None => skipped = skipped.max(s),
        }
        let done = moved + skipped;
        if done > bar.length().unwrap_or(0) {
            bar.set_length(done);
        }
        bar.set_position(done);
        if n == 0 && more {
            // Matching messages remain but none could move (held by consumers, or with no
            // queue to go back to): another call would do the same.
            stalled = true;
            break;
        }
    }
    bar.finish_and_clear();
    if cli.json {
        println!(
            "{}",
            json!({"queue": a.dlq, "moved": moved, "skipped": skipped, "more": more, "calls": calls})
        );
        return Ok(());
    }
    let mut t = Table::new();
    t.set_header(["queue", "moved", "skipped (no origin queue)", "more left"]);
    t.add_row([
        a.dlq.clone(),
        moved.to_string(),
        skipped.to_string(),
        more.to_string(),
    ]);
    println!("{t}");
    if stalled {
        eprintln!(
            "matching messages are left that could not be moved now (a consumer holds them, or they have no queue to go back to: give --to QUEUE)"
        );
    } else if more {
        eprintln!("stopped at --limit; run again to move more");
    }
    Ok(())
}
