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
