//! The HTTP admin API end to end: a real broker with JWT authentication and policies, a real
//! HTTP client; authorization failures, problem+json errors, audit records, OpenAPI.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use postbus_auth::{JwtSettings, KeyMaterial, Policies, Verifier};
use postbus_broker::security::Security;
use postbus_tests::{TestBroker, test_config};
use serde_json::{Value, json};

const SECRET: &[u8] = b"admin-api-test-secret-0123456789abcdef";

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
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "roles": roles, "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

async fn broker() -> TestBroker {
    let verifier = Verifier::new(
        JwtSettings::default(),
        &[KeyMaterial::HmacSecret(SECRET.to_vec())],
    )
    .unwrap();
    let policies = Policies::parse(&[("admin.toml".into(), POLICIES.into())]).unwrap();
    TestBroker::start_secured(
        test_config(),
        Arc::new(Security::new(Some(verifier), false, policies)),
    )
    .await
}

async fn call(
    b: &TestBroker,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", b.http))
        .bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("HTTP");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, ct, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_queues_and_teams_only_their_own() {
    let b = broker().await;
    let op = token("olga", &["operator"]);
    let team = token("tom", &["team"]);
    use reqwest::Method;

    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues",
        &op,
        Some(json!({"name": "payments.in", "settings": {"max_deliveries": 3, "audit_messages": true}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["settings"]["max_deliveries"], 3);
    let (s, ct, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues",
        &op,
        Some(json!({"name": "payments.in"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(v["status"], 409);
    assert!(v["detail"].as_str().unwrap().contains("already exists"));

    // A team may create and administer its own queues, not others'.
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues",
        &team,
        Some(json!({"name": "team.jobs"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, ct, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues",
        &team,
        Some(json!({"name": "payments.out"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(ct, "application/problem+json");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("tom may not create /queue/payments.out"),
        "{v}"
    );
    let (s, _, v) = call(&b, Method::GET, "/v1/admin/destinations", &team, None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["team.jobs"],
        "a team sees only what it may administer"
    );
    let (s, _, _) = call(
        &b,
        Method::DELETE,
        "/v1/admin/queues/team.jobs",
        &team,
        None,
    )
    .await;
    assert_eq!(s, 403, "the team rule does not include delete");

    // Purge and delete, with the message count and the refusal to delete a non-empty queue.
    let mut c = b
        .client_with(postbus_client::ConnectOptions {
            passcode: Some(op.clone()),
            ..Default::default()
        })
        .await;
    for i in 0..3 {
        c.send("/queue/payments.in", format!("{i}"), &[])
            .await
            .unwrap();
    }
    let (s, _, v) = call(&b, Method::GET, "/v1/admin/queues/payments.in", &op, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["depth"]["ready"], 3);
    let (s, _, v) = call(
        &b,
        Method::DELETE,
        "/v1/admin/queues/payments.in",
        &op,
        None,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("force=true"));
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues/payments.in/purge",
        &op,
        None,
    )
    .await;
    assert_eq!((s, v["purged"].clone()), (200, json!(3)));
    let (s, _, v) = call(
        &b,
        Method::DELETE,
        "/v1/admin/queues/payments.in",
        &op,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = call(&b, Method::GET, "/v1/admin/queues/payments.in", &op, None).await;
    assert_eq!(s, 404);

    // Policy check and the audit log through the API.
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/policies/check",
        &op,
        Some(json!({"principal": "tom", "roles": ["team"], "action": "purge", "destination": "/queue/team.x"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["allowed"], true);
    assert!(v["rule"].as_str().unwrap().starts_with("team-admin"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, v) = call(&b, Method::GET, "/v1/admin/audit?limit=1000", &op, None).await;
    assert_eq!(s, 200);
    let kinds: Vec<(String, String)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["principal"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("destination.created", "olga"),
        ("destination.purged", "olga"),
        ("destination.deleted", "olga"),
        ("authz.denied", "tom"),
        ("message.sent", "olga"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing in {kinds:?}"
        );
    }
    let (s, _, _) = call(&b, Method::GET, "/v1/admin/audit", &team, None).await;
    assert_eq!(
        s, 403,
        "the audit log is for those who administer everything"
    );

    // Without a token: 401; the OpenAPI description is served.
    let r = reqwest::get(format!("{}/v1/admin/destinations", b.http))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _, v) = call(&b, Method::GET, "/v1/admin/openapi.json", &op, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["openapi"], "3.0.3");
    assert!(v["paths"]["/v1/admin/queues/{name}/purge"].is_object());
}

/// Waits until `probe` holds (the broker acts asynchronously on some calls).
async fn eventually(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn ids(v: &Value) -> Vec<i64> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_browse_fetch_move_delete_and_replay_messages() {
    use reqwest::Method;
    let b = broker().await;
    let op = token("olga", &["operator"]);
    let team = token("tom", &["team"]);
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues",
        &op,
        Some(json!({"name": "orders", "settings": {"max_deliveries": 1}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut c = b
        .client_with(postbus_client::ConnectOptions {
            passcode: Some(op.clone()),
            ..Default::default()
        })
        .await;
    for i in 0..5 {
        let amount = (i * 100).to_string();
        c.send(
            "/queue/orders",
            format!("order {i}"),
            &[("amount", amount.as_str()), ("postbus-types", "amount:int")],
        )
        .await
        .unwrap();
    }
    // Each NACK sends a message to DLQ.orders (max_deliveries 1).
    c.subscribe("/queue/orders", "s", "client-individual", &[])
        .await
        .unwrap();
    for _ in 0..5 {
        let m = c.recv().await.unwrap();
        c.nack(&m, None).await.unwrap();
    }
    c.unsubscribe("s").await.unwrap();
    eventually("5 dead letters", async || b.depth("DLQ.orders").await == 5).await;
    // Browse with a selector, in pages.
    let (s, _, v) = call(
        &b,
        Method::GET,
        "/v1/admin/queues/DLQ.orders/messages?selector=amount%20%3E%20150",
        &op,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let selected = ids(&v);
    assert_eq!(selected.len(), 3, "{v}");
    let first = &v["messages"][0];
    assert_eq!(first["state"], "ready");
    assert_eq!(first["origin"], "/queue/orders");
    assert_eq!(first["properties"]["amount"], 200);
    assert_eq!(first["size"], 7);
    assert!(first.get("body").is_none(), "a listing leaves bodies out");
    let (_, _, p1) = call(
        &b,
        Method::GET,
        "/v1/admin/queues/DLQ.orders/messages?limit=2",
        &op,
        None,
    )
    .await;
    let after = p1["next_after"].as_i64().expect("a next page");
    let (_, _, p2) = call(
        &b,
        Method::GET,
        &format!("/v1/admin/queues/DLQ.orders/messages?limit=2&after={after}"),
        &op,
        None,
    )
    .await;
    let (_, _, p3) = call(
        &b,
        Method::GET,
        &format!(
            "/v1/admin/queues/DLQ.orders/messages?limit=2&after={}",
            p2["next_after"].as_i64().unwrap()
        ),
        &op,
        None,
    )
    .await;
    let all: Vec<i64> = [ids(&p1), ids(&p2), ids(&p3)].concat();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "id order: {all:?}");
    assert!(p3["next_after"].is_null(), "{p3}");
    let (s, ct, v) = call(
        &b,
        Method::GET,
        "/v1/admin/queues/DLQ.orders/messages?selector=amount%20%3E",
        &op,
        None,
    )
    .await;
    assert_eq!((s, ct.as_str()), (400, "application/problem+json"));
    assert!(v["detail"].as_str().unwrap().contains("column"), "{v}");
    let (s, _, _) = call(
        &b,
        Method::GET,
        "/v1/admin/queues/DLQ.orders/messages",
        &team,
        None,
    )
    .await;
    assert_eq!(s, 403, "browsing another team's queue is refused");
    // One message with its body.
    let (s, _, v) = call(
        &b,
        Method::GET,
        &format!("/v1/admin/queues/DLQ.orders/messages/{}", all[3]),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body"], "order 3");
    assert!(v["dead_letter_reason"].is_string(), "{v}");
    // Replay the big ones back to their origin.
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues/DLQ.orders/replay",
        &op,
        Some(json!({"selector": "amount >= 300"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["moved"].clone(), v["more"].clone()),
        (json!(2), json!(false))
    );
    let (_, _, v) = call(
        &b,
        Method::GET,
        "/v1/admin/queues/orders/messages",
        &op,
        None,
    )
    .await;
    let back: Vec<(i64, i64, Value)> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["delivery_count"].as_i64().unwrap(),
                m["origin"].clone(),
            )
        })
        .collect();
    assert_eq!(
        back,
        vec![(all[3], 0, Value::Null), (all[4], 0, Value::Null)],
        "replayed with a fresh delivery count"
    );
    // Move one, delete one, then replay the rest one at a time (limit 1: `more` until done).
    let (s, _, v) = call(
        &b,
        Method::POST,
        &format!("/v1/admin/queues/DLQ.orders/messages/{}/move", all[0]),
        &op,
        Some(json!({"to": "orders"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = call(
        &b,
        Method::POST,
        &format!("/v1/admin/queues/DLQ.orders/messages/{}/move", all[1]),
        &op,
        Some(json!({"to": "nowhere"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, _, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/admin/queues/DLQ.orders/messages/{}", all[1]),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = call(
        &b,
        Method::DELETE,
        &format!("/v1/admin/queues/DLQ.orders/messages/{}", all[1]),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 404, "deleted already");
    let (s, _, v) = call(
        &b,
        Method::POST,
        "/v1/admin/queues/DLQ.orders/replay",
        &op,
        Some(json!({"limit": 1})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["moved"].clone(), v["more"].clone()),
        (json!(1), json!(false))
    );
    assert_eq!(b.depth("DLQ.orders").await, 0);

    // The queue now holds orders 0, 2, 3 and 4; a consumer gets them in id order, and a
    // message it holds can be neither deleted nor moved.
    c.subscribe("/queue/orders", "s2", "client-individual", &[])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let m = c.recv().await.unwrap();
        got.push(postbus_tests::body(&m));
        held.push(m);
    }
    assert_eq!(got, ["order 0", "order 2", "order 3", "order 4"]);
    let (s, _, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/admin/queues/orders/messages/{}", all[0]),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("held by a consumer"));
    for m in &held {
        c.ack(m, None).await.unwrap();
    }
    c.unsubscribe("s2").await.unwrap();
    // Settings change while the broker runs: max_deliveries 1 -> 3 takes effect at once.
    let (s, _, v) = call(
        &b,
        Method::PATCH,
        "/v1/admin/queues/orders",
        &op,
        Some(json!({"max_deliveries": 3, "redelivery_delay_ms": 0})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["settings"]["max_deliveries"], 3);
    let (s, _, v) = call(
        &b,
        Method::PATCH,
        "/v1/admin/queues/orders",
        &op,
        Some(json!({"max_deliveries": 0})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = call(
        &b,
        Method::PATCH,
        "/v1/admin/queues/orders",
        &team,
        Some(json!({"max_deliveries": 5})),
    )
    .await;
    assert_eq!(s, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send("/queue/orders", "again", &[]).await.unwrap();
    c.subscribe("/queue/orders", "s3", "client-individual", &[])
        .await
        .unwrap();
    let m = c.recv().await.unwrap();
    c.nack(&m, None).await.unwrap();
    let m = c
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("redelivered: max_deliveries is 3 now, not 1");
    assert_eq!(m.header("redelivered"), Some("true"));
    c.ack(&m, None).await.unwrap();
    assert_eq!(b.depth("DLQ.orders").await, 0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, v) = call(&b, Method::GET, "/v1/admin/audit?limit=1000", &op, None).await;
    let kinds: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for want in [
        "message.replayed",
        "message.moved",
        "message.deleted",
        "destination.updated",
    ] {
        assert!(kinds.contains(&want), "{want} missing in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_and_close_connections_and_manage_subscriptions_and_policies() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.toml"), POLICIES).unwrap();
    let verifier = Verifier::new(
        JwtSettings::default(),
        &[KeyMaterial::HmacSecret(SECRET.to_vec())],
    )
    .unwrap();
    let policies = postbus_broker::security::read_policy_dir(dir.path()).unwrap();
    let b = TestBroker::start_secured(
        test_config(),
        Arc::new(Security::new(Some(verifier), false, policies).with_policy_dir(dir.path().into())),
    )
    .await;
    let op = token("olga", &["operator"]);
    let team = token("tom", &["team"]);
    let mut c = b
        .client_with(postbus_client::ConnectOptions {
            passcode: Some(op.clone()),
            client_id: Some("ledger".into()),
            ..Default::default()
        })
        .await;
    c.subscribe("/queue/work", "q", "client", &[("prefetch", "7")])
        .await
        .unwrap();
    c.subscribe(
        "/topic/prices",
        "t",
        "auto",
        &[
            ("durable-subscription-name", "book"),
            ("selector", "price > 10"),
        ],
    )
    .await
    .unwrap();

    let (s, _, v) = call(&b, Method::GET, "/v1/admin/connections", &op, None).await;
    assert_eq!(s, 200, "{v}");
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{v}");
    assert_eq!(conns[0]["principal"], "olga");
    assert_eq!(conns[0]["client_id"], "ledger");
    assert_eq!(conns[0]["subscriptions"], 2);
    let conn = conns[0]["id"].as_u64().unwrap();
    let (_, _, v) = call(&b, Method::GET, "/v1/admin/consumers", &op, None).await;
    let consumers = v["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 2, "{v}");
    let work = consumers
        .iter()
        .find(|k| k["destination"] == "/queue/work")
        .expect("the queue consumer");
    assert_eq!(
        (work["ack"].clone(), work["prefetch"].clone()),
        (json!("client"), json!(7))
    );
    // A topic subscriber consumes its subscription (the selector is the subscription's).
    assert!(
        consumers.iter().any(|k| k["destination"]
            .as_str()
            .unwrap()
            .starts_with("/subscription/")
            && k["ack"] == "auto"),
        "{v}"
    );
    let (s, _, _) = call(&b, Method::GET, "/v1/admin/connections", &team, None).await;
    assert_eq!(
        s, 403,
        "connections are for those who administer everything"
    );
    let (_, _, v) = call(&b, Method::GET, "/v1/admin/consumers", &team, None).await;
    assert_eq!(
        v["consumers"],
        json!([]),
        "a team sees no consumers of others"
    );

    let (_, _, v) = call(&b, Method::GET, "/v1/admin/subscriptions", &op, None).await;
    let subs = v["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{v}");
    assert_eq!(
        (
            subs[0]["durable"].clone(),
            subs[0]["topic"].clone(),
            subs[0]["selector"].clone()
        ),
        (json!(true), json!("prices"), json!("price > 10"))
    );
    let name = subs[0]["name"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/subscriptions/{name}");
    let (s, _, v) = call(&b, Method::DELETE, &path, &op, None).await;
    assert_eq!(s, 409, "a consumer is attached: {v}");

    // Closing the connection: its client hears why.
    let (s, _, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/admin/connections/{conn}"),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let err = c.recv().await.expect_err("the connection is closed");
    assert!(
        err.to_string().contains("closed by an administrator"),
        "{err}"
    );
    eventually("the connection to go", async || {
        call(&b, Method::GET, "/v1/admin/connections", &op, None)
            .await
            .2["connections"]
            == json!([])
    })
    .await;
    let (s, _, _) = call(
        &b,
        Method::DELETE,
        &format!("/v1/admin/connections/{conn}"),
        &op,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, v) = call(&b, Method::DELETE, &path, &op, None).await;
    assert_eq!(s, 200, "{v}");
    let (_, _, v) = call(&b, Method::GET, "/v1/admin/subscriptions", &op, None).await;
    assert_eq!(v["subscriptions"], json!([]));

    // Policy reload on request: a broken file is refused and the old rules stay.
    let (s, _, v) = call(&b, Method::POST, "/v1/admin/policies/reload", &op, None).await;
    assert_eq!((s, v["rules"].clone()), (200, json!(2)), "{v}");
    std::fs::write(dir.path().join("broken.toml"), "[[rule]]\nname = ").unwrap();
    let (s, _, v) = call(&b, Method::POST, "/v1/admin/policies/reload", &op, None).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("broken.toml"), "{v}");
    std::fs::write(
        dir.path().join("broken.toml"),
        "[[rule]]\nname = \"team-delete\"\neffect = \"allow\"\nroles = [\"team\"]\nactions = [\"delete\"]\ndestinations = [\"/queue/team.>\"]\n",
    )
    .unwrap();
    let (s, _, v) = call(&b, Method::POST, "/v1/admin/policies/reload", &op, None).await;
    assert_eq!((s, v["rules"].clone()), (200, json!(3)), "{v}");
    let (s, _, _) = call(&b, Method::POST, "/v1/admin/policies/reload", &team, None).await;
    assert_eq!(s, 403);

    // Health: live without the database, ready with it.
    let r = reqwest::get(format!("{}/health/ready", b.http))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
