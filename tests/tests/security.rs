//! Authentication and authorization (docs/security.md) against a real broker: JWTs made in
//! the test with keys made by openssl, policy files on disk, STOMP and HTTP clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use postbus_auth::{JwtSettings, KeyMaterial, Verifier};
use postbus_broker::security::{Security, read_policy_dir, spawn_policy_reloader};
use postbus_client::{Client, ConnectOptions};
use postbus_tests::{TestBroker, body, ed25519_keys, test_config};
use serde_json::json;

struct Setup {
    broker: TestBroker,
    private: Vec<u8>,
    public: Vec<u8>,
    policies: PathBuf,
    _dir: tempfile::TempDir,
}

const POLICY: &str = r#"
[[rule]]
name = "producer"
effect = "allow"
roles = ["producer"]
actions = ["send", "create"]
destinations = ["/queue/orders.>"]

[[rule]]
name = "worker"
effect = "allow"
principals = ["worker-1"]
actions = ["consume"]
destinations = ["/queue/orders.>"]
"#;

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = ed25519_keys(dir.path(), "idp");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("test.toml"), POLICY).unwrap();
    let verifier = Verifier::new(
        JwtSettings {
            issuer: Some("bank-idp".into()),
            audience: Some("postbus".into()),
            leeway_s: 0,
            ..JwtSettings::default()
        },
        &[KeyMaterial::Pem(public.clone())],
    )
    .unwrap();
    let security = Arc::new(Security::new(
        Some(verifier),
        false,
        read_policy_dir(&policies).unwrap(),
    ));
    spawn_policy_reloader(
        security.clone(),
        policies.clone(),
        Duration::from_millis(100),
        |_| {},
    );
    let broker = TestBroker::start_secured(test_config(), security).await;
    Setup {
        broker,
        private,
        public,
        policies,
        _dir: dir,
    }
}

fn claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    json!({"sub": sub, "roles": roles, "iss": "bank-idp", "aud": "postbus",
           "exp": get_current_timestamp() + 300})
}

fn token(s: &Setup, claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_pem(&s.private).unwrap(),
    )
    .unwrap()
}

async fn connect(s: &Setup, passcode: Option<String>) -> Result<Client, String> {
    Client::connect(
        &s.broker.addr,
        &ConnectOptions {
            passcode,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_with_the_reason() {
    let s = setup().await;
    let b64 = |v: &serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = claims("svc", &["producer"]);
    let (other_private, _) = ed25519_keys(s._dir.path(), "other");
    let foreign = encode(
        &Header::new(Algorithm::EdDSA),
        &good,
        &EncodingKey::from_ed_pem(&other_private).unwrap(),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    // The classic confusion: HS256 "signed" with the public key as the shared secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&s.public),
    )
    .unwrap();
    let mut expired = good.clone();
    expired["exp"] = (get_current_timestamp() - 10).into();
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = "evil-idp".into();
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "another-broker".into();
    for (passcode, needle) in [
        (None, "authentication required"),
        (Some(foreign), "no configured key verifies"),
        (Some(none), "not a JWT"),
        (Some(forged), "algorithm HS256 is not accepted"),
        (Some(token(&s, &expired)), "expired"),
        (Some(token(&s, &wrong_iss)), "issuer"),
        (Some(token(&s, &wrong_aud)), "audience"),
    ] {
        let err = connect(&s, passcode).await.err().expect("refused");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(connect(&s, Some(token(&s, &good))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_is_the_token_subject_and_policies_decide() {
    let s = setup().await;
    let mut producer = connect(&s, Some(token(&s, &claims("svc-orders", &["producer"]))))
        .await
        .unwrap();
    producer
        .send("/queue/orders.eu", "o1", &[("JMSXUserID", "mallory")])
        .await
        .unwrap();
    let mut worker = connect(&s, Some(token(&s, &claims("worker-1", &[]))))
        .await
        .unwrap();
    worker
        .subscribe("/queue/orders.eu", "w", "auto", &[])
        .await
        .unwrap();
    let m = worker
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("o1");
    assert_eq!(body(&m), "o1");
    assert_eq!(m.header("JMSXUserID"), Some("svc-orders"));

    // A send the policies do not allow: ERROR naming the rule situation, nothing stored.
    let err = producer
        .send("/queue/payments.out", "nope", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not authorized: svc-orders may not send /queue/payments.out"),
        "{err}"
    );
    assert!(err.contains("default deny"), "{err}");
    assert_eq!(s.broker.depth("payments.out").await, 0);
    // Consuming is not the producer's.
    let mut p2 = connect(&s, Some(token(&s, &claims("svc-orders", &["producer"]))))
        .await
        .unwrap();
    let err = p2
        .subscribe("/queue/orders.eu", "x", "auto", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("may not consume"), "{err}");

    // Over HTTP: no token 401, a forbidden destination 403, an allowed one 201.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/queues/orders.us/messages", s.broker.http);
    let r = http
        .post(&url)
        .json(&json!({"body": "h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let t = token(&s, &claims("svc-orders", &["producer"]));
    let r = http
        .post(format!("{}/v1/queues/payments.out/messages", s.broker.http))
        .bearer_auth(&t)
        .json(&json!({"body": "h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .post(&url)
        .bearer_auth(&t)
        .json(&json!({"body": "h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let w = token(&s, &claims("worker-1", &[]));
    let got: serde_json::Value = http
        .post(format!("{}/v1/queues/orders.us/receive", s.broker.http))
        .bearer_auth(&w)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["messages"][0]["user_id"], "svc-orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reload_without_a_restart_and_a_broken_file_keeps_the_last_good_ones() {
    let s = setup().await;
    let t = token(&s, &claims("svc", &["producer"]));
    let mut c = connect(&s, Some(t.clone())).await.unwrap();
    assert!(c.send("/queue/audit.x", "1", &[]).await.is_err());
    std::fs::write(
        s.policies.join("more.toml"),
        "[[rule]]\nname = \"audit\"\neffect = \"allow\"\nroles = [\"producer\"]\nactions = [\"send\", \"create\"]\ndestinations = [\"/queue/audit.>\"]\n",
    )
    .unwrap();
    let mut allowed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = connect(&s, Some(t.clone())).await.unwrap();
        if c.send("/queue/audit.x", "2", &[]).await.is_ok() {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "the new rule took effect without a restart");
    std::fs::write(s.policies.join("broken.toml"), "[[rule]]\nname = 7\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = connect(&s, Some(t)).await.unwrap();
    c.send("/queue/audit.x", "3", &[])
        .await
        .expect("the last good policies stay in force");
    assert_eq!(s.broker.depth("audit.x").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_ends_the_session() {
    let s = setup().await;
    let mut short = claims("worker-1", &[]);
    short["exp"] = (get_current_timestamp() + 2).into();
    let mut c = connect(&s, Some(token(&s, &short))).await.unwrap();
    c.subscribe("/queue/orders.x", "w", "auto", &[])
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), c.next_any())
        .await
        .expect("the broker ends the session within the token's life plus a little");
    let err = match end {
        Ok(f) => format!("{:?} {}", f.headers, body(&f)),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("token expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_temporary_queue_cannot_be_read() {
    let s = setup().await;
    let mut owner = connect(&s, Some(token(&s, &claims("worker-1", &[]))))
        .await
        .unwrap();
    owner
        .subscribe("/temp-queue/mine", "t", "auto", &[])
        .await
        .unwrap();
    let global: String = postbus_tests::sql(
        &s.broker.url,
        "SELECT name FROM postbus.destinations WHERE kind = 'temp-queue'",
    )
    .await[0][0]
        .clone()
        .unwrap();
    // Even an operator-like rule for everything does not make it readable by another.
    std::fs::write(
        s.policies.join("all.toml"),
        "[[rule]]\nname = \"all\"\neffect = \"allow\"\nprincipals = [\"*\"]\nactions = [\"*\"]\ndestinations = [\">\"]\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut thief = connect(&s, Some(token(&s, &claims("thief", &[]))))
        .await
        .unwrap();
    let err = thief
        .subscribe(&format!("/temp-queue/{global}"), "x", "auto", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another connection"), "{err}");
}

/// The audit log's records of one kind, waiting up to 5 s for the broker's batched writer.
async fn audit_records(url: &str, kind: &str, at_least: usize) -> Vec<Vec<Option<String>>> {
    let q = format!(
        "SELECT principal, destination, detail::text FROM postbus.audit_log WHERE kind = '{kind}' ORDER BY seq"
    );
    for _ in 0..50 {
        let rows = postbus_tests::sql(url, &q).await;
        if rows.len() >= at_least {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} {kind} audit records after 5 s");
}

async fn postbus_cli(args: &[&str]) -> std::process::Output {
    let bin = postbus_tests::workspace_binary("postbus").expect("the postbus binary is built");
    tokio::process::Command::new(bin)
        .args(args)
        .output()
        .await
        .expect("run postbus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_audited_and_the_chain_verifies_until_tampered_with() {
    let s = setup().await;
    let url = s.broker.url.clone();
    assert!(connect(&s, None).await.is_err());
    let mut c = connect(&s, Some(token(&s, &claims("svc-orders", &["producer"]))))
        .await
        .unwrap();
    assert!(c.send("/queue/payments.out", "x", &[]).await.is_err());

    let failed = audit_records(&url, "auth.failed", 1).await;
    assert!(
        failed[0][2]
            .as_deref()
            .unwrap()
            .contains("authentication required")
    );
    let connects = audit_records(&url, "connect", 1).await;
    assert_eq!(connects[0][0].as_deref(), Some("svc-orders"));
    let denied = audit_records(&url, "authz.denied", 1).await;
    assert_eq!(denied[0][0].as_deref(), Some("svc-orders"));
    assert_eq!(denied[0][1].as_deref(), Some("/queue/payments.out"));
    assert!(
        denied[0][2]
            .as_deref()
            .unwrap()
            .contains("\"action\": \"send\"")
    );
    audit_records(&url, "disconnect", 1).await;

    // The log is append-only, for the table's owner too.
    for stmt in [
        "UPDATE postbus.audit_log SET principal = 'someone else'",
        "DELETE FROM postbus.audit_log",
        "TRUNCATE postbus.audit_log",
    ] {
        let (client, conn) = postbus_store::connect_raw(&url).await.unwrap();
        tokio::spawn(conn);
        let err = client.batch_execute(stmt).await.unwrap_err();
        let msg = err
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(msg.contains("append-only"), "{stmt}: {msg}");
    }

    let o = postbus_cli(&["--database-url", &url, "audit", "verify"]).await;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("audit log intact"), "{out}");
    let anchor = out
        .lines()
        .find_map(|l| l.strip_prefix("anchor (keep it outside the database): "))
        .expect("an anchor")
        .to_owned();
    let o = postbus_cli(&[
        "--database-url",
        &url,
        "audit",
        "verify",
        "--anchor",
        &anchor,
    ])
    .await;
    assert!(o.status.success());
    let o = postbus_cli(&["--database-url", &url, "--json", "audit", "tail", "-n", "3"]).await;
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);

    // Someone with the power to disable the trigger alters record 2: verify names it.
    postbus_tests::sql(
        &url,
        "ALTER TABLE postbus.audit_log DISABLE TRIGGER audit_log_append_only; \
         UPDATE postbus.audit_log SET principal = 'nobody' WHERE seq = 2; \
         ALTER TABLE postbus.audit_log ENABLE TRIGGER audit_log_append_only",
    )
    .await;
    let o = postbus_cli(&["--database-url", &url, "--json", "audit", "verify"]).await;
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken_at"], 2);
    assert!(v["reason"].as_str().unwrap().contains("altered"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_moves_and_created_destinations_are_audited() {
    let b = TestBroker::start().await;
    b.create_queue(
        "audited.dlq",
        postbus_model::QueueSettings {
            max_deliveries: 1,
            ..postbus_model::QueueSettings::default()
        },
    )
    .await;
    let mut c = b.client().await;
    c.send("/queue/audited.dlq", "poison", &[]).await.unwrap();
    c.subscribe("/queue/audited.dlq", "s", "client-individual", &[])
        .await
        .unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the message");
    c.nack(&m, None).await.unwrap();
    let moved = audit_records(&b.url, "message.dead_lettered", 1).await;
    assert_eq!(moved[0][1].as_deref(), Some("/queue/DLQ.audited.dlq"));
    assert!(
        moved[0][2]
            .as_deref()
            .unwrap()
            .contains("/queue/audited.dlq"),
        "{moved:?}"
    );
    let created = audit_records(&b.url, "destination.created", 1).await;
    assert!(
        created
            .iter()
            .any(|r| r[1].as_deref() == Some("/queue/DLQ.audited.dlq")),
        "{created:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audited_queue_records_each_send_and_ack_in_their_transactions() {
    let b = TestBroker::start().await;
    b.create_queue(
        "ledger.audited",
        postbus_model::QueueSettings {
            audit_messages: true,
            ..postbus_model::QueueSettings::default()
        },
    )
    .await;
    let mut c = b.client().await;
    c.send("/queue/ledger.audited", "entry", &[]).await.unwrap();
    // Written with the message, before the RECEIPT: no waiting for a background writer.
    let sent = postbus_tests::sql(
        &b.url,
        "SELECT principal, destination, detail->>'message_id' FROM postbus.audit_log WHERE kind = 'message.sent'",
    )
    .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0].as_deref(), Some("anonymous"));
    assert_eq!(sent[0][1].as_deref(), Some("/queue/ledger.audited"));
    c.subscribe("/queue/ledger.audited", "s", "client-individual", &[])
        .await
        .unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("entry");
    assert_eq!(m.header("message-id"), sent[0][2].as_deref());
    c.ack(&m, None).await.unwrap();
    let acked = postbus_tests::sql(
        &b.url,
        "SELECT detail->>'message_id' FROM postbus.audit_log WHERE kind = 'message.acked'",
    )
    .await;
    assert_eq!(acked[0][0], sent[0][2]);
    // Nothing else is audited per message on other queues.
    c.send("/queue/plain", "x", &[]).await.unwrap();
    assert_eq!(
        postbus_tests::count(
            &b.url,
            "SELECT count(*) FROM postbus.audit_log WHERE kind = 'message.sent'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_writes_the_audit_records_still_waiting_for_their_batch() {
    let b = TestBroker::start().await;
    let c = b.client().await;
    drop(c);
    // At once, well inside the writer's 100 ms batching window.
    b.engine.shutdown().await;
    let n = postbus_tests::count(
        &b.url,
        "SELECT count(*) FROM postbus.audit_log WHERE kind = 'connect'",
    )
    .await;
    assert_eq!(n, 1);
}
