//! The `postbus` command-line tool against a real broker and database: send and receive,
//! queue management with tables and --json, db migrate, and the selector tools with their
//! exit codes.

use std::process::Output;

use postbus_tests::{TestBroker, workspace_binary};

async fn postbus(args: &[&str]) -> Output {
    let bin = workspace_binary("postbus").expect("the postbus binary is built");
    tokio::process::Command::new(bin)
        .args(args)
        .output()
        .await
        .expect("run postbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_and_manage_queues() {
    let b = TestBroker::start().await;
    let (addr, url) = (b.addr.as_str(), b.url.as_str());

    let o = postbus(&[
        "--stomp",
        addr,
        "send",
        "/queue/cli",
        "hello",
        "-H",
        "priority=7",
        "--count",
        "2",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).matches("sent ID:").count(), 2);

    let o = postbus(&["--database-url", url, "--json", "queue", "list"]).await;
    assert!(o.status.success(), "{o:?}");
    let list: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cli = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "cli")
        .expect("queue cli listed");
    assert_eq!(cli["ready"], 2);

    let o = postbus(&[
        "--stomp",
        addr,
        "--json",
        "receive",
        "/queue/cli",
        "--count",
        "1",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    let m: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(m["body"], "hello");
    assert_eq!(m["headers"]["priority"], "7");

    let o = postbus(&[
        "--database-url",
        url,
        "queue",
        "create",
        "pay",
        "--max-deliveries",
        "3",
        "--exclusive",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    let o = postbus(&["--database-url", url, "queue", "create", "pay"]).await;
    assert!(
        !o.status.success(),
        "creating an existing queue is an error"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let o = postbus(&["--database-url", url, "--json", "queue", "stats", "pay"]).await;
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["settings"]["max_deliveries"], 3);
    assert_eq!(stats["settings"]["exclusive"], true);
    let o = postbus(&["--database-url", url, "queue", "stats", "pay"]).await;
    assert!(
        stdout(&o).contains("DLQ.pay"),
        "a table for people: {}",
        stdout(&o)
    );

    // Delete refuses a queue with messages unless forced; purge empties it (of what nobody holds:
    // wait until the receive's leftovers are back).
    for _ in 0..30 {
        if b.store
            .destination_stats()
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "cli" && s.in_flight == 0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let o = postbus(&["--database-url", url, "queue", "delete", "cli"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let o = postbus(&["--database-url", url, "--json", "queue", "purge", "cli"]).await;
    let purged: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(purged["purged"], 1);
    let o = postbus(&["--database-url", url, "queue", "delete", "cli"]).await;
    assert!(o.status.success(), "{o:?}");
    let o = postbus(&["--database-url", url, "queue", "stats", "nope"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("postbus queue list"));

    let o = postbus(&["--database-url", url, "db", "migrate"]).await;
    assert!(o.status.success());
    assert!(stdout(&o).contains("up to date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_check_and_test_files() {
    let o = postbus(&["selector", "check", "region LIKE 'EU-%' AND amount > 10000"]).await;
    assert!(o.status.success());
    assert!(stdout(&o).contains("pushed down"));
    let o = postbus(&["selector", "check", "amount > AND x = 1"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("column 10"));

    let dir = tempfile_dir();
    let file = dir.join("cases.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"id": "c1", "selector": "amount > 10", "message": {"properties": {"amount": {"type": "double", "value": 15000.5}}}, "expect": "match"}"#,
            "\n",
            r#"{"id": "c2", "selector": "big = 9007199254740993", "message": {"properties": {"big": {"type": "long", "value": 9007199254740992}}}, "expect": "match"}"#,
            "\n",
            r#"{"id": "c3", "selector": "amount >", "message": {}, "expect": "invalid"}"#,
            "\n"
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let o = postbus(&["selector", "test", path]).await;
    assert_eq!(o.status.code(), Some(1), "a failing case fails the run");
    let out = stdout(&o);
    assert!(out.contains("FAIL c2"), "{out}");
    assert!(out.lines().last().unwrap() == "2 passed, 1 failed", "{out}");
    let o = postbus(&["--json", "selector", "test", path]).await;
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], "c1");
    assert_eq!(first["outcome"], "match");
    assert_eq!(first["pass"], true);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("postbus-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_over_the_admin_api() {
    let b = TestBroker::start().await;
    let url = b.http.as_str();
    let o = postbus(&[
        "--url",
        url,
        "queue",
        "create",
        "api.q",
        "--max-deliveries",
        "4",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("created queue api.q"));
    let o = postbus(&["--url", url, "queue", "create", "api.q"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("409"), "{o:?}");
    let mut c = b.client().await;
    c.send("/queue/api.q", "x", &[]).await.unwrap();
    let o = postbus(&["--url", url, "--json", "queue", "list"]).await;
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let q = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "api.q")
        .expect("api.q listed")
        .clone();
    assert_eq!(q["ready"], 1);
    let o = postbus(&["--url", url, "queue", "stats", "api.q"]).await;
    assert!(stdout(&o).contains("max deliveries"), "{}", stdout(&o));
    let o = postbus(&["--url", url, "queue", "delete", "api.q"]).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "a queue holding messages is not deleted"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("force=true"));
    let o = postbus(&["--url", url, "queue", "purge", "api.q"]).await;
    assert!(stdout(&o).contains("purged 1 messages"), "{o:?}");
    let o = postbus(&["--url", url, "queue", "delete", "api.q"]).await;
    assert!(o.status.success(), "{o:?}");
    // The broker audited who did it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let kinds = postbus_tests::sql(
        &b.url,
        "SELECT kind FROM postbus.audit_log WHERE destination = '/queue/api.q' ORDER BY seq",
    )
    .await;
    let kinds: Vec<&str> = kinds.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "destination.created",
            "destination.purged",
            "destination.deleted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_completions_know_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let o = postbus(&["completions", shell]).await;
        assert!(o.status.success(), "{o:?}");
        let script = stdout(&o);
        for word in ["queue", "audit", "selector", "policy", "url"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}
