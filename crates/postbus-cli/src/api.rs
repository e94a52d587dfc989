//! `postbus --url URL queue ...`: the queue commands over the broker's HTTP admin API
//! (authenticated with `--token`, authorized by the broker's policies, audited by the broker)
//! instead of straight against PostgreSQL.

use anyhow::{Context, bail};
use comfy_table::Table;
use serde_json::{Value, json};

use crate::Cli;
use crate::queues::QueueCmd;

/// An admin API client.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn new(cli: &Cli, url: &str) -> Api {
        Api {
            base: url.trim_end_matches('/').to_owned(),
            token: cli
                .token
                .clone()
                .or_else(|| crate::messaging::passcode(cli)),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; a problem+json answer becomes an error carrying its detail.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the admin API at {url} (is the broker's HTTP listener there?)")
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = value["detail"]
                .as_str()
                .or_else(|| value["error"].as_str())
                .unwrap_or("no detail");
            let hint = match status.as_u16() {
                401 => " (give a token with --token or POSTBUS_TOKEN)",
                403 => " (ask for a policy that allows it: postbus policy check explains)",
                _ => "",
            };
            bail!(
                "{} {}: {detail}{hint}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        Ok(value)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(cli: &Cli, url: &str, cmd: &QueueCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::new(cli, url);
    match cmd {
        QueueCmd::List => {
            let v = api
                .call(Method::GET, "/v1/admin/destinations", None)
                .await?;
            if cli.json {
                println!("{}", v["destinations"]);
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header(["kind", "name", "ready", "in flight", "scheduled"]);
            for d in v["destinations"].as_array().into_iter().flatten() {
                t.add_row([
                    text(&d["kind"]),
                    text(&d["name"]),
                    text(&d["ready"]),
                    text(&d["in_flight"]),
                    text(&d["scheduled"]),
                ]);
            }
            println!("{t}");
        }
        QueueCmd::Create(a) => {
            let body = json!({
                "name": a.name,
                "settings": {
                    "max_deliveries": a.max_deliveries,
                    "redelivery_delay_ms": a.redelivery_delay_ms,
                    "redelivery_backoff": a.redelivery_backoff,
                    "redelivery_max_delay_ms": a.redelivery_max_delay_ms,
                    "dead_letter_queue": a.dead_letter_queue,
                    "expiry_queue": a.expiry_queue,
                    "dedup_window_ms": a.dedup_window_ms,
                    "exclusive": a.exclusive,
                    "audit_messages": a.audit_messages,
                }
            });
            let v = api
                .call(Method::POST, "/v1/admin/queues", Some(body))
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("created queue {}", text(&v["name"]));
            }
        }
        QueueCmd::Delete { name, force } => {
            let path = format!(
                "/v1/admin/queues/{name}{}",
                if *force { "?force=true" } else { "" }
            );
            let v = api.call(Method::DELETE, &path, None).await?;
            if cli.json {
                println!("{v}");
            } else {
                println!(
                    "deleted queue {name} ({} messages)",
                    text(&v["deleted_messages"])
                );
            }
        }
        QueueCmd::Purge { name } => {
            let v = api
                .call(
                    Method::POST,
                    &format!("/v1/admin/queues/{name}/purge"),
                    None,
                )
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("purged {} messages from {name}", text(&v["purged"]));
            }
        }
        QueueCmd::Stats { name } => {
            let v = api
                .call(Method::GET, &format!("/v1/admin/queues/{name}"), None)
                .await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header(["setting", "value"]);
            if let Some(s) = v["settings"].as_object() {
                for (k, val) in s {
                    t.add_row([k.replace('_', " "), text(val)]);
                }
            }
            for k in ["ready", "in_flight", "scheduled"] {
                t.add_row([k.replace('_', " "), text(&v["depth"][k])]);
            }
            println!("{t}");
        }
    }
    Ok(())
}
