//! Prometheus metrics checked with the real promtool (Debian package `prometheus`): the alert
//! rules and the example configuration pass `promtool check`, a live `/metrics` after traffic
//! passes `promtool check metrics`, and every metric the dashboards and rules name exists in
//! that live output. A missing promtool is a failure, never a skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use postbus_model::QueueSettings;
use postbus_tests::{TestBroker, body, test_config};

fn promtool() -> PathBuf {
    let p = PathBuf::from("promtool");
    match Command::new(&p).arg("--version").output() {
        Ok(o) if o.status.success() => p,
        _ => panic!(
            "promtool is missing: install it (apt-get install prometheus), or run the README's test command, which does"
        ),
    }
}

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

async fn scrape(b: &TestBroker) -> String {
    reqwest::get(format!("{}/metrics", b.http))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

/// The value of one sample line, e.g. `postbus_messages_acked_total{destination="/queue/m"}`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_alert_rules_and_the_scrape_config_pass_promtool() {
    let out = Command::new(promtool())
        .args(["check", "config"])
        .arg(ops().join("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(ops().join("prometheus/postbus-rules.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_count_traffic_pass_promtool_and_cover_the_dashboards_and_rules() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        metrics_depth_interval_ms: 200,
        ..test_config()
    })
    .await;
    b.create_queue(
        "m.dlq",
        QueueSettings {
            max_deliveries: 1,
            ..QueueSettings::default()
        },
    )
    .await;
    let mut c = b.client().await;
    for i in 0..5 {
        c.send(
            "/queue/m.work",
            format!("{i}"),
            &[("dedup-id", &format!("d{}", i % 4))],
        )
        .await
        .unwrap();
    }
    c.send("/queue/m.dlq", "poison", &[]).await.unwrap();
    c.send("/queue/m.idle", "nobody reads me", &[])
        .await
        .unwrap();
    c.send("/queue/m.idle", "expires", &[("ttl", "1")])
        .await
        .unwrap();
    let mut w = b.client().await;
    w.subscribe("/queue/m.work", "w", "client-individual", &[])
        .await
        .unwrap();
    // One is negatively acknowledged and comes back.
    let first = w
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("work");
    w.nack(&first, None).await.unwrap();
    for _ in 0..4 {
        let m = w
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("work");
        w.ack(&m, None).await.unwrap();
    }
    w.subscribe("/queue/m.dlq", "d", "client-individual", &[])
        .await
        .unwrap();
    let m = w
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("poison");
    assert_eq!(body(&m), "poison");
    w.nack(&m, None).await.unwrap();
    // A refused client, for the authentication counter's series to exist.
    let _ = reqwest::Client::new()
        .post(format!("{}/v1/queues/x/messages", b.http))
        .header("Authorization", "Basic nope")
        .send()
        .await;
    // The expiry sweep runs every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape(&b).await;

    // The counts are the traffic's.
    assert_eq!(
        value(
            &text,
            "postbus_messages_expired_total{destination=\"/queue/m.idle\"}"
        ),
        Some(1.0)
    );
    let q = |name: &str, dest: &str| value(&text, &format!("{name}{{destination=\"{dest}\"}}"));
    assert_eq!(
        q("postbus_messages_enqueued_total", "/queue/m.work"),
        Some(4.0)
    );
    assert_eq!(
        q("postbus_messages_deduplicated_total", "/queue/m.work"),
        Some(1.0)
    );
    assert_eq!(
        q("postbus_messages_delivered_total", "/queue/m.work"),
        Some(5.0)
    );
    assert_eq!(
        q("postbus_messages_redelivered_total", "/queue/m.work"),
        Some(1.0)
    );
    assert_eq!(
        q("postbus_messages_acked_total", "/queue/m.work"),
        Some(4.0)
    );
    assert_eq!(
        q("postbus_messages_nacked_total", "/queue/m.dlq"),
        Some(1.0)
    );
    assert_eq!(
        q("postbus_messages_dead_lettered_total", "/queue/m.dlq"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "postbus_destination_messages{destination=\"/queue/m.idle\",state=\"ready\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        q("postbus_destination_consumers", "/queue/m.work"),
        Some(1.0)
    );
    assert!(
        q(
            "postbus_destination_oldest_ready_age_seconds",
            "/queue/m.idle"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(value(&text, "postbus_connections"), Some(2.0));
    assert!(value(&text, "postbus_send_commit_duration_seconds_count").unwrap() >= 7.0);
    assert!(value(&text, "process_resident_memory_bytes").is_some());

    // promtool accepts the exposition.
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the dashboards and alert rules use exists (TLS expiry only with TLS, `up`
    // is Prometheus's own).
    let live: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let mut named = BTreeSet::new();
    for file in [
        "grafana/postbus-overview.json",
        "grafana/postbus-destination.json",
        "prometheus/postbus-rules.yml",
    ] {
        let text = std::fs::read_to_string(ops().join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find('p') {
            rest = &rest[i..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if word.starts_with("postbus_") || word.starts_with("process_") {
                named.insert((file, word.clone()));
            }
            rest = &rest[word.len().max(1)..];
        }
    }
    assert!(named.len() > 15, "{named:?}");
    for (file, metric) in &named {
        if metric == "postbus_tls_certificate_expiry_timestamp_seconds" {
            continue;
        }
        assert!(
            live.contains(metric),
            "{file} names {metric}, which /metrics does not have"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_labels_are_bounded() {
    let b = TestBroker::start_with(postbus_broker::BrokerConfig {
        metrics_max_destinations: 3,
        metrics_depth_interval_ms: 200,
        ..test_config()
    })
    .await;
    let mut c = b.client().await;
    for i in 0..10 {
        c.send(&format!("/queue/many.q{i}"), "x", &[])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = scrape(&b).await;
    let labels: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("postbus_messages_enqueued_total{"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(labels.len() <= 4, "{labels:?}");
    assert!(labels.contains("_other"), "{labels:?}");
    assert_eq!(
        value(
            &text,
            "postbus_messages_enqueued_total{destination=\"_other\"}"
        )
        .unwrap()
            + labels
                .iter()
                .filter(|l| **l != "_other")
                .map(|l| value(
                    &text,
                    &format!("postbus_messages_enqueued_total{{destination=\"{l}\"}}")
                )
                .unwrap())
                .sum::<f64>(),
        10.0
    );
    assert!(value(&text, "postbus_metrics_destinations_aggregated").unwrap() >= 7.0);
}
