//! `postbus audit`: verify the audit log's hash chain, show its last records, export records
//! for SIEM tools. Works on the database directly (`--database-url`), so an auditor need not
//! trust the broker: every hash is recomputed here. `postbus audit query` reads records
//! through the broker's admin API instead (`--url`), for those who may not reach the database.

use anyhow::bail;
use clap::Subcommand;
use comfy_table::Table;
use postbus_store::AuditEntry;
use postbus_store::audit::to_hex;

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Recompute the whole chain; exit code 1 and the first broken record when it is broken.
    Verify {
        /// Also require this anchor (SEQ:HASH, as a previous verify printed) to still hold.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// The last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: i64,
    },
    /// Records since a time (anything PostgreSQL reads as a timestamp, e.g. 2026-11-25T08:00:00Z),
    /// one JSON object per line with `--json`.
    Export {
        #[arg(long)]
        since: String,
    },
    /// Records after a sequence number, read through the broker's admin API (needs --url and
    /// the `admin` action on every destination); no hash is checked here.
    Query {
        /// Records with a sequence number above this one.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: i64,
        /// Most records (the broker caps it at 10000).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: i64,
    },
}

pub async fn run(cli: &Cli, cmd: &AuditCmd) -> anyhow::Result<i32> {
    // Opened in the arms: `audit query` needs no database.
    let opened = crate::queues::store(cli);
    match cmd {
        AuditCmd::Query { after, limit } => {
            crate::admin::audit_query(cli, *after, *limit).await?;
            Ok(0)
        }
        AuditCmd::Verify { anchor } => {
            let store = opened?;
            let json = cli.json;
            let v = store
                .verify_audit(|n| {
                    if !json && n > 0 && n % 100_000 == 0 {
                        eprintln!("verified {n} records...");
                    }
                })
                .await?;
            let mut anchor_broken = None;
            if let Some(a) = anchor {
                let Some((seq, hash)) = a.split_once(':') else {
                    bail!("--anchor must be SEQ:HASH, as `postbus audit verify` prints it");
                };
                let seq: i64 = seq.parse()?;
                let found = store.audit_page(seq - 1, 1).await?;
                match found.first() {
                    Some(e) if e.seq == seq && to_hex(&e.hash) == hash => {}
                    _ => {
                        anchor_broken = Some(format!(
                            "the anchor {a} no longer holds: the chain was rewritten"
                        ))
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "records": v.records,
                        "head_seq": v.head_seq,
                        "head_hash": v.head_hash,
                        "ok": v.broken.is_none() && anchor_broken.is_none(),
                        "broken_at": v.broken.as_ref().map(|b| b.0),
                        "reason": v.broken.as_ref().map(|b| b.1.clone()).or(anchor_broken.clone()),
                    })
                );
            } else if let Some((seq, why)) = &v.broken {
                println!("BROKEN at record {seq}: {why}");
                println!(
                    "the chain is intact up to record {} (hash {})",
                    v.head_seq, v.head_hash
                );
            } else if let Some(why) = &anchor_broken {
                println!("BROKEN: {why}");
            } else {
                println!("audit log intact: {} records", v.records);
                println!(
                    "anchor (keep it outside the database): {}:{}",
                    v.head_seq, v.head_hash
                );
            }
            Ok(if v.broken.is_none() && anchor_broken.is_none() {
                0
            } else {
                1
            })
        }
        AuditCmd::Tail { count } => {
            let store = opened?;
            print(cli, &store.audit_tail(*count).await?);
            Ok(0)
        }
        AuditCmd::Export { since } => {
            let store = opened?;
            let mut after = store.audit_seq_since(since).await? - 1;
            loop {
                let page = store.audit_page(after, 10_000).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                print(cli, &page);
            }
            Ok(0)
        }
    }
}

fn print(cli: &Cli, entries: &[AuditEntry]) {
    if cli.json {
        for e in entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
        return;
    }
    let mut t = Table::new();
    t.set_header([
        "seq",
        "at (UTC)",
        "kind",
        "principal",
        "destination",
        "detail",
    ]);
    for e in entries {
        t.add_row([
            e.seq.to_string(),
            e.at.clone(),
            e.kind.clone(),
            e.principal.clone().unwrap_or_default(),
            e.destination.clone().unwrap_or_default(),
            e.detail.to_string(),
        ]);
    }
    println!("{t}");
}
