//! The broker's HTTP admin API from the CLI: the client (bearer token, problem+json errors),
//! the typed error whose kind becomes the process exit code (see `main.rs`), helpers the
//! admin commands share for tables, and `postbus --url URL queue ...` (the queue commands
//! authenticated with `--token`, authorized by the broker's policies, audited by the broker,
//! instead of straight against PostgreSQL).

use comfy_table::Table;
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use crate::Cli;
use crate::queues::{QueueCmd, UpdateArgs};

/// Exit code: the broker or the database reported a failure (and every other failure).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad usage (clap's own code; also a missing `--url`, a bad configuration file).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: not found (HTTP 404).
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit code: refused (HTTP 401 or 403).
pub const EXIT_REFUSED: i32 = 4;
/// Exit code: conflict (HTTP 409).
pub const EXIT_CONFLICT: i32 = 5;
/// Exit code: the broker could not be reached.
pub const EXIT_UNREACHABLE: i32 = 6;

/// What went wrong talking to the admin API; [`ApiError::exit_code`] says how the process ends.
#[derive(Debug)]
pub enum ApiError {
    /// The command line or the configuration cannot work (exit 2).
    Usage(String),
    /// The broker answered with an error status: its problem's detail and what to do.
    Status {
        status: u16,
        reason: String,
        detail: String,
        hint: &'static str,
    },
    /// No answer from the broker (exit 6).
    Unreachable { url: String, reason: String },
    /// An answer that is not what the admin API sends (exit 1).
    Failed(String),
}

impl ApiError {
    /// The process exit code for this error (documented in `main.rs` and docs/operations.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            ApiError::Usage(_) => EXIT_USAGE,
            ApiError::Status { status: 404, .. } => EXIT_NOT_FOUND,
            ApiError::Status {
                status: 401 | 403, ..
            } => EXIT_REFUSED,
            ApiError::Status { status: 409, .. } => EXIT_CONFLICT,
            ApiError::Status { .. } | ApiError::Failed(_) => EXIT_FAILURE,
            ApiError::Unreachable { .. } => EXIT_UNREACHABLE,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Usage(m) | ApiError::Failed(m) => f.write_str(m),
            ApiError::Status {
                status,
                reason,
                detail,
                hint,
            } => write!(f, "{status} {reason}: {detail}{hint}"),
            ApiError::Unreachable { url, reason } => write!(
                f,
                "cannot reach the admin API at {url}: {reason} (is the broker running and is --url its HTTP listener?)"
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// The exit code for any error of a command: an [`ApiError`] anywhere in the chain decides,
/// everything else is a failure (1).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<ApiError>())
        .map_or(EXIT_FAILURE, ApiError::exit_code)
}

/// The usage error of a command (`what`, e.g. "postbus replay") that needs the admin API
/// when no URL was given: where to give one.
pub fn needs_url(what: &str) -> ApiError {
    ApiError::Usage(format!(
        "{what} goes through the broker's admin API: give its URL with --url http://HOST:PORT (the broker's HTTP listener), POSTBUS_URL, or `url = \"...\"` in {}",
        crate::config::default_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the file of --config".into())
    ))
}

/// An admin API client.
pub struct Api {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// The client for a command that needs the admin API (`what`, e.g. "postbus replay"):
    /// a usage error saying where to give the URL when there is none.
    pub fn from_cli(cli: &Cli, what: &str) -> Result<Api, ApiError> {
        match &cli.url {
            Some(url) => Api::new(cli, url),
            None => Err(needs_url(what)),
        }
    }

    pub fn new(cli: &Cli, url: &str) -> Result<Api, ApiError> {
        let base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ApiError::Usage(format!(
                    "--url {url:?} is not an HTTP URL: give the broker's HTTP listener, e.g. http://127.0.0.1:8161"
                ))
            })?;
        if base.scheme() == "https" {
            // The HTTP client is built without TLS.
            return Err(ApiError::Usage(format!(
                "--url {url:?}: this postbus speaks plain HTTP only; give the broker's plain HTTP listener, or reach a TLS listener through a local proxy"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: cli
                .token
                .clone()
                .or_else(|| crate::messaging::passcode(cli)),
            http,
        })
    }

    /// The URL of `/v1/admin/<segments...>` under the base (each segment percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1", "admin"]).extend(segments);
        }
        url
    }

    /// Sends a request; a problem+json answer becomes [`ApiError::Status`] with its detail.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(segments);
        let mut req = self.http.request(method, url.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ApiError::Unreachable {
                    url: self.base.to_string(),
                    reason: root_cause(&e),
                }
            } else {
                ApiError::Failed(format!("{url}: {}", root_cause(&e)))
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ApiError::Unreachable {
            url: self.base.to_string(),
            reason: format!("the answer broke off: {}", root_cause(&e)),
        })?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return value.ok_or_else(|| {
                ApiError::Failed(format!(
                    "{url} answered {status} with something that is not JSON (is --url the broker's HTTP listener?)"
                ))
            });
        }
        let detail = value
            .as_ref()
            .and_then(|v| v["detail"].as_str().or_else(|| v["error"].as_str()))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim();
                if text.is_empty() {
                    "no detail".to_owned()
                } else {
                    text.chars().take(300).collect()
                }
            });
        let hint = match status.as_u16() {
            401 => " (give a token with --token, POSTBUS_TOKEN or `token` in the config file)",
            403 => " (ask for a policy that allows it: `postbus policy check` explains)",
            _ => "",
        };
        Err(ApiError::Status {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_owned(),
            detail,
            hint,
        })
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Value, ApiError> {
        self.call(Method::GET, segments, &[], None).await
    }
}

/// The innermost cause of a reqwest error (its Display alone says only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A JSON value as a table cell: strings bare, null empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` UTC (empty for null, `-` for 0).
pub fn utc_ms(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return text(v);
    };
    if ms == 0 {
        return "-".into();
    }
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A message id as given on the command line: `123` or `ID:123`.
pub fn parse_message_id(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix("ID:").unwrap_or(s);
    match digits.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a message id: give the number (123) or the message-id (ID:123)"
        )),
    }
}

/// A queue's settings as a two-column table.
fn settings_table(settings: &Value) -> Table {
    let mut t = Table::new();
    t.set_header(["setting", "value"]);
    if let Some(s) = settings.as_object() {
        for (k, val) in s {
            t.add_row([k.replace('_', " "), text(val)]);
        }
    }
    t
}

/// The PATCH body of `queue update`: only the settings given; an empty queue name for the
/// dead-letter or expiry queue means null (the default: `DLQ.<name>`, or drop).
fn update_body(a: &UpdateArgs) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let queue = |q: &Option<String>| {
        q.as_ref()
            .map(|q| if q.is_empty() { Value::Null } else { json!(q) })
    };
    put("max_deliveries", a.max_deliveries.map(|v| json!(v)));
    put(
        "redelivery_delay_ms",
        a.redelivery_delay_ms.map(|v| json!(v)),
    );
    put("redelivery_backoff", a.redelivery_backoff.map(|v| json!(v)));
    put(
        "redelivery_max_delay_ms",
        a.redelivery_max_delay_ms.map(|v| json!(v)),
    );
    put("dead_letter_queue", queue(&a.dead_letter_queue));
    put("expiry_queue", queue(&a.expiry_queue));
    put("dedup_window_ms", a.dedup_window_ms.map(|v| json!(v)));
    put("exclusive", a.exclusive.map(|v| json!(v)));
    put("audit_messages", a.audit_messages.map(|v| json!(v)));
    put("max_depth", a.max_depth.map(|v| json!(v)));
    m
}

/// `postbus --url URL queue ...`.
pub async fn run(cli: &Cli, url: &str, cmd: &QueueCmd) -> anyhow::Result<()> {
    let api = Api::new(cli, url)?;
    match cmd {
        QueueCmd::List => {
            let v = api.get(&["destinations"]).await?;
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
            let v = api.call(Method::POST, &["queues"], &[], Some(body)).await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("created queue {}", text(&v["name"]));
            }
        }
        QueueCmd::Update(a) => {
            let body = update_body(a);
            if body.is_empty() {
                return Err(ApiError::Usage(format!(
                    "nothing to change on queue {}: give at least one setting, e.g. --max-deliveries 5 (see `postbus queue update --help`)",
                    a.name
                ))
                .into());
            }
            let v = api
                .call(
                    Method::PATCH,
                    &["queues", &a.name],
                    &[],
                    Some(Value::Object(body)),
                )
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("updated queue {}", text(&v["name"]));
                println!("{}", settings_table(&v["settings"]));
            }
        }
        QueueCmd::Delete { name, force } => {
            let query = if *force {
                vec![("force", "true".to_owned())]
            } else {
                vec![]
            };
            let v = api
                .call(Method::DELETE, &["queues", name], &query, None)
                .await?;
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
                .call(Method::POST, &["queues", name, "purge"], &[], None)
                .await?;
            if cli.json {
                println!("{v}");
            } else {
                println!("purged {} messages from {name}", text(&v["purged"]));
            }
        }
        QueueCmd::Stats { name } => {
            let v = api.get(&["queues", name]).await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            let mut t = settings_table(&v["settings"]);
            for k in ["ready", "in_flight", "scheduled"] {
                t.add_row([k.replace('_', " "), text(&v["depth"][k])]);
            }
            println!("{t}");
        }
    }
    Ok(())
}
