//! `postbus send` and `postbus receive`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use postbus_client::{Client, ConnectOptions};

use crate::Cli;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Destination, e.g. /queue/orders (a bare name is a queue).
    pub destination: String,
    /// Message body (or use --file).
    pub body: Option<String>,
    /// Read the body from a file ('-' for standard input).
    #[arg(long, conflicts_with = "body")]
    pub file: Option<String>,
    /// Extra header NAME=VALUE (repeatable): properties, priority=9, ttl=60000, dedup-id=...
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Send the message this many times.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Queue, e.g. /queue/orders.
    pub destination: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Stop when no message arrives for this long (ms).
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Leave the messages on the queue: receive, print, then disconnect without acknowledging
    /// (they are redelivered).
    #[arg(long)]
    pub no_ack: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// The passcode to send: the one given, else the development token under --data-dir.
pub fn passcode(cli: &Cli) -> Option<String> {
    cli.passcode.clone().or_else(|| {
        std::fs::read_to_string(cli.data_dir.join("dev-token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
}

pub async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let opts = ConnectOptions {
        login: cli.login.clone(),
        passcode: passcode(cli),
        ..Default::default()
    };
    Ok(Client::connect(cli.stomp_addr(), &opts).await?)
}

fn destination(d: &str) -> String {
    if d.starts_with('/') {
        d.to_owned()
    } else {
        format!("/queue/{d}")
    }
}

pub async fn send(cli: &Cli, a: &SendArgs) -> anyhow::Result<()> {
    let body: Vec<u8> = match (&a.body, &a.file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) if f == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("cannot read {f}"))?,
        (None, None) => anyhow::bail!("give a body or --file FILE"),
    };
    let mut c = connect(cli).await?;
    let dest = destination(&a.destination);
    let headers: Vec<(&str, &str)> = a
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for _ in 0..a.count {
        let receipt = c.send(&dest, body.clone(), &headers).await?;
        let id = receipt.header("message-id").unwrap_or("");
        let duplicate = receipt.header("duplicate") == Some("true");
        if cli.json {
            println!(
                "{}",
                serde_json::json!({"destination": dest, "message_id": id, "duplicate": duplicate})
            );
        } else if duplicate {
            println!("duplicate of {id} (dedup-id already accepted): not enqueued again");
        } else {
            println!("sent {id} to {dest}");
        }
    }
    c.disconnect().await?;
    Ok(())
}

pub async fn receive(cli: &Cli, a: &ReceiveArgs) -> anyhow::Result<()> {
    let mut c = connect(cli).await?;
    let dest = destination(&a.destination);
    let prefetch = a.count.clamp(1, 1000).to_string();
    c.subscribe(
        &dest,
        "cli",
        "client-individual",
        &[("prefetch", prefetch.as_str())],
    )
    .await?;
    let mut got = 0;
    while got < a.count {
        let Some(m) = c.recv_timeout(Duration::from_millis(a.timeout_ms)).await? else {
            break;
        };
        got += 1;
        if cli.json {
            let headers: serde_json::Map<String, serde_json::Value> = m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            println!(
                "{}",
                serde_json::json!({"headers": headers, "body": String::from_utf8_lossy(&m.body)})
            );
        } else {
            println!(
                "{} {} (delivery {}): {}",
                m.header("message-id").unwrap_or(""),
                m.header("destination").unwrap_or(""),
                m.header("JMSXDeliveryCount").unwrap_or("1"),
                String::from_utf8_lossy(&m.body)
            );
        }
        if !a.no_ack {
            c.ack(&m, None).await?;
        }
    }
    if got == 0 && !cli.json {
        eprintln!("no message within {} ms", a.timeout_ms);
    }
    c.disconnect().await?;
    Ok(())
}
