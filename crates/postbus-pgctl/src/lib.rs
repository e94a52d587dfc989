//! postbus-pgctl: manage a private PostgreSQL cluster from the installed server binaries.
//!
//! Used by
//! * the test suite: [`Cluster::temporary`] creates a throw-away cluster in a temp dir on a
//!   free port; fault tests [`Cluster::kill`] it (SIGKILL) and [`Cluster::restart`] it;
//! * `postbusd` in development mode: [`Cluster::open_or_init`] initialises a cluster under a
//!   data dir once, starts it, and reuses it (same port) next time.
//!
//! Everything is synchronous and shells out to `initdb`, `pg_ctl` and `psql`.
//!
//! PostgreSQL refuses to run as root.  When the effective uid is 0, the server side tools
//! (`initdb`, `pg_ctl`, and so the postmaster) are run as the `postgres` system user through
//! `runuser -u postgres --`, the cluster directories are chowned to that user and every
//! parent directory must be traversable by it.  `psql` is only a client and runs as the
//! current user, connecting over TCP to 127.0.0.1 with trust authentication.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tracing::{debug, info, warn};

/// File (inside the data dir) that remembers the port of a persistent cluster.
pub const PORT_FILE: &str = "postbus.port";
/// Config file (inside the data dir) included at the end of `postgresql.conf`;
/// rewritten on every start.
pub const CONF_FILE: &str = "postbus.conf";
/// Server log of a persistent cluster (inside the data dir).
pub const PERSISTENT_LOG_FILE: &str = "postbus-server.log";
/// Unix socket directory of a persistent cluster (inside the data dir).
pub const PERSISTENT_SOCKET_DIR: &str = "postbus-sockets";

const INCLUDE_LINE: &str = "include_if_exists = 'postbus.conf'";
const PG_CTL_TIMEOUT_SECS: u64 = 60;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const KILL_TIMEOUT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 10;
const PORT_ATTEMPTS: usize = 6;
/// `sun_path` is 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Environment variables that would make libpq/pg_ctl talk to some other server.
const PG_ENV_VARS: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
];

/// Everything that can go wrong. Every message says what failed, the command (if any),
/// its stderr (if any) and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; searched: {searched}. \
         Next step: install them (`apt-get install postgresql` on Debian/Ubuntu) or set \
         POSTBUS_PG_BIN to the directory that contains initdb and pg_ctl"
    )]
    BinariesNotFound { searched: String },

    /// A filesystem operation failed.
    #[error("{what} failed for {}: {source}. Next step: {hint}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: String,
    },

    /// A command could not be started at all.
    #[error("{what}: could not run `{command}`: {source}. Next step: {hint}")]
    Spawn {
        what: String,
        command: String,
        #[source]
        source: io::Error,
        hint: String,
    },

    /// A command ran and failed.
    #[error("{what} failed: `{command}` {status}; stderr: {stderr}. Next step: {hint}")]
    Command {
        what: String,
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },

    /// Running as root but there is no `postgres` user to run the server as.
    #[error(
        "running as root and PostgreSQL refuses to run as root, but the `postgres` system user \
         could not be found ({detail}). Next step: create it (installing the `postgresql` \
         package does) or run as an unprivileged user"
    )]
    NoPostgresUser { detail: String },

    /// Running as root and a directory on the path is not traversable by `postgres`.
    #[error(
        "{} is not traversable by the `postgres` user (mode {mode:o}), so the server cannot \
         reach its data dir. Next step: `chmod o+x {}` or choose a data dir elsewhere (e.g. under /tmp or /var/lib)",
        path.display(), path.display()
    )]
    NotTraversable { path: PathBuf, mode: u32 },

    /// The data dir exists, is not empty and is not a PostgreSQL cluster.
    #[error(
        "{} exists, is not empty and is not a PostgreSQL data directory (no PG_VERSION file). \
         Next step: point the data dir at a missing or empty directory, or at an existing cluster",
        path.display()
    )]
    NotADataDir { path: PathBuf },

    /// The data dir is owned by a user that cannot run the server.
    #[error(
        "data dir {} is owned by uid {owner} but the server would run as uid {expected}; \
         PostgreSQL requires the data dir to be owned by the server user. Next step: \
         `chown -R {expected} {}` or use another data dir",
        path.display(), path.display()
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },

    /// The requested fixed port is taken.
    #[error(
        "port {port} on 127.0.0.1 is already in use, the cluster in {} cannot listen on it. \
         Next step: stop whatever listens there, or use port 0 to pick a free port. Server log tail:\n{log_tail}",
        data_dir.display()
    )]
    PortInUse {
        port: u16,
        data_dir: PathBuf,
        log_tail: String,
    },

    /// Waiting for something took too long.
    #[error("timed out after {secs}s waiting for {what}. Next step: {hint}")]
    Timeout {
        what: String,
        secs: u64,
        hint: String,
    },
}

fn io_err(
    what: impl Into<String>,
    path: &Path,
    source: io::Error,
    hint: impl Into<String>,
) -> PgError {
    PgError::Io {
        what: what.into(),
        path: path.to_path_buf(),
        source,
        hint: hint.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// Location of the PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// Directory containing `initdb`, `pg_ctl`, `postgres` and `psql`.
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds the binaries: env `POSTBUS_PG_BIN` first, then `pg_config --bindir`, then the
    /// highest `/usr/lib/postgresql/*/bin` containing `initdb`, then `initdb` on `PATH`.
    pub fn discover() -> Result<Self, PgError> {
        let mut searched = Vec::new();

        if let Some(dir) = std::env::var_os("POSTBUS_PG_BIN") {
            let dir = PathBuf::from(dir);
            if has_initdb(&dir) {
                return Ok(Self::at(dir));
            }
            // An explicit setting that is wrong is an error, not something to silently skip.
            return Err(PgError::BinariesNotFound {
                searched: format!(
                    "POSTBUS_PG_BIN={} (no executable initdb there; fix or unset POSTBUS_PG_BIN)",
                    dir.display()
                ),
            });
        }
        searched.push("POSTBUS_PG_BIN (unset)".to_string());

        match Command::new("pg_config")
            .arg("--bindir")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if has_initdb(&dir) {
                    return Ok(Self::at(dir));
                }
                searched.push(format!(
                    "`pg_config --bindir` = {} (no initdb)",
                    dir.display()
                ));
            }
            _ => searched.push("`pg_config --bindir` (not available)".to_string()),
        }

        let mut best: Option<(Vec<u32>, PathBuf)> = None;
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(version) = parse_version(&name) else {
                    continue;
                };
                let bin = entry.path().join("bin");
                if has_initdb(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                    best = Some((version, bin));
                }
            }
        }
        if let Some((_, bin)) = best {
            return Ok(Self::at(bin));
        }
        searched.push("/usr/lib/postgresql/*/bin".to_string());

        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_initdb(&dir) {
                    return Ok(Self::at(dir));
                }
            }
        }
        searched.push("initdb on PATH".to_string());

        Err(PgError::BinariesNotFound {
            searched: searched.join(", "),
        })
    }

    fn at(bin_dir: PathBuf) -> Self {
        debug!(bin_dir = %bin_dir.display(), "using PostgreSQL binaries");
        Self { bin_dir }
    }

    /// Full path of one of the tools (`initdb`, `pg_ctl`, `psql`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

fn has_initdb(dir: &Path) -> bool {
    fs::metadata(dir.join("initdb")).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How to run the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// TCP port on 127.0.0.1; 0 picks a free port (and moves to another one if it is taken).
    pub port: u16,
    /// `fsync` setting. `synchronous_commit` always stays on.
    pub fsync: bool,
    /// Extra `postgresql.conf` settings, written after the built-in ones (so they override).
    /// Values are single-quoted unless they already start with a quote.
    pub extra_conf: Vec<(String, String)>,
    /// Capture the server output in a log file (see [`Cluster::log_tail`]). When false the
    /// server writes to this process's stderr.
    pub log_to_file: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            port: 0,
            fsync: true,
            extra_conf: Vec::new(),
            log_to_file: true,
        }
    }
}

/// `pg_ctl stop -m` shutdown modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for all clients to disconnect.
    Smart,
    /// Disconnect clients, shut down cleanly (checkpoint).
    Fast,
    /// Abort without a checkpoint; crash recovery on next start.
    Immediate,
}

impl StopMode {
    /// The `pg_ctl -m` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Binds 127.0.0.1:0 and returns the port the kernel picked (free at the time of the call).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        if let Ok(addr) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            return addr.port();
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("free_port: cannot bind any TCP port on 127.0.0.1 (is the loopback interface up?)");
}

fn port_available(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A private PostgreSQL cluster.
///
/// A cluster created by [`Cluster::temporary`] lives in a temp dir that is removed (after an
/// immediate stop) when the value is dropped, also when a test panics. A cluster opened with
/// [`Cluster::open_or_init`] is left running on drop unless [`Cluster::set_stop_on_drop`] is
/// called.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    opts: ClusterOptions,
    /// Directory used as the working directory of server-side commands (postgres can enter it).
    work_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    port_file: Option<PathBuf>,
    port: u16,
    /// `Some((uid, gid))` of `postgres` when running as root.
    run_as: Option<(u32, u32)>,
    stop_on_drop: bool,
    drop_mode: StopMode,
    /// Environment given to the server when it starts (see [`Cluster::set_server_env`]).
    server_env: Vec<(String, String)>,
    /// Dropped after `Drop::drop` stopped the server.
    temp: Option<TempDir>,
}

impl Cluster {
    /// Creates a cluster in a fresh temp dir (`initdb --no-sync`), starts it and returns once it
    /// accepts connections. Dropping it stops the server (immediate) and removes the dir.
    pub fn temporary(opts: ClusterOptions) -> Result<Cluster, PgError> {
        let bins = PgBinaries::discover()?;
        let run_as = server_user()?;

        let parent = temp_parent(run_as)?;
        let temp = tempfile::Builder::new()
            .prefix("postbus-pg-")
            .tempdir_in(&parent)
            .map_err(|e| {
                io_err(
                    "creating a temp dir",
                    &parent,
                    e,
                    "check TMPDIR and free disk space",
                )
            })?;
        let base = temp.path().join("pg");
        if run_as.is_some() {
            set_mode(temp.path(), 0o711)?;
        }
        make_dir(&base, 0o700, run_as)?;
        let data_dir = base.join("data");
        let socket_dir = base.join("sock");
        make_dir(&socket_dir, 0o700, run_as)?;
        let socket_dir = socket_dir_if_short(socket_dir);
        let log_file = if opts.log_to_file {
            let log = base.join("server.log");
            touch(&log, run_as)?;
            Some(log)
        } else {
            None
        };

        let mut cluster = Cluster {
            bins,
            port: opts.port,
            opts,
            work_dir: base,
            data_dir,
            socket_dir,
            log_file,
            port_file: None,
            run_as,
            stop_on_drop: true,
            server_env: Vec::new(),
            drop_mode: StopMode::Immediate,
            temp: Some(temp),
        };
        cluster.initdb(true)?;
        if cluster.port == 0 {
            cluster.port = free_port();
        }
        cluster.start()?;
        Ok(cluster)
    }

    /// Opens the persistent cluster in `data_dir`, running `initdb` first if the dir is missing
    /// or empty, and starts it (or adopts it if it is already running). The port is kept in
    /// `data_dir/postbus.port`, so a reused cluster keeps its port unless that port is busy
    /// (or `opts.port` is non-zero). Does not stop the server on drop; see
    /// [`Cluster::set_stop_on_drop`].
    pub fn open_or_init(data_dir: &Path, opts: ClusterOptions) -> Result<Cluster, PgError> {
        let bins = PgBinaries::discover()?;
        let run_as = server_user()?;

        let data_dir = if data_dir.is_absolute() {
            data_dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    io_err(
                        "reading the current directory",
                        data_dir,
                        e,
                        "pass an absolute data dir",
                    )
                })?
                .join(data_dir)
        };
        if let Some(parent) = data_dir.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                io_err(
                    "creating the parent of the data dir",
                    parent,
                    e,
                    "check permissions or choose another data dir",
                )
            })?;
        }

        let fresh = match fs::read_dir(&data_dir) {
            Ok(mut entries) => {
                if entries.next().is_none() {
                    true
                } else if data_dir.join("PG_VERSION").is_file() {
                    false
                } else {
                    return Err(PgError::NotADataDir { path: data_dir });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&data_dir).map_err(|e| {
                    io_err(
                        "creating the data dir",
                        &data_dir,
                        e,
                        "check permissions of its parent",
                    )
                })?;
                true
            }
            Err(e) => {
                return Err(io_err(
                    "reading the data dir",
                    &data_dir,
                    e,
                    "check its permissions",
                ));
            }
        };
        let data_dir = data_dir.canonicalize().map_err(|e| {
            io_err(
                "resolving the data dir",
                &data_dir,
                e,
                "check that it exists",
            )
        })?;

        if let Some((uid, gid)) = run_as {
            if let Some(parent) = data_dir.parent() {
                check_traversable(parent, uid, gid)?;
            }
            if fresh {
                chown(&data_dir, run_as)?;
            }
        }
        let expected_owner = run_as.map_or_else(effective_uid, |(uid, _)| uid);
        let owner = fs::metadata(&data_dir)
            .map_err(|e| {
                io_err(
                    "reading the data dir",
                    &data_dir,
                    e,
                    "check its permissions",
                )
            })?
            .uid();
        if owner != expected_owner {
            return Err(PgError::WrongOwner {
                path: data_dir,
                owner,
                expected: expected_owner,
            });
        }
        if fresh {
            set_mode(&data_dir, 0o700)?;
        }

        let mut cluster = Cluster {
            bins,
            port: opts.port,
            opts,
            work_dir: data_dir.clone(),
            socket_dir: None,
            log_file: None,
            port_file: Some(data_dir.join(PORT_FILE)),
            data_dir,
            run_as,
            stop_on_drop: false,
            server_env: Vec::new(),
            drop_mode: StopMode::Fast,
            temp: None,
        };
        if fresh {
            info!(data_dir = %cluster.data_dir.display(), "initialising a new PostgreSQL cluster");
            cluster.initdb(!cluster.opts.fsync)?;
        } else {
            cluster.ensure_include()?;
        }

        let socket_dir = cluster.data_dir.join(PERSISTENT_SOCKET_DIR);
        if !socket_dir.is_dir() {
            make_dir(&socket_dir, 0o700, run_as)?;
        }
        cluster.socket_dir = socket_dir_if_short(socket_dir);
        if cluster.opts.log_to_file {
            let log = cluster.data_dir.join(PERSISTENT_LOG_FILE);
            if !log.exists() {
                touch(&log, run_as)?;
            }
            cluster.log_file = Some(log);
        }

        if let Some(pid) = cluster.postmaster_pid() {
            // Left running by a previous process: adopt it.
            if let Some(port) = cluster.pid_file_line(4).and_then(|l| l.trim().parse().ok()) {
                if cluster.opts.port != 0 && cluster.opts.port != port {
                    warn!(
                        requested = cluster.opts.port,
                        running = port,
                        "cluster already running on another port; reusing it"
                    );
                }
                cluster.port = port;
            }
            info!(pid, port = cluster.port, data_dir = %cluster.data_dir.display(), "reusing running PostgreSQL cluster");
        } else if cluster.port == 0 {
            cluster.port = cluster
                .read_port_file()
                .filter(|p| port_available(*p))
                .unwrap_or_else(free_port);
        }
        cluster.start()?;
        Ok(cluster)
    }

    /// Whether dropping this value stops the server (true for temporary clusters, false for
    /// persistent ones by default). Persistent clusters are stopped with [`StopMode::Fast`].
    pub fn set_stop_on_drop(&mut self, stop: bool) {
        self.stop_on_drop = stop;
    }

    /// Environment variables for the server from its next start on (for example LD_PRELOAD
    /// and FAKETIME_* to run it under libfaketime); an empty list starts it plainly again.
    pub fn set_server_env(&mut self, env: Vec<(String, String)>) {
        self.server_env = env;
    }

    /// Starts the server (`pg_ctl start -w`) and waits until it accepts connections. A no-op
    /// (apart from waiting for readiness) if it is already running. If the port turns out to
    /// be taken and the port was not fixed by [`ClusterOptions::port`], another free port is
    /// picked and the start retried.
    pub fn start(&mut self) -> Result<(), PgError> {
        if self.postmaster_pid().is_some() {
            if let Some(port) = self.pid_file_line(4).and_then(|l| l.trim().parse().ok()) {
                self.port = port;
            }
            return self.wait_ready();
        }
        self.remove_stale_pid_file();

        let port_fixed = self.opts.port != 0;
        let mut port_changes = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.port == 0 || (!port_fixed && !port_available(self.port)) {
                self.port = free_port();
            }
            self.write_port_file()?;
            self.write_conf()?;
            let log_offset = self.log_len();
            let err = match self.pg_ctl_start() {
                Ok(()) => {
                    self.wait_ready()?;
                    info!(port = self.port, data_dir = %self.data_dir.display(), "PostgreSQL cluster started");
                    return Ok(());
                }
                Err(err) => err,
            };
            let new_log = self.log_since(log_offset);
            let port_conflict = new_log.contains("Address already in use")
                || new_log.contains("could not create any TCP/IP sockets")
                || !port_available(self.port);
            let transient = new_log.contains("pre-existing shared memory block")
                || new_log.contains("lock file \"postmaster.pid\" already exists")
                || new_log.contains("could not create lock file");
            if port_conflict && port_fixed {
                return Err(PgError::PortInUse {
                    port: self.port,
                    data_dir: self.data_dir.clone(),
                    log_tail: self.log_tail(20),
                });
            }
            if port_conflict && port_changes < PORT_ATTEMPTS && attempt < START_ATTEMPTS {
                port_changes += 1;
                let old = self.port;
                self.port = free_port();
                warn!(
                    old,
                    new = self.port,
                    "port taken while starting PostgreSQL; retrying on another port"
                );
                continue;
            }
            if transient && attempt < START_ATTEMPTS {
                // Leftover backends of a crashed postmaster are still exiting.
                warn!("PostgreSQL start hit a leftover lock/shared memory; retrying");
                self.remove_stale_pid_file();
                thread::sleep(Duration::from_millis(300));
                continue;
            }
            return Err(err);
        }
    }

    /// Stops the server with `pg_ctl stop -m MODE -w`. A no-op if it is not running.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), PgError> {
        if !self.pid_file().exists() {
            return Ok(());
        }
        if self.postmaster_pid().is_none() {
            self.remove_stale_pid_file();
            return Ok(());
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            mode.as_str(),
            "-w",
            "-t",
            &PG_CTL_TIMEOUT_SECS.to_string(),
        ]);
        let result = run(
            cmd,
            &format!("stopping the PostgreSQL cluster ({} mode)", mode.as_str()),
            &format!(
                "check the server log ({}); as a last resort call Cluster::kill()",
                self.log_hint()
            ),
        );
        match result {
            Ok(_) => {
                info!(mode = mode.as_str(), data_dir = %self.data_dir.display(), "PostgreSQL cluster stopped");
                Ok(())
            }
            Err(_) if self.postmaster_pid().is_none() => {
                self.remove_stale_pid_file();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// SIGKILLs the postmaster (pid from `postmaster.pid`) and every process of this cluster
    /// (its children, and any leftover backend whose working directory is the data dir), waits
    /// until they are gone, removes the stale `postmaster.pid` and the orphaned shared memory
    /// segment. After it returns `Ok`, the postmaster is gone and [`Cluster::restart`] works
    /// (with crash recovery).
    pub fn kill(&mut self) -> Result<(), PgError> {
        let shm_id = self.pid_file_line(7).and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i64>().ok())
        });
        let pm = self.postmaster_pid();
        let deadline = Instant::now() + KILL_TIMEOUT;

        if let Some(pm) = pm {
            // Freeze the postmaster so it cannot fork new backends while we collect them.
            signal(&[pm], "STOP");
        }
        for round in 0.. {
            let mut victims: Vec<u32> = pm.into_iter().collect();
            if let Some(pm) = pm {
                victims.extend(children_of(pm));
            }
            victims.extend(self.cluster_processes());
            victims.sort_unstable();
            victims.dedup();
            victims.retain(|p| pid_alive(*p));
            if victims.is_empty() {
                break;
            }
            if round == 0 {
                info!(postmaster = ?pm, processes = victims.len(), data_dir = %self.data_dir.display(), "killing PostgreSQL cluster (SIGKILL)");
            }
            signal(&victims, "KILL");
            while victims.iter().any(|p| pid_alive(*p)) {
                if Instant::now() > deadline {
                    let alive: Vec<u32> = victims.into_iter().filter(|p| pid_alive(*p)).collect();
                    return Err(PgError::Timeout {
                        what: format!("PostgreSQL processes {alive:?} to exit after SIGKILL"),
                        secs: KILL_TIMEOUT.as_secs(),
                        hint: "check whether the processes are stuck in uninterruptible IO (ps -o pid,stat,cmd)".into(),
                    });
                }
                thread::sleep(Duration::from_millis(10));
            }
        }

        self.remove_stale_pid_file();
        if let Some(dir) = &self.socket_dir {
            let _ = fs::remove_file(dir.join(format!(".s.PGSQL.{}.lock", self.port)));
            let _ = fs::remove_file(dir.join(format!(".s.PGSQL.{}", self.port)));
        }
        if let Some(id) = shm_id {
            remove_unattached_shm(id);
        }
        Ok(())
    }

    /// Pid of the running postmaster of this cluster, if any (read from `postmaster.pid` and
    /// checked against `/proc`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid: u32 = self.pid_file_line(1)?.trim().parse().ok()?;
        if !pid_alive(pid) {
            return None;
        }
        let by_cwd =
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == self.data_dir);
        let by_cmdline = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
            raw.split(|b| *b == 0)
                .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)) == self.data_dir)
        });
        (by_cwd || by_cmdline).then_some(pid)
    }

    /// Whether the postmaster is running.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Starts the server again after [`Cluster::stop`] or [`Cluster::kill`] (crash recovery
    /// happens after a kill). If it is running, it is first stopped (fast).
    pub fn restart(&mut self) -> Result<(), PgError> {
        if self.is_running() {
            self.stop(StopMode::Fast)?;
        }
        self.start()
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PostgreSQL data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The unix socket directory, if unix sockets are enabled (they are unless the path would
    /// be too long).
    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket_dir.as_deref()
    }

    /// The server log file, if `log_to_file` is on.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }

    /// The binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Connection URL: `postgresql://postgres@127.0.0.1:PORT/DATABASE` (trust auth).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{}", self.port, database)
    }

    /// Creates a database (no-op if it already exists).
    pub fn create_database(&self, name: &str) -> Result<(), PgError> {
        let sql = format!("CREATE DATABASE {}", quote_ident(name));
        match self.psql("postgres", &sql) {
            Ok(_) => Ok(()),
            Err(PgError::Command { stderr, .. }) if stderr.contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs SQL (one or more statements) with `psql -X -A -t -q -v ON_ERROR_STOP=1` against
    /// `database` and returns its stdout (unaligned, tuples only, `|` separated, one row per
    /// line, with a trailing newline). Statements run one by one (not in one transaction), so
    /// `CREATE DATABASE` works.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let mut cmd = Command::new(self.bins.tool("psql"));
        for var in PG_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
            what: "running SQL".into(),
            command: command.clone(),
            source,
            hint: format!("check that {} exists", self.bins.tool("psql").display()),
        })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = sql.to_owned();
        let writer = thread::spawn(move || {
            // A broken pipe here means psql exited early; its stderr tells why.
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(|source| PgError::Spawn {
            what: "running SQL".into(),
            command: command.clone(),
            source,
            hint: "retry".into(),
        })?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(PgError::Command {
                what: format!("running SQL on database {database:?} (port {})", self.port),
                command: format!("{command} <<< {:?}", truncate(sql, 300)),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                hint: format!(
                    "fix the SQL, or if the connection failed check that the server runs ({})",
                    self.log_hint()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last `lines` lines of the server log (for test failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(log) = &self.log_file else {
            return "(server log not captured: log_to_file is off)".to_string();
        };
        let text = match read_tail_bytes(log, 256 * 1024) {
            Ok(t) => t,
            Err(e) => return format!("(cannot read server log {}: {e})", log.display()),
        };
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // ----- internals -------------------------------------------------------------------------

    /// Command for a server-side tool: via `runuser -u postgres --` when root.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bins.tool(tool);
        let mut cmd = if self.run_as.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        for var in PG_ENV_VARS {
            cmd.env_remove(var);
        }
        // English messages (we look for some in the log); a cwd the postgres user can enter.
        cmd.env("LC_MESSAGES", "C").current_dir(&self.work_dir);
        cmd
    }

    fn initdb(&self, no_sync: bool) -> Result<(), PgError> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if no_sync {
            cmd.arg("--no-sync");
        }
        run(
            cmd,
            "initialising the PostgreSQL cluster (initdb)",
            "check free disk space and that the postgres user can write the data dir",
        )?;
        let hba = "# Written by postbus-pgctl: trust for local connections only.\n\
                   local   all             all                     trust\n\
                   host    all             all     127.0.0.1/32    trust\n\
                   host    all             all     ::1/128         trust\n\
                   local   replication     all                     trust\n\
                   host    replication     all     127.0.0.1/32    trust\n\
                   host    replication     all     ::1/128         trust\n";
        write_file(&self.data_dir.join("pg_hba.conf"), hba, self.run_as)?;
        self.ensure_include()
    }

    /// Appends the include of `postbus.conf` to `postgresql.conf` if it is not there yet.
    fn ensure_include(&self) -> Result<(), PgError> {
        let conf = self.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).map_err(|e| {
            io_err(
                "reading postgresql.conf",
                &conf,
                e,
                "check that the data dir is a complete cluster",
            )
        })?;
        if text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| io_err("opening postgresql.conf", &conf, e, "check its permissions"))?;
        write!(
            f,
            "\n# Added by postbus-pgctl (settings managed in {CONF_FILE})\n{INCLUDE_LINE}\n"
        )
        .map_err(|e| {
            io_err(
                "appending to postgresql.conf",
                &conf,
                e,
                "check free disk space",
            )
        })
    }

    fn write_conf(&self) -> Result<(), PgError> {
        let mut conf = String::from(
            "# Managed by postbus-pgctl: rewritten on every start; use ClusterOptions::extra_conf.\n",
        );
        let sockets = self
            .socket_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(conf, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(conf, "port = {}", self.port);
        let _ = writeln!(conf, "unix_socket_directories = {}", quote_conf(&sockets));
        let _ = writeln!(
            conf,
            "fsync = {}",
            if self.opts.fsync { "on" } else { "off" }
        );
        let _ = writeln!(conf, "synchronous_commit = on");
        let _ = writeln!(conf, "max_connections = 200");
        let _ = writeln!(conf, "shared_buffers = 128MB");
        let _ = writeln!(conf, "logging_collector = off");
        for (key, value) in &self.opts.extra_conf {
            let value = if value.starts_with('\'') {
                value.clone()
            } else {
                quote_conf(value)
            };
            let _ = writeln!(conf, "{key} = {value}");
        }
        write_file(&self.data_dir.join(CONF_FILE), &conf, self.run_as)
    }

    fn pg_ctl_start(&self) -> Result<(), PgError> {
        let sockets = self
            .socket_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut post_opts = format!("-p {} -k {}", self.port, shell_quote(&sockets));
        if !self
            .opts
            .extra_conf
            .iter()
            .any(|(k, _)| k == "listen_addresses")
        {
            post_opts.push_str(" -c listen_addresses=127.0.0.1");
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.envs(self.server_env.iter().map(|(k, v)| (k, v)));
        cmd.arg("start").arg("-D").arg(&self.data_dir).args([
            "-w",
            "-t",
            &PG_CTL_TIMEOUT_SECS.to_string(),
        ]);
        if let Some(log) = &self.log_file {
            cmd.arg("-l").arg(log);
        }
        cmd.arg("-o").arg(post_opts);
        let what = format!("starting the PostgreSQL cluster on port {}", self.port);
        let hint = format!(
            "look at the server log ({}); last lines:\n{}",
            self.log_hint(),
            self.log_tail(15)
        );
        if self.log_file.is_some() {
            run(cmd, &what, &hint).map(|_| ())
        } else {
            // Without -l the postmaster inherits pg_ctl's stdout/stderr: capturing them would
            // never reach EOF, so send them to our stderr.
            let command = describe(&cmd);
            let status = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::from(io::stderr()))
                .stderr(Stdio::from(io::stderr()))
                .status()
                .map_err(|source| PgError::Spawn {
                    what: what.clone(),
                    command: command.clone(),
                    source,
                    hint:
                        "check that the PostgreSQL binaries (and runuser, when root) are installed"
                            .into(),
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(PgError::Command {
                    what,
                    command,
                    status: status.to_string(),
                    stderr: "(written to this process's stderr: log_to_file is off)".into(),
                    hint,
                })
            }
        }
    }

    /// Waits until `postmaster.pid` says "ready" and a TCP connection to the port succeeds.
    fn wait_ready(&self) -> Result<(), PgError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let status_ready = self.pid_file_line(8).is_none_or(|s| s.trim() == "ready");
            if self.postmaster_pid().is_some()
                && status_ready
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(());
            }
            if self.postmaster_pid().is_none() {
                return Err(PgError::Command {
                    what: "waiting for the PostgreSQL server to accept connections".into(),
                    command: format!("(postmaster of {})", self.data_dir.display()),
                    status: "is not running".into(),
                    stderr: String::new(),
                    hint: format!(
                        "look at the server log ({}):\n{}",
                        self.log_hint(),
                        self.log_tail(15)
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(PgError::Timeout {
                    what: format!("PostgreSQL on port {} to accept connections", self.port),
                    secs: READY_TIMEOUT.as_secs(),
                    hint: format!(
                        "look at the server log ({}):\n{}",
                        self.log_hint(),
                        self.log_tail(15)
                    ),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }

    /// Line `n` (1-based) of `postmaster.pid`.
    fn pid_file_line(&self, n: usize) -> Option<String> {
        let text = fs::read_to_string(self.pid_file()).ok()?;
        text.lines().nth(n - 1).map(str::to_owned)
    }

    /// Removes `postmaster.pid` if the process it names is gone.
    fn remove_stale_pid_file(&self) {
        let path = self.pid_file();
        let Ok(text) = fs::read_to_string(&path) else {
            return;
        };
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok());
        if pid.is_none_or(|p| !pid_alive(p)) {
            debug!(path = %path.display(), "removing stale postmaster.pid");
            let _ = fs::remove_file(&path);
        }
    }

    /// Live postgres processes whose working directory is this data dir.
    fn cluster_processes(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return out;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let comm_is_postgres = fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| matches!(c.trim(), "postgres" | "postmaster"));
            if comm_is_postgres
                && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == self.data_dir)
            {
                out.push(pid);
            }
        }
        out
    }

    fn read_port_file(&self) -> Option<u16> {
        let path = self.port_file.as_ref()?;
        fs::read_to_string(path)
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
    }

    fn write_port_file(&self) -> Result<(), PgError> {
        match &self.port_file {
            Some(path) if self.read_port_file() != Some(self.port) => {
                write_file(path, &format!("{}\n", self.port), self.run_as)
            }
            _ => Ok(()),
        }
    }

    fn log_len(&self) -> u64 {
        self.log_file
            .as_ref()
            .and_then(|l| fs::metadata(l).ok())
            .map_or(0, |m| m.len())
    }

    fn log_since(&self, offset: u64) -> String {
        let Some(log) = &self.log_file else {
            return String::new();
        };
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn log_hint(&self) -> String {
        match &self.log_file {
            Some(l) => l.display().to_string(),
            None => "written to stderr: log_to_file is off".to_string(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stop_on_drop
            && self.pid_file().exists()
            && let Err(e) = self.stop(self.drop_mode)
        {
            warn!(error = %e, "stopping PostgreSQL on drop failed; killing it");
            if let Err(e) = self.kill() {
                warn!(error = %e, "killing PostgreSQL on drop failed");
            }
        }
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_path_buf();
            if let Err(e) = temp.close() {
                warn!(path = %path.display(), error = %e, "removing the temporary cluster dir failed");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Effective uid of this process (owner of `/proc/self`, or the `Uid:` line of its status).
fn effective_uid() -> u32 {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:")
                && let Some(euid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
            {
                return euid;
            }
        }
    }
    fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// `Some((uid, gid))` of the `postgres` user when running as root, `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, PgError> {
    if effective_uid() != 0 {
        return Ok(None);
    }
    let line = match Command::new("getent")
        .args(["passwd", "postgres"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("postgres:"))
            .map(str::to_owned)
            .ok_or_else(|| PgError::NoPostgresUser {
                detail:
                    "`getent passwd postgres` found nothing and /etc/passwd has no postgres line"
                        .into(),
            })?,
    };
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (
        fields.get(2).and_then(|s| s.parse().ok()),
        fields.get(3).and_then(|s| s.parse().ok()),
    ) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(Some((uid, gid))),
        _ => Err(PgError::NoPostgresUser {
            detail: format!("unusable passwd entry {:?}", line.trim()),
        }),
    }
}

/// Where to create temp clusters: the temp dir, or /tmp if the postgres user cannot reach it.
fn temp_parent(run_as: Option<(u32, u32)>) -> Result<PathBuf, PgError> {
    let tmp = std::env::temp_dir();
    let Some((uid, gid)) = run_as else {
        return Ok(tmp);
    };
    match check_traversable(&tmp, uid, gid) {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let fallback = PathBuf::from("/tmp");
            if tmp != fallback && check_traversable(&fallback, uid, gid).is_ok() {
                debug!(tmp = %tmp.display(), "temp dir not reachable by postgres; using /tmp");
                Ok(fallback)
            } else {
                Err(e)
            }
        }
    }
}

/// Checks that `path` and all its ancestors can be entered by uid/gid.
fn check_traversable(path: &Path, uid: u32, gid: u32) -> Result<(), PgError> {
    for dir in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let md = fs::metadata(dir).map_err(|e| {
            io_err(
                "checking directory permissions",
                dir,
                e,
                "check that the path exists",
            )
        })?;
        let mode = md.mode();
        let ok = if md.uid() == uid {
            mode & 0o100 != 0
        } else if md.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(PgError::NotTraversable {
                path: dir.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

fn chown(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
            io_err(
                "changing the owner to postgres",
                path,
                e,
                "run as root or as the postgres user",
            )
        })?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        io_err(
            format!("chmod {mode:o}"),
            path,
            e,
            "check that you own the path",
        )
    })
}

fn make_dir(path: &Path, mode: u32, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io_err(
                "creating a directory",
                path,
                e,
                "check permissions and free disk space",
            ));
        }
    }
    chown(path, run_as)?;
    set_mode(path, mode)
}

fn touch(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io_err(
                "creating a file",
                path,
                e,
                "check permissions and free disk space",
            )
        })?;
    chown(path, run_as)
}

fn write_file(path: &Path, contents: &str, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    fs::write(path, contents).map_err(|e| {
        io_err(
            "writing a file",
            path,
            e,
            "check permissions and free disk space",
        )
    })?;
    chown(path, run_as)
}

fn socket_dir_if_short(dir: PathBuf) -> Option<PathBuf> {
    // "<dir>/.s.PGSQL.65535"
    if dir.as_os_str().len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH {
        Some(dir)
    } else {
        warn!(dir = %dir.display(), "socket path too long; unix sockets disabled (TCP only)");
        None
    }
}

/// Runs a command, capturing its output; non-zero exit becomes [`PgError::Command`].
fn run(mut cmd: Command, what: &str, hint: &str) -> Result<Output, PgError> {
    let command = describe(&cmd);
    debug!(%command, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PgError::Spawn {
            what: what.to_string(),
            command: command.clone(),
            source,
            hint: "check that the PostgreSQL binaries (and runuser, when root) are installed"
                .into(),
        })?;
    if out.status.success() {
        return Ok(out);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        stderr = format!("{stderr}\n(stdout: {})", stdout.trim());
    }
    Err(PgError::Command {
        what: what.to_string(),
        command,
        status: out.status.to_string(),
        stderr,
        hint: hint.to_string(),
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes for `/bin/sh` (pg_ctl runs the `-o` options through a shell).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Quotes a `postgresql.conf` string value.
fn quote_conf(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes an SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn read_tail_bytes(path: &Path, max: u64) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `(state, ppid)` from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(char, u32)> {
    // "pid (comm) S ppid ..." — comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Alive = exists and is not a zombie (zombies hold no sockets or shared memory).
fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Sends a signal with the `kill` command (no unsafe code). Errors (already gone) are ignored;
/// callers verify the outcome through `/proc`.
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let result = Command::new("kill")
        .args(["-s", sig])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = result {
        warn!(error = %e, "could not run `kill`");
    }
}

/// Removes a SysV shared memory segment left behind by a killed postmaster, if nothing is
/// attached to it any more.
fn remove_unattached_shm(id: i64) {
    let Ok(table) = fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    let unattached = table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.get(1).and_then(|s| s.parse::<i64>().ok()) == Some(id) && cols.get(6) == Some(&"0")
    });
    if unattached {
        let _ = Command::new("ipcrm")
            .args(["-m", &id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_odd_comm() {
        assert_eq!(parse_stat("123 (post gres) S 1 123 123 0"), Some(('S', 1)));
        assert_eq!(parse_stat("7 (a) b)) Z 42 7"), Some(('Z', 42)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/x/sock"), "/tmp/x/sock");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(quote_conf("a'b"), "'a''b'");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert!(parse_version("abc").is_none());
    }

    #[test]
    fn free_port_is_bindable() {
        // Other tests in this binary open connections concurrently and may take the port in
        // between, so one of a few tries binding is what is checked.
        let bindable = (0..5).any(|_| {
            let port = free_port();
            port != 0 && port_available(port)
        });
        assert!(bindable);
    }

    #[test]
    fn own_process_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!children_of(std::process::id()).contains(&std::process::id()));
    }

    #[test]
    fn cluster_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Cluster>();
        assert_send_sync::<PgError>();
    }

    #[test]
    fn discover_finds_initdb() {
        // Only meaningful where PostgreSQL is installed (it is wherever the crate's
        // integration tests run).
        if let Ok(bins) = PgBinaries::discover() {
            assert!(bins.tool("initdb").is_file());
        }
    }

    #[test]
    fn defaults() {
        let o = ClusterOptions::default();
        assert_eq!((o.port, o.fsync, o.log_to_file), (0, true, true));
        assert!(o.extra_conf.is_empty());
        assert_eq!(StopMode::Immediate.as_str(), "immediate");
    }
}
