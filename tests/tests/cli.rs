//! The `postbus` command-line tool against a real broker and database: send and receive,
//! queue management with tables and --json, db migrate, and the selector tools with their
//! exit codes; the admin API commands (queue update, messages, replay, connections,
//! consumers, subscriptions, policies, audit) with their exit codes; the configuration file.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use postbus_client::{ConnectOptions, send_frame};
use postbus_tests::{TestBroker, test_config, workspace_binary};
use serde_json::Value;

/// Runs the real `postbus` with no connection settings from this process's environment and
/// no configuration file (a config home that does not exist).
async fn postbus(args: &[&str]) -> Output {
    postbus_env(args, &[]).await
}

/// Runs the real `postbus` with these environment variables (after the isolating defaults).
async fn postbus_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = workspace_binary("postbus").expect("the postbus binary is built");
    let no_config = std::env::temp_dir().join("postbus-cli-test-no-config-home");
    let mut cmd = tokio::process::Command::new(bin);
    for var in [
        "POSTBUS_URL",
        "POSTBUS_TOKEN",
        "POSTBUS_CONFIG",
        "POSTBUS_STOMP",
        "POSTBUS_DATABASE_URL",
        "POSTBUS_PASSCODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", no_config)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run postbus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON a successful `--json` run printed.
fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
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
    assert_eq!(o.status.code(), Some(5), "a conflict: {o:?}");
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
        Some(5),
        "a queue holding messages is not deleted (a conflict)"
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

/// Waits (up to 10 s) until `done` holds.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_update_changes_only_the_settings_given() {
    let b = TestBroker::start().await;
    let url = b.http.as_str();
    let o = postbus(&[
        "--url",
        url,
        "queue",
        "create",
        "upd.q",
        "--max-deliveries",
        "4",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    let v = json(
        &postbus(&[
            "--url",
            url,
            "--json",
            "queue",
            "update",
            "upd.q",
            "--max-deliveries",
            "7",
            "--exclusive",
            "true",
            "--dead-letter-queue",
            "upd.dead",
            "--redelivery-backoff",
            "2.5",
            "--max-depth",
            "50",
        ])
        .await,
    );
    assert_eq!(v["name"], "upd.q");
    let s = &v["settings"];
    assert_eq!(s["max_deliveries"], 7);
    assert_eq!(s["exclusive"], true);
    assert_eq!(s["dead_letter_queue"], "upd.dead");
    assert_eq!(s["redelivery_backoff"], 2.5);
    assert_eq!(s["max_depth"], 50);
    assert_eq!(s["redelivery_max_delay_ms"], 60_000, "left as it was");
    assert_eq!(s["audit_messages"], false, "left as it was");
    let row = b
        .store
        .find_destination(postbus_model::DestinationKind::Queue, "upd.q")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.settings.max_deliveries, 7, "stored");

    // For people: what it is now; '' puts the dead-letter queue back to the default.
    let o = postbus(&[
        "--url",
        url,
        "queue",
        "update",
        "upd.q",
        "--dead-letter-queue",
        "",
        "--audit-messages",
        "true",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("updated queue upd.q"), "{}", stdout(&o));
    assert!(stdout(&o).contains("audit messages"), "{}", stdout(&o));
    let v = json(&postbus(&["--url", url, "--json", "queue", "stats", "upd.q"]).await);
    assert_eq!(v["settings"]["dead_letter_queue"], Value::Null);
    assert_eq!(v["settings"]["audit_messages"], true);
    assert_eq!(v["settings"]["max_deliveries"], 7);

    let o = postbus(&[
        "--url",
        url,
        "queue",
        "update",
        "nope",
        "--max-deliveries",
        "2",
    ])
    .await;
    assert_eq!(o.status.code(), Some(3), "no such queue: {o:?}");
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    let o = postbus(&["--url", url, "queue", "update", "upd.q"]).await;
    assert_eq!(o.status.code(), Some(2), "nothing to change: {o:?}");
    assert!(
        stderr(&o).contains("at least one setting"),
        "{}",
        stderr(&o)
    );
    let o = postbus(&[
        "--url",
        url,
        "queue",
        "update",
        "upd.q",
        "--exclusive",
        "maybe",
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "clap refuses a non-boolean");
    let o = postbus(&["queue", "update", "upd.q", "--max-deliveries", "2"]).await;
    assert_eq!(o.status.code(), Some(2), "without --url: {o:?}");
    assert!(
        stderr(&o).contains("--url"),
        "says what to do: {}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_listed_shown_deleted_and_moved() {
    let b = TestBroker::start().await;
    let url = b.http.as_str();
    let mut c = b.client().await;
    for (i, color) in ["red", "blue", "red"].iter().enumerate() {
        c.send(
            "/queue/msgs",
            format!("body-{i}"),
            &[("color", color), ("priority", "6")],
        )
        .await
        .unwrap();
    }
    let o = postbus(&["--url", url, "queue", "create", "msgs.other"]).await;
    assert!(o.status.success(), "{o:?}");

    let v = json(&postbus(&["--url", url, "--json", "message", "list", "msgs"]).await);
    let list = v["messages"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{v}");
    assert_eq!(v["next_after"], Value::Null);
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(list[0]["priority"], 6);
    assert_eq!(list[0]["size"], 6);
    assert_eq!(list[0]["properties"]["color"], "red");
    let ids: Vec<i64> = list.iter().map(|m| m["id"].as_i64().unwrap()).collect();

    // Pages: --limit, then --after what it said; --all follows the pages.
    let o = postbus(&[
        "--url", url, "--json", "message", "list", "msgs", "--limit", "2",
    ])
    .await;
    let v = json(&o);
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    assert_eq!(v["next_after"], ids[1]);
    let after = ids[1].to_string();
    let v = json(
        &postbus(&[
            "--url", url, "--json", "message", "list", "msgs", "--after", &after,
        ])
        .await,
    );
    assert_eq!(v["messages"][0]["id"], ids[2]);
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    let v = json(&postbus(&["--url", url, "--json", "message", "list", "msgs", "--all"]).await);
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    let v = json(
        &postbus(&[
            "--url",
            url,
            "--json",
            "message",
            "list",
            "msgs",
            "--selector",
            "color = 'red'",
        ])
        .await,
    );
    let red: Vec<i64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(red, [ids[0], ids[2]]);
    let o = postbus(&["--url", url, "message", "list", "msgs", "--limit", "2"]).await;
    assert!(o.status.success(), "{o:?}");
    for col in ["delivery count", "origin", "ready"] {
        assert!(stdout(&o).contains(col), "{col}: {}", stdout(&o));
    }
    assert!(
        stderr(&o).contains(&format!("--after {}", ids[1])),
        "{}",
        stderr(&o)
    );

    // One message: headers, properties, body.
    let first = format!("ID:{}", ids[0]);
    let v = json(&postbus(&["--url", url, "--json", "message", "show", "msgs", &first]).await);
    assert_eq!(v["body"], "body-0");
    assert_eq!(v["priority"], 6);
    assert_eq!(v["properties"]["color"], "red");
    let o = postbus(&["--url", url, "message", "show", "msgs", &first]).await;
    assert!(o.status.success(), "{o:?}");
    for word in ["body-0", "color", "priority", "delivery count"] {
        assert!(stdout(&o).contains(word), "{word}: {}", stdout(&o));
    }

    // Delete one; a second time it is not there (exit 3).
    let second = ids[1].to_string();
    let o = postbus(&["--url", url, "message", "delete", "msgs", &second]).await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("deleted message"), "{}", stdout(&o));
    let o = postbus(&["--url", url, "message", "delete", "msgs", &second]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // Move one to another queue; to a queue that does not exist: 404.
    let third = ids[2].to_string();
    let v = json(
        &postbus(&[
            "--url",
            url,
            "--json",
            "message",
            "move",
            "msgs",
            &third,
            "--to",
            "msgs.other",
        ])
        .await,
    );
    assert_eq!(v["moved"], ids[2]);
    assert_eq!(v["to"], "msgs.other");
    let v = json(
        &postbus(&[
            "--url",
            url,
            "--json",
            "message",
            "show",
            "msgs.other",
            &third,
        ])
        .await,
    );
    assert_eq!(v["body"], "body-2");
    let o = postbus(&["--url", url, "message", "show", "msgs", &third]).await;
    assert_eq!(o.status.code(), Some(3), "no longer in msgs: {o:?}");
    let o = postbus(&[
        "--url",
        url,
        "message",
        "move",
        "msgs.other",
        &third,
        "--to",
        "nowhere",
    ])
    .await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // A message a consumer holds is neither deleted nor moved: conflict (exit 5).
    let mut consumer = b.client().await;
    consumer
        .subscribe("/queue/msgs", "s", "client-individual", &[])
        .await
        .unwrap();
    let held = consumer.recv().await.unwrap();
    assert_eq!(postbus_tests::body(&held), "body-0");
    let v = json(&postbus(&["--url", url, "--json", "message", "list", "msgs"]).await);
    assert_eq!(v["messages"][0]["state"], "in_flight");
    let zero = ids[0].to_string();
    let o = postbus(&["--url", url, "message", "delete", "msgs", &zero]).await;
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let o = postbus(&[
        "--url",
        url,
        "message",
        "move",
        "msgs",
        &zero,
        "--to",
        "msgs.other",
    ])
    .await;
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let o = postbus(&["message", "list", "msgs"]).await;
    assert_eq!(o.status.code(), Some(2), "needs --url: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_moves_dead_letters_back_in_calls_of_a_thousand() {
    let b = TestBroker::start().await;
    let url = b.http.as_str();
    for q in ["work", "work.odd"] {
        let o = postbus(&["--url", url, "queue", "create", q, "--max-deliveries", "1"]).await;
        assert!(o.status.success(), "{o:?}");
    }
    // 1050 messages, pipelined (the last one's receipt covers them all), then NACKed: with
    // max-deliveries 1 each goes to DLQ.work with its origin.
    const N: usize = 1050;
    let mut p = b.client().await;
    for i in 0..N - 1 {
        let batch = if i % 2 == 0 { "even" } else { "odd" };
        p.feed_frame(send_frame(
            "/queue/work",
            format!("{i}"),
            &[("batch", batch)],
        ))
        .await
        .unwrap();
    }
    p.flush().await.unwrap();
    let last = format!("{}", N - 1);
    p.send("/queue/work", last, &[("batch", "even")])
        .await
        .unwrap();
    let mut c = b.client().await;
    c.subscribe("/queue/work", "s", "client", &[("prefetch", "2000")])
        .await
        .unwrap();
    let mut newest = None;
    for _ in 0..N {
        newest = Some(c.recv().await.unwrap());
    }
    c.nack(&newest.unwrap(), None).await.unwrap();
    c.disconnect().await.unwrap();
    eventually("every message is dead-lettered", || async {
        b.depth("DLQ.work").await == N as i64
    })
    .await;
    // One more, sent straight to the DLQ: no origin, so a replay leaves it (skipped).
    p.send("/queue/DLQ.work", "orphan", &[]).await.unwrap();

    let v = json(
        &postbus(&[
            "--url", url, "--json", "message", "list", "DLQ.work", "--limit", "1",
        ])
        .await,
    );
    assert_eq!(v["messages"][0]["origin"], "/queue/work");
    assert!(v["messages"][0]["dead_letter_reason"].is_string(), "{v}");

    let v = json(
        &postbus(&[
            "--url", url, "--json", "replay", "DLQ.work", "--limit", "10",
        ])
        .await,
    );
    assert_eq!(v["moved"], 10, "{v}");
    assert_eq!(v["more"], true, "{v}");
    assert_eq!(b.depth("work").await, 10);

    let v = json(
        &postbus(&[
            "--url",
            url,
            "--json",
            "replay",
            "DLQ.work",
            "--selector",
            "batch = 'odd'",
            "--to",
            "work.odd",
            "--limit",
            "5",
        ])
        .await,
    );
    assert_eq!(v["moved"], 5, "{v}");
    assert_eq!(b.depth("work.odd").await, 5);

    // The rest: more than one call of a thousand; progress is drawn on a terminal only.
    let o = postbus(&["--url", url, "--json", "replay", "DLQ.work"]).await;
    let v = json(&o);
    assert_eq!(v["moved"], N as u64 - 15, "{v}");
    assert_eq!(v["skipped"], 1, "{v}");
    assert_eq!(v["more"], false, "{v}");
    assert_eq!(v["calls"], 2, "{v}");
    assert_eq!(stderr(&o), "", "no progress bar off a terminal");
    assert_eq!(b.depth("work").await, N as i64 - 5);
    assert_eq!(b.depth("DLQ.work").await, 1, "the orphan stays");
    let v = json(
        &postbus(&[
            "--url", url, "--json", "message", "list", "work", "--limit", "1",
        ])
        .await,
    );
    let m = &v["messages"][0];
    assert_eq!(m["delivery_count"], 0, "{m}");
    assert_eq!(m["origin"], Value::Null, "{m}");
    assert_eq!(m["dead_letter_reason"], Value::Null, "{m}");

    // For people: a table of what moved and what was skipped.
    let o = postbus(&["--url", url, "replay", "DLQ.work"]).await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("skipped"), "{}", stdout(&o));
    assert!(stdout(&o).contains("DLQ.work"), "{}", stdout(&o));
    let o = postbus(&["--url", url, "replay", "DLQ.nope"]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_consumers_and_subscriptions_are_listed_and_closed() {
    let b = TestBroker::start().await;
    let url = b.http.as_str();
    let mut c = b
        .client_with(ConnectOptions {
            client_id: Some("cli-conn".into()),
            ..Default::default()
        })
        .await;
    c.subscribe(
        "/topic/news",
        "d",
        "client-individual",
        &[("durable-subscription-name", "keep")],
    )
    .await
    .unwrap();
    c.subscribe("/queue/jobs", "j", "auto", &[]).await.unwrap();
    let mut p = b.client().await;
    p.send("/topic/news", "headline", &[]).await.unwrap();
    c.recv().await.unwrap();

    let v = json(&postbus(&["--url", url, "--json", "connection", "list"]).await);
    let conn = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["client_id"] == "cli-conn")
        .unwrap_or_else(|| panic!("our connection is listed: {v}"))
        .clone();
    assert_eq!(conn["subscriptions"], 2, "{conn}");
    assert_eq!(conn["in_flight"], 1, "{conn}");
    let id = conn["id"].as_u64().unwrap().to_string();
    let o = postbus(&["--url", url, "connection", "list"]).await;
    assert!(stdout(&o).contains("cli-conn"), "{}", stdout(&o));
    assert!(stdout(&o).contains("client id"), "{}", stdout(&o));

    let v = json(&postbus(&["--url", url, "--json", "consumer", "list"]).await);
    let dests: Vec<&str> = v["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["connection"].as_u64().map(|n| n.to_string()) == Some(id.clone()))
        .map(|k| k["destination"].as_str().unwrap())
        .collect();
    assert!(dests.contains(&"/queue/jobs"), "{v}");
    assert_eq!(dests.len(), 2, "{v}");
    let o = postbus(&["--url", url, "consumer", "list"]).await;
    assert!(stdout(&o).contains("/queue/jobs"), "{}", stdout(&o));

    let v = json(&postbus(&["--url", url, "--json", "subscription", "list"]).await);
    let sub = v["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["durable"] == true)
        .unwrap_or_else(|| panic!("the durable subscription is listed: {v}"))
        .clone();
    assert_eq!(sub["client_id"], "cli-conn", "{sub}");
    assert_eq!(sub["in_flight"], 1, "{sub}");
    assert!(sub["topic"].as_str().unwrap().contains("news"), "{sub}");
    let name = sub["name"].as_str().unwrap().to_owned();
    let o = postbus(&["--url", url, "subscription", "list"]).await;
    assert!(stdout(&o).contains(&name), "{}", stdout(&o));
    let o = postbus(&["--url", url, "subscription", "delete", &name]).await;
    assert_eq!(o.status.code(), Some(5), "a consumer is attached: {o:?}");

    // Close the connection: the client hears why; it is gone from the list.
    let o = postbus(&["--url", url, "connection", "close", &id]).await;
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains(&format!("closed connection {id}")),
        "{}",
        stdout(&o)
    );
    let end = tokio::time::timeout(Duration::from_secs(5), c.next_any())
        .await
        .expect("the client hears of it");
    let why = match end {
        Ok(f) => format!("{:?} {}", f.headers, postbus_tests::body(&f)),
        Err(e) => e.to_string(),
    };
    assert!(why.contains("closed by an administrator"), "{why}");
    eventually("the connection is no longer listed", || async {
        let v = json(&postbus(&["--url", url, "--json", "connection", "list"]).await);
        !v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["client_id"] == "cli-conn")
    })
    .await;
    let o = postbus(&["--url", url, "connection", "close", &id]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // Detached now: the durable subscription can go, with its message.
    let mut deleted = None;
    for _ in 0..100 {
        let o = postbus(&["--url", url, "--json", "subscription", "delete", &name]).await;
        if o.status.success() {
            deleted = Some(json(&o));
            break;
        }
        assert_eq!(
            o.status.code(),
            Some(5),
            "only a conflict while it detaches: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = deleted.expect("the subscription is deleted once detached");
    assert_eq!(v["deleted"], name.as_str(), "{v}");
    assert_eq!(v["messages"], 1, "{v}");
    let o = postbus(&["--url", url, "subscription", "delete", &name]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}

const SECRET: &[u8] = b"cli-test-secret-0123456789abcdef-0123";

const POLICIES: &str = r#"
[[rule]]
name = "operator"
effect = "allow"
roles = ["operator"]
actions = ["*"]
destinations = [">"]

[[rule]]
name = "team-admin"
effect = "allow"
roles = ["team"]
actions = ["admin", "create", "purge"]
destinations = ["/queue/team.>"]
"#;

fn token(sub: &str, roles: &[&str]) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "roles": roles, "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// A broker with JWT authentication and the policies of `dir`, which it reloads on request.
async fn secured_broker(dir: &std::path::Path) -> TestBroker {
    use postbus_auth::{JwtSettings, KeyMaterial, Verifier};
    use postbus_broker::security::{Security, read_policy_dir};
    let verifier = Verifier::new(
        JwtSettings::default(),
        &[KeyMaterial::HmacSecret(SECRET.to_vec())],
    )
    .unwrap();
    let security = Security::new(Some(verifier), false, read_policy_dir(dir).unwrap())
        .with_policy_dir(dir.to_path_buf());
    TestBroker::start_secured(test_config(), Arc::new(security)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reload_and_refusals_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.toml"), POLICIES).unwrap();
    let b = secured_broker(dir.path()).await;
    let url = b.http.as_str();
    let op = token("olga", &["operator"]);
    let team = token("tom", &["team"]);
    // No development token to fall back on.
    let base = ["--url", url, "--data-dir", "/nonexistent"];
    let as_op = |args: &[&str]| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["--token".to_owned(), op.clone()]);
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let as_team = |args: &[&str]| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["--token".to_owned(), team.clone()]);
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        postbus(&refs).await
    };

    let v = json(&run(as_op(&["--json", "policy", "reload"])).await);
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["rules"], 2);
    std::fs::write(
        dir.path().join("more.toml"),
        "[[rule]]\nname = \"readers\"\neffect = \"allow\"\nroles = [\"reader\"]\nactions = [\"browse\"]\ndestinations = [\"/queue/>\"]\n",
    )
    .unwrap();
    let o = run(as_op(&["policy", "reload"])).await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("3 rules"), "{}", stdout(&o));
    std::fs::write(dir.path().join("broken.toml"), "[[rule]]\nname = 7\n").unwrap();
    let o = run(as_op(&["policy", "reload"])).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "a broken directory is refused: {o:?}"
    );
    assert!(stderr(&o).contains("400"), "{}", stderr(&o));
    std::fs::remove_file(dir.path().join("broken.toml")).unwrap();

    // Refused: 403 and 401 exit 4, and say what to do.
    let o = run(as_op(&["queue", "create", "payments.x"])).await;
    assert!(o.status.success(), "{o:?}");
    let o = run(as_team(&[
        "queue",
        "update",
        "payments.x",
        "--max-deliveries",
        "2",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    assert!(stderr(&o).contains("policy check"), "{}", stderr(&o));
    let o = run(as_team(&["policy", "reload"])).await;
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let mut anonymous: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    anonymous.extend(["connection".to_owned(), "list".to_owned()]);
    let o = run(anonymous).await;
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--token"), "{}", stderr(&o));

    // Not found: exit 3.
    let o = run(as_op(&["message", "show", "payments.x", "999999"])).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = run(as_op(&["queue", "stats", "payments.y"])).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // policy check asks the broker's policies in force with --url.
    let check = |action: &str| {
        as_op(&[
            "policy",
            "check",
            "--principal",
            "tom",
            "--roles",
            "team",
            "--action",
            action,
            "--destination",
            "/queue/team.x",
        ])
    };
    let o = run(check("purge")).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).starts_with("ALLOW"), "{}", stdout(&o));
    assert!(stdout(&o).contains("team-admin"), "{}", stdout(&o));
    let o = run(check("delete")).await;
    assert_eq!(o.status.code(), Some(1), "denied: {o:?}");
    assert!(stdout(&o).starts_with("DENY"), "{}", stdout(&o));

    // The audit log through the broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = json(&run(as_op(&["--json", "audit", "query", "--limit", "1000"])).await);
    let kinds: Vec<(&str, &str)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["principal"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("destination.created", "olga")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("authz.denied", "tom")), "{kinds:?}");
    let o = run(as_op(&["audit", "query"])).await;
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("destination.created"), "{}", stdout(&o));
    let o = run(as_team(&["audit", "query"])).await;
    assert_eq!(o.status.code(), Some(4), "{o:?}");

    // The token can come from the configuration file too.
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("cli.toml");
    std::fs::write(&cfg, format!("url = \"{url}\"\ntoken = \"{op}\"\n")).unwrap();
    let cfg = cfg.to_str().unwrap();
    let o = postbus(&[
        "--config",
        cfg,
        "--data-dir",
        "/nonexistent",
        "policy",
        "reload",
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_gives_connection_settings() {
    let b = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cli.toml");
    std::fs::write(
        &cfg,
        format!("url = \"{}\"\nstomp = \"{}\"\n", b.http, b.addr),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    // stomp from the file (no --stomp: the default port has no broker).
    let o = postbus(&["--config", cfg, "send", "/queue/cfg.q", "hi"]).await;
    assert!(o.status.success(), "{o:?}");
    // url from the file: queue commands go through the admin API.
    let v = json(&postbus(&["--config", cfg, "--json", "queue", "stats", "cfg.q"]).await);
    assert_eq!(v["depth"]["ready"], 1, "{v}");
    let v = json(
        &postbus_env(
            &["--json", "queue", "stats", "cfg.q"],
            &[("POSTBUS_CONFIG", cfg)],
        )
        .await,
    );
    assert_eq!(v["depth"]["ready"], 1, "{v}");

    // The default place: $XDG_CONFIG_HOME/postbus/cli.toml.
    let home = dir.path().join("config-home");
    std::fs::create_dir_all(home.join("postbus")).unwrap();
    std::fs::write(
        home.join("postbus").join("cli.toml"),
        format!("database_url = \"{}\"\n", b.url),
    )
    .unwrap();
    let home = home.to_str().unwrap();
    let o = postbus_env(&["--json", "queue", "list"], &[("XDG_CONFIG_HOME", home)]).await;
    let v = json(&o);
    assert!(
        v.as_array().unwrap().iter().any(|q| q["name"] == "cfg.q"),
        "database_url from the default file: {v}"
    );

    // Flags and the environment win over the file.
    let bogus = dir.path().join("bogus.toml");
    std::fs::write(&bogus, "url = \"http://127.0.0.1:1\"\n").unwrap();
    let bogus = bogus.to_str().unwrap();
    let o = postbus(&["--config", bogus, "queue", "list"]).await;
    assert_eq!(
        o.status.code(),
        Some(6),
        "the file's url is used, and unreachable: {o:?}"
    );
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    let o = postbus(&["--config", bogus, "--url", &b.http, "queue", "list"]).await;
    assert!(o.status.success(), "--url wins: {o:?}");
    let o = postbus_env(
        &["--config", bogus, "queue", "list"],
        &[("POSTBUS_URL", b.http.as_str())],
    )
    .await;
    assert!(o.status.success(), "POSTBUS_URL wins: {o:?}");

    // A named file that is missing, or a broken one, is an error that says what is wrong.
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let o = postbus(&["--config", missing, "queue", "list"]).await;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains(missing), "{}", stderr(&o));
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "urll = \"http://x\"\n").unwrap();
    let o = postbus(&["--config", broken.to_str().unwrap(), "queue", "list"]).await;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("urll"), "names the key: {}", stderr(&o));
    let empty = dir.path().join("empty");
    let o = postbus_env(
        &["selector", "check", "a = 1"],
        &[("XDG_CONFIG_HOME", empty.to_str().unwrap())],
    )
    .await;
    assert!(o.status.success(), "a missing default file is fine: {o:?}");
}
