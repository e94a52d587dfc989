//! Integration tests: these really run PostgreSQL (each test its own private cluster).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use postbus_pgctl::{Cluster, ClusterOptions, StopMode};

fn fast_opts() -> ClusterOptions {
    ClusterOptions {
        fsync: false,
        ..ClusterOptions::default()
    }
}

fn temp_cluster() -> Cluster {
    Cluster::temporary(fast_opts()).expect("start temporary cluster")
}

fn sql(c: &Cluster, db: &str, q: &str) -> String {
    match c.psql(db, q) {
        Ok(out) => out.trim().to_string(),
        Err(e) => panic!("{e}\nserver log:\n{}", c.log_tail(30)),
    }
}

/// Pid is a live, non-zombie process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            state != "Z" && state != "X"
        })
        .unwrap_or(false)
}

/// A temp dir the `postgres` user can traverse when we run as root.
fn traversable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

#[test]
fn temporary_cluster_runs_sql_and_creates_databases() {
    let c = temp_cluster();
    assert_ne!(c.port(), 0);
    assert_eq!(sql(&c, "postgres", "select 1"), "1");
    assert_eq!(
        c.url("postbus"),
        format!("postgresql://postgres@127.0.0.1:{}/postbus", c.port())
    );

    c.create_database("postbus").unwrap();
    c.create_database("postbus").unwrap(); // idempotent
    assert_eq!(sql(&c, "postbus", "select current_database()"), "postbus");

    // Settings from the generated config.
    assert_eq!(sql(&c, "postgres", "show max_connections"), "200");
    assert_eq!(sql(&c, "postgres", "show fsync"), "off");
    assert_eq!(sql(&c, "postgres", "show synchronous_commit"), "on");
    assert_eq!(sql(&c, "postgres", "show listen_addresses"), "127.0.0.1");

    // SQL errors are reported with psql's stderr.
    let err = c
        .psql("postgres", "select * from no_such_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");

    // Multi-statement scripts run statement by statement, rows are '|' separated.
    let out = sql(
        &c,
        "postbus",
        "create table t(a int, b text); insert into t values (1,'x'),(2,'y'); select * from t order by a;",
    );
    assert_eq!(out, "1|x\n2|y");
    assert!(c.log_tail(50).contains("ready to accept connections"));

    // Dropping stops the server and removes the directory.
    let pid = c.postmaster_pid().expect("running");
    let data_dir = c.data_dir().to_path_buf();
    drop(c);
    assert!(!alive(pid), "postmaster {pid} still alive after drop");
    assert!(!data_dir.exists(), "data dir not removed");
}

#[test]
fn kill_then_restart_keeps_committed_data() {
    let mut c = temp_cluster();
    sql(
        &c,
        "postgres",
        "create table t(v int); insert into t select generate_series(1, 100);",
    );
    let pid = c.postmaster_pid().unwrap();

    // An open session at the time of the kill: its backend must go too.
    let mut session = Command::new(c.binaries().tool("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &c.port().to_string(),
            "-U",
            "postgres",
            "-c",
            "select pg_sleep(60)",
            "postgres",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sql(
            &c,
            "postgres",
            "select count(*) from pg_stat_activity where query like 'select pg_sleep%'",
        ) == "1"
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    c.kill().unwrap();
    assert!(!alive(pid), "postmaster survived kill()");
    assert_eq!(c.postmaster_pid(), None);
    assert!(!c.is_running());
    assert!(c.psql("postgres", "select 1").is_err());
    let _ = session.wait();

    c.restart().unwrap();
    assert_ne!(c.postmaster_pid(), Some(pid));
    assert_eq!(
        sql(&c, "postgres", "select count(*), sum(v) from t"),
        "100|5050"
    );
    let log = c.log_tail(200);
    assert!(
        log.contains("was interrupted")
            || log.contains("automatic recovery")
            || log.contains("not properly shut down"),
        "no crash recovery in log:\n{log}"
    );

    // kill twice in a row (second is a no-op), then again after more writes.
    sql(&c, "postgres", "insert into t values (1000)");
    c.kill().unwrap();
    c.kill().unwrap();
    c.start().unwrap();
    assert_eq!(sql(&c, "postgres", "select count(*) from t"), "101");
}

#[test]
fn stop_fast_and_restart() {
    let mut c = temp_cluster();
    sql(
        &c,
        "postgres",
        "create table t(v text); insert into t values ('kept')",
    );
    let port = c.port();
    c.stop(StopMode::Fast).unwrap();
    assert!(!c.is_running());
    assert!(!c.data_dir().join("postmaster.pid").exists());
    c.stop(StopMode::Fast).unwrap(); // stopping a stopped cluster is fine
    c.restart().unwrap();
    assert_eq!(sql(&c, "postgres", "select v from t"), "kept");
    // restart() of a running cluster stops and starts it.
    let pid = c.postmaster_pid().unwrap();
    c.restart().unwrap();
    assert_ne!(c.postmaster_pid().unwrap(), pid);
    assert_eq!(c.port(), port);
    c.stop(StopMode::Immediate).unwrap();
    c.start().unwrap();
    assert_eq!(sql(&c, "postgres", "select v from t"), "kept");
}

/// Stops the persistent cluster even if an assertion fails.
struct StopGuard(Option<Cluster>);
impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            c.set_stop_on_drop(true);
        }
    }
}

#[test]
fn open_or_init_reuses_data_and_port() {
    let root = traversable_tempdir();
    let data_dir = root.path().join("nested").join("pgdata");

    let port;
    let pid;
    {
        let c = Cluster::open_or_init(&data_dir, fast_opts()).unwrap();
        let guard = StopGuard(Some(c));
        let c = guard.0.as_ref().unwrap();
        port = c.port();
        pid = c.postmaster_pid().unwrap();
        c.create_database("app").unwrap();
        sql(c, "app", "create table t(v int); insert into t values (42)");
        assert_eq!(
            std::fs::read_to_string(data_dir.join("postbus.port"))
                .unwrap()
                .trim(),
            port.to_string()
        );
        // Daemon mode: dropping does not stop the server.
        std::mem::forget(guard);
    }
    assert!(alive(pid), "persistent cluster was stopped on drop");

    // Second open adopts the running server.
    let mut c = Cluster::open_or_init(&data_dir, fast_opts()).unwrap();
    c.set_stop_on_drop(true);
    assert_eq!(c.postmaster_pid(), Some(pid));
    assert_eq!(c.port(), port);
    assert_eq!(sql(&c, "app", "select v from t"), "42");

    // Stopped, then opened again: same data, same port (still free).
    c.stop(StopMode::Fast).unwrap();
    drop(c);
    let c = Cluster::open_or_init(&data_dir, fast_opts()).unwrap();
    let _guard = StopGuard(Some(c));
    let c = _guard.0.as_ref().unwrap();
    assert_ne!(c.postmaster_pid(), Some(pid));
    assert_eq!(c.port(), port);
    assert_eq!(sql(c, "app", "select v from t"), "42");
}

#[test]
fn open_or_init_moves_off_a_busy_port_and_rejects_foreign_dirs() {
    let root = traversable_tempdir();
    let data_dir = root.path().join("pgdata");
    let mut c = Cluster::open_or_init(&data_dir, fast_opts()).unwrap();
    c.set_stop_on_drop(true);
    let old_port = c.port();
    c.stop(StopMode::Fast).unwrap();
    drop(c);

    // Somebody else takes the remembered port meanwhile.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", old_port)).unwrap();
    let mut c = Cluster::open_or_init(&data_dir, fast_opts()).unwrap();
    c.set_stop_on_drop(true);
    assert_ne!(c.port(), old_port);
    assert_eq!(sql(&c, "postgres", "select 1"), "1");
    assert_eq!(
        std::fs::read_to_string(data_dir.join("postbus.port"))
            .unwrap()
            .trim(),
        c.port().to_string()
    );
    drop(squatter);
    drop(c);

    // A non-empty directory that is not a cluster is refused.
    let junk = root.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("file"), "x").unwrap();
    let err = Cluster::open_or_init(&junk, fast_opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("PG_VERSION"), "{err}");
}

#[test]
fn two_clusters_at_once_on_different_ports() {
    let handles: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let c = temp_cluster();
                sql(
                    &c,
                    "postgres",
                    &format!("create table who(i int); insert into who values ({i})"),
                );
                c
            })
        })
        .collect();
    let clusters: Vec<Cluster> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(clusters[0].port(), clusters[1].port());
    assert_ne!(clusters[0].data_dir(), clusters[1].data_dir());
    for (i, c) in clusters.iter().enumerate() {
        assert_eq!(sql(c, "postgres", "select i from who"), i.to_string());
    }
}

#[test]
fn fixed_port_in_use_is_an_error_and_extra_conf_applies() {
    let squatter = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let err = Cluster::temporary(ClusterOptions {
        port,
        ..fast_opts()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&port.to_string()) && err.contains("in use"),
        "{err}"
    );
    drop(squatter);

    let c = Cluster::temporary(ClusterOptions {
        extra_conf: vec![
            ("work_mem".into(), "8MB".into()),
            ("cluster_name".into(), "it's".into()),
        ],
        log_to_file: false,
        ..fast_opts()
    })
    .unwrap();
    assert_eq!(sql(&c, "postgres", "show work_mem"), "8MB");
    assert_eq!(sql(&c, "postgres", "show cluster_name"), "it's");
    assert!(c.log_tail(5).contains("not captured"));
    assert!(Path::new(c.data_dir()).join("postbus.conf").exists());
}

#[test]
fn panicking_test_still_cleans_up() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = temp_cluster();
        *seen.lock().unwrap() = Some((c.postmaster_pid().unwrap(), c.data_dir().to_path_buf()));
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    let (pid, data_dir) = seen.lock().unwrap().clone().unwrap();
    assert!(!alive(pid), "postmaster {pid} survived the panic");
    assert!(!data_dir.exists(), "{} not removed", data_dir.display());
}
