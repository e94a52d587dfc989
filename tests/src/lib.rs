//! The postbus integration-test harness.
//!
//! - One private PostgreSQL cluster per test binary (initdb + pg_ctl, as the postgres user when
//!   we are root, in a temp dir, on a free port), or the server named by `DATABASE_URL`.
//!   A small watchdog process stops the private cluster when the test binary exits, however
//!   it exits.
//! - Every test gets a fresh database in it, so tests are independent and run in parallel.
//! - [`TestBroker`] runs a broker in-process on a random port; [`BrokerProcess`] runs the real
//!   `postbusd` binary, for tests that kill it.

pub mod checker;
pub mod fault;
pub mod proxy;
pub mod workload;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use postbus_broker::{BrokerConfig, Engine};
use postbus_client::{Client, ConnectOptions};
use postbus_model::{DestinationKind, QueueSettings};
use postbus_pgctl::{Cluster, ClusterOptions};
use postbus_store::{Store, StoreConfig};

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

struct Server {
    /// URL of the maintenance database, for CREATE DATABASE.
    admin_url: String,
    /// Kept alive for the whole test binary; the watchdog stops it at exit.
    _cluster: Option<Mutex<Cluster>>,
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("POSTBUS_TEST_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Server {
                admin_url: url,
                _cluster: None,
            };
        }
        let opts = ClusterOptions {
            fsync: false,
            ..Default::default()
        };
        let cluster =
            Cluster::temporary(opts).expect("start a private PostgreSQL cluster for the tests");
        spawn_watchdog(&cluster);
        Server {
            admin_url: cluster.url("postgres"),
            _cluster: Some(Mutex::new(cluster)),
        }
    })
}

/// Stops the cluster and removes its directory once this process is gone (statics are never
/// dropped, so Drop cannot do it).
fn spawn_watchdog(cluster: &Cluster) {
    let pg_ctl = cluster.binaries().tool("pg_ctl");
    let data = cluster.data_dir().to_path_buf();
    let root = data
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| data.clone());
    let as_postgres = is_root();
    let stop = if as_postgres {
        format!(
            "runuser -u postgres -- {} stop -m immediate -D {} >/dev/null 2>&1",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} stop -m immediate -D {} >/dev/null 2>&1",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf {root}",
        pid = std::process::id(),
        root = root.display()
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Whether this process runs as root (PostgreSQL then runs as `postgres`; network namespaces
/// and nft tables are allowed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A fresh, empty database for one test; returns its URL.
pub async fn fresh_database() -> String {
    let server = server();
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let (client, conn) = tokio_postgres_connect(&server.admin_url).await;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    task.abort();
    replace_database(&server.admin_url, &name)
}

async fn tokio_postgres_connect(
    url: &str,
) -> (
    postbus_store::PgClient,
    impl std::future::Future<Output = Result<(), postbus_store::PgError>> + Send + 'static,
) {
    postbus_store::connect_raw(url)
        .await
        .expect("connect to the test PostgreSQL")
}

/// Runs SQL on a database directly (to inspect or tamper with state in tests).
pub async fn sql(url: &str, query: &str) -> Vec<Vec<Option<String>>> {
    let (client, conn) = tokio_postgres_connect(url).await;
    let task = tokio::spawn(conn);
    let mut out = Vec::new();
    for msg in client.simple_query(query).await.expect("sql") {
        if let postbus_store::SimpleQueryMessage::Row(row) = msg {
            out.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    task.abort();
    out
}

/// The same URL with another database name.
fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A migrated store on a fresh database.
pub async fn fresh_store() -> (String, Store) {
    let url = fresh_database().await;
    let store = Store::connect(&StoreConfig::new(url.clone())).expect("store");
    store.migrate().await.expect("migrate");
    (url, store)
}

/// Broker settings suited to tests: quick polls and short leases.
/// A frame's body as text (tests' messages are text).
pub fn body(f: &postbus_stomp::Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

/// The single number a `SELECT count(*) ...` returns.
pub async fn count(url: &str, query: &str) -> i64 {
    sql(url, query).await[0][0]
        .as_deref()
        .expect("a count")
        .parse()
        .expect("a number")
}

pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        heartbeat_ms: 0,
        poll_interval_ms: 100,
        node_lease_ms: 3_000,
        write_retry_ms: 2_000,
        ..BrokerConfig::default()
    }
}

/// A broker running inside the test process.
pub struct TestBroker {
    pub addr: String,
    /// The HTTP API's base URL, e.g. `http://127.0.0.1:40123`.
    pub http: String,
    pub engine: Engine,
    pub store: Store,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// A broker on a fresh database.
    pub async fn start() -> TestBroker {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: BrokerConfig) -> TestBroker {
        let (url, store) = fresh_store().await;
        Self::on_database(&url, store, config).await
    }

    /// A broker on a fresh database that authenticates and authorizes with `security`.
    pub async fn start_secured(
        config: BrokerConfig,
        security: std::sync::Arc<postbus_broker::security::Security>,
    ) -> TestBroker {
        let (url, store) = fresh_store().await;
        Self::on_database_secured(&url, store, config, security).await
    }

    /// Another broker on an existing database (several brokers on one database).
    pub async fn on_database(url: &str, store: Store, config: BrokerConfig) -> TestBroker {
        Self::on_database_secured(
            url,
            store,
            config,
            std::sync::Arc::new(postbus_broker::security::Security::anonymous()),
        )
        .await
    }

    /// A broker on a fresh database whose STOMP and HTTP listeners speak TLS only.
    pub async fn start_tls(
        config: BrokerConfig,
        security: std::sync::Arc<postbus_broker::security::Security>,
        tls: std::sync::Arc<postbus_broker::tls::Tls>,
    ) -> TestBroker {
        let (url, store) = fresh_store().await;
        Self::listen(&url, store, config, security, Some(tls)).await
    }

    async fn on_database_secured(
        url: &str,
        store: Store,
        config: BrokerConfig,
        security: std::sync::Arc<postbus_broker::security::Security>,
    ) -> TestBroker {
        Self::listen(url, store, config, security, None).await
    }

    async fn listen(
        url: &str,
        store: Store,
        config: BrokerConfig,
        security: std::sync::Arc<postbus_broker::security::Security>,
        tls: Option<std::sync::Arc<postbus_broker::tls::Tls>>,
    ) -> TestBroker {
        let engine = Engine::start_secured(config, store.clone(), security)
            .await
            .expect("engine start");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(postbus_broker::server::serve_stomp_with(
            engine.clone(),
            listener,
            tls.clone(),
        ));
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let http = format!("{scheme}://{}", http_listener.local_addr().expect("addr"));
        tokio::spawn(postbus_broker::http::serve_with(
            http_listener,
            engine.clone(),
            tls,
        ));
        TestBroker {
            addr,
            http,
            engine,
            store,
            url: url.to_owned(),
            server,
        }
    }

    /// Two brokers (nodes `NAME-a` and `NAME-b`) on one fresh database, both with `config`.
    pub async fn pair(name: &str, config: BrokerConfig) -> (TestBroker, TestBroker) {
        let a = Self::start_with(BrokerConfig {
            node_name: Some(format!("{name}-a")),
            ..config.clone()
        })
        .await;
        let b_config = BrokerConfig {
            node_name: Some(format!("{name}-b")),
            ..config
        };
        let b = Self::on_database(&a.url, a.store.clone(), b_config).await;
        (a, b)
    }

    pub async fn client(&self) -> Client {
        connect(&self.addr).await
    }

    pub async fn client_with(&self, opts: ConnectOptions) -> Client {
        Client::connect(&self.addr, &opts).await.expect("connect")
    }

    /// Creates a queue with settings (before anything uses it).
    pub async fn create_queue(&self, name: &str, settings: QueueSettings) {
        self.store
            .create_destination(DestinationKind::Queue, name, &settings, false)
            .await
            .expect("create queue");
    }

    /// Stops accepting connections (existing sessions end when their tasks are dropped).
    pub fn stop(&self) {
        self.server.abort();
    }

    /// Counts the messages of a queue in the database.
    pub async fn depth(&self, queue: &str) -> i64 {
        let stats = self.store.destination_stats().await.expect("stats");
        stats
            .iter()
            .find(|s| s.name == queue)
            .map(|s| s.ready + s.in_flight + s.scheduled)
            .unwrap_or(0)
    }
}

/// Connects a plain client.
pub async fn connect(addr: &str) -> Client {
    Client::connect(addr, &ConnectOptions::default())
        .await
        .expect("connect")
}

/// The path of a binary built from this workspace (target/<profile>/NAME).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("unexpected test binary location")?;
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --bins` (the README's test command does)",
            path.display()
        );
    }
    Ok(path)
}

/// The real `postbusd`, as a child process that a test can SIGKILL and restart.
pub struct BrokerProcess {
    pub addr: String,
    pub url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts postbusd on `url` with a fixed free STOMP port (kept across restarts).
    pub async fn spawn(url: &str, env: &[(&str, &str)]) -> anyhow::Result<BrokerProcess> {
        let port = postbus_pgctl::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("postbusd-{}-{port}.log", std::process::id()));
        let args = vec![
            "--allow-anonymous".to_owned(),
            "--database-url".to_owned(),
            url.to_owned(),
            "--stomp-listen".to_owned(),
            addr.clone(),
            "--http-listen".to_owned(),
            String::new(),
        ];
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = BrokerProcess {
            addr,
            url: url.to_owned(),
            args,
            env,
            child: None,
            log,
        };
        p.start().await?;
        Ok(p)
    }

    /// (Re)starts the process and waits until it accepts STOMP connections.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let bin = workspace_binary("postbusd")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .args(&self.args)
            .env("POSTBUS_BROKER_NODE_NAME", format!("test-{}", self.addr))
            .env("POSTBUS_BROKER_HEARTBEAT_MS", "0")
            .env("POSTBUS_BROKER_POLL_INTERVAL_MS", "100")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn postbusd")?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("postbusd exited with {status}: {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "postbusd did not start listening on {}: {}",
            self.addr,
            self.log_tail()
        )
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `within` for the process to exit by itself; its exit code if it did.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything the process logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An Ed25519 key pair made by openssl: (private PEM, public PEM).
pub fn ed25519_keys(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status()
        .expect("openssl (apt-get install openssl)")
        .success();
    assert!(ok, "openssl genpkey");
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout");
    (
        std::fs::read(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

/// A well-behaved client's round trips on `/queue/steady` (SEND with receipt, then receive
/// and ack it, every 5 ms), each with its start time, until `stop`: the "other clients" whose
/// p99 the hostile-client test and fault scenario 8 compare before and during an abuse.
pub async fn steady_client(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(std::time::Instant, Duration)> {
    let mut c = connect(&addr).await;
    c.subscribe("/queue/steady", "s", "client-individual", &[])
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let t = std::time::Instant::now();
        c.send("/queue/steady", format!("m{i}"), &[]).await.unwrap();
        let m = c.recv().await.unwrap();
        c.ack(&m, None).await.unwrap();
        out.push((t, t.elapsed()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

/// The 99th percentile of `samples` (nearest rank); zero for none.
pub fn p99(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:` for the peak); 0 if unreadable.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
