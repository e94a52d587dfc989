//! postbusd: the postbus broker daemon. Loads the configuration, connects to PostgreSQL (or,
//! with none configured, starts a private development cluster), applies migrations, and
//! serves STOMP and HTTP until SIGINT/SIGTERM.

mod config;
mod security;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use postbus_broker::Engine;
use postbus_store::{Store, StoreConfig};

/// The postbus message broker.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "POSTBUS_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL. Without one, a private PostgreSQL is started under --data-dir.
    #[arg(long)]
    database_url: Option<String>,
    /// STOMP listen address.
    #[arg(long)]
    stomp_listen: Option<String>,
    /// HTTP listen address (health and the HTTP messaging API). Empty: none.
    #[arg(long)]
    http_listen: Option<String>,
    /// Admit connections without credentials (development only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Development quickstart: make a key under --data-dir, mint a token for `dev` (role
    /// operator) and print it. Ignored when JWT keys are configured.
    #[arg(long)]
    dev_token: bool,
    /// A public key (PEM) that verifies JWTs; repeat for several.
    #[arg(long = "jwt-key", value_name = "FILE")]
    jwt_keys: Vec<PathBuf>,
    /// A JWKS file with the keys that verify JWTs.
    #[arg(long, value_name = "FILE")]
    jwt_jwks: Option<PathBuf>,
    /// Directory of policy files (default with JWT authentication: ./policies).
    #[arg(long = "policies", value_name = "DIR")]
    policies_dir: Option<PathBuf>,
    /// Export traces to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318). Off by default.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// TLS certificate chain (PEM): both listeners then speak TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates authenticate clients (mutual TLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Where development mode keeps its private PostgreSQL.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", env = "POSTBUS_LOG_FORMAT")]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let mut cfg = config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(u) = args.database_url {
        cfg.database.url = Some(u);
    }
    if let Some(l) = args.stomp_listen {
        cfg.stomp.listen = l;
    }
    if let Some(l) = args.http_listen {
        cfg.http.listen = l;
    }
    if args.allow_anonymous {
        cfg.security.allow_anonymous = true;
    }
    if args.dev_token {
        cfg.security.dev_token = true;
    }
    cfg.security.jwt_keys.extend(args.jwt_keys);
    if let Some(j) = args.jwt_jwks {
        cfg.security.jwt_jwks = Some(j);
    }
    if let Some(p) = args.policies_dir {
        cfg.security.policies_dir = Some(p);
    }
    if let Some(u) = args.otlp_endpoint {
        cfg.broker.otlp_endpoint = Some(u);
    }
    if let Some(c) = args.tls_cert {
        cfg.security.tls_cert = Some(c);
    }
    if let Some(k) = args.tls_key {
        cfg.security.tls_key = Some(k);
    }
    if let Some(ca) = args.tls_client_ca {
        cfg.security.tls_client_ca = Some(ca);
    }
    if let Some(d) = args.data_dir {
        cfg.dev.data_dir = d;
    }
    let dev_token = if !cfg.security.jwt_configured() && cfg.security.dev_token {
        Some(security::dev_quickstart(&mut cfg)?)
    } else {
        None
    };
    raise_open_files_limit(cfg.broker.max_connections);
    let security = security::build(&cfg.security)?;
    let tls = security::tls(&cfg.security)?;

    // The development cluster lives as long as this process (stopped on exit).
    let mut dev_cluster = None;
    let url = match cfg.database.url.clone() {
        Some(url) => url,
        None => {
            let cluster = start_dev_cluster(&cfg.dev.data_dir)?;
            let url = cluster.url("postbus");
            dev_cluster = Some(cluster);
            url
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(
        cfg,
        url,
        dev_cluster.is_some(),
        security,
        tls,
        dev_token,
    ));
    drop(runtime);
    drop(dev_cluster);
    result
}

/// Raises the soft limit on open files to the hard limit: every client connection takes a
/// file descriptor, and `broker.max_connections` (10,000 by default) is far above the soft
/// limit of 1,024 that many systems start a process with. Past the limit, accepts fail
/// (logged, retried) instead of being refused with an ERROR that names the limit.
fn raise_open_files_limit(max_connections: usize) {
    // Beside the connections: the database pool, listeners, log and metrics files.
    let wanted = max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-files limit is below broker.max_connections: connections past it fail \
             to be accepted; raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) \
             or lower broker.max_connections"
        ),
        Ok(limit) => tracing::info!(open_files = limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn start_dev_cluster(dir: &std::path::Path) -> anyhow::Result<postbus_pgctl::Cluster> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let pg_dir = dir.join("pg");
    tracing::info!(dir = %pg_dir.display(), "no database configured: starting a private PostgreSQL (development mode)");
    // A queue writes WAL for every message: space checkpoints out so they do not dominate.
    // The default 128 MB of shared buffers is smaller than a modest backlog: backends then
    // write dirty pages out themselves in the middle of claims (seen in EXPLAIN ANALYZE).
    // pg_stat_statements is there for `postbus` diagnostics and the benchmarks.
    let opts = postbus_pgctl::ClusterOptions {
        extra_conf: vec![
            ("max_wal_size".into(), "4GB".into()),
            ("checkpoint_timeout".into(), "15min".into()),
            ("shared_buffers".into(), "1GB".into()),
            // Autovacuum looks at tables once a minute by default: a busy queue table then
            // piles up a minute of dead rows (700,000 at 12,000 msgs/s), grows past a
            // gigabyte and stalls for seconds while vacuum and checkpoints catch up (measured
            // with ops/bench/soak.sh). Every 5 s keeps it small.
            ("autovacuum_naptime".into(), "5s".into()),
            (
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ),
        ],
        ..Default::default()
    };
    let mut cluster = postbus_pgctl::Cluster::open_or_init(&pg_dir, opts)
        .context("cannot start the development PostgreSQL; install PostgreSQL (apt-get install postgresql) or pass --database-url")?;
    cluster.set_stop_on_drop(true);
    cluster
        .create_database("postbus")
        .context("cannot create the postbus database")?;
    Ok(cluster)
}

async fn serve(
    cfg: config::Config,
    url: String,
    dev: bool,
    security: std::sync::Arc<postbus_broker::security::Security>,
    tls: Option<std::sync::Arc<postbus_broker::tls::Tls>>,
    dev_token: Option<String>,
) -> anyhow::Result<()> {
    let mut store_cfg = StoreConfig::new(url.clone());
    store_cfg.pool_size = cfg.database.pool_size;
    store_cfg.connect_timeout = std::time::Duration::from_millis(cfg.database.connect_timeout_ms);
    store_cfg.tcp_user_timeout = std::time::Duration::from_millis(cfg.database.tcp_user_timeout_ms);
    let store = Store::connect(&store_cfg)?;
    store.ping().await.context("cannot reach PostgreSQL")?;
    let applied = store
        .migrate()
        .await
        .context("applying schema migrations")?;
    for (v, t) in &applied {
        tracing::info!(version = v, title = %t, "migration applied");
    }
    let engine = Engine::start_secured(cfg.broker.clone(), store.clone(), security.clone()).await?;
    if let Some(dir) = security::policy_dir(&cfg.security) {
        postbus_broker::security::spawn_policy_reloader(
            security,
            dir,
            std::time::Duration::from_millis(cfg.security.policy_reload_ms.max(100)),
            {
                let engine = engine.clone();
                move |outcome| {
                    let record = match outcome {
                        Ok(rules) => postbus_store::AuditRecord::new("policy.reloaded")
                            .detail(serde_json::json!({"rules": rules})),
                        Err(why) => postbus_store::AuditRecord::new("policy.rejected")
                            .detail(serde_json::json!({"reason": why})),
                    };
                    engine.audit(record);
                }
            },
        );
    }

    let stomp = tokio::net::TcpListener::bind(&cfg.stomp.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for STOMP on {} (is another broker running?)",
                cfg.stomp.listen
            )
        })?;
    let stomp_addr = stomp.local_addr()?;
    let http_addr = if cfg.http.listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", cfg.http.listen))?;
        let addr = l.local_addr()?;
        tokio::spawn(postbus_broker::http::serve_with(
            l,
            engine.clone(),
            tls.clone(),
        ));
        Some(addr)
    };
    tokio::spawn(postbus_broker::server::serve_stomp_with(
        engine.clone(),
        stomp,
        tls.clone(),
    ));
    if let Some(tls) = tls.clone() {
        engine.metrics().set_tls_expiry(tls.not_after());
        tokio::spawn(reload_tls_on_sighup(tls, engine.clone()));
    }

    tracing::info!(stomp = %stomp_addr, http = ?http_addr, "postbus is ready");
    // The first lines a person sees: where it listens and how to try it.
    println!("postbus is ready");
    println!("  STOMP    {stomp_addr}");
    if let Some(a) = http_addr {
        println!("  HTTP     http://{a}/health/ready");
    }
    if dev {
        println!("  database {url} (private development PostgreSQL)");
    }
    if let Some(token) = &dev_token {
        println!(
            "  token    {} (development token for `dev`, role operator; also in {})",
            token,
            cfg.dev.data_dir.join("dev-token").display()
        );
    }
    println!("try it:");
    println!("  postbus --stomp {stomp_addr} send /queue/hello 'hello, postbus'");
    println!("  postbus --stomp {stomp_addr} receive /queue/hello --count 1");

    shutdown_signal().await;
    tracing::info!("shutting down: in-flight messages go back to their queues");
    engine.shutdown().await;
    Ok(())
}

/// SIGHUP reads the TLS certificate and key again (a renewed certificate takes effect for new
/// connections; on failure the old one stays and the error is logged).
async fn reload_tls_on_sighup(tls: std::sync::Arc<postbus_broker::tls::Tls>, engine: Engine) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => {
                engine.metrics().set_tls_expiry(tls.not_after());
                tracing::info!(not_after = tls.not_after(), "TLS certificate reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in force")
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
