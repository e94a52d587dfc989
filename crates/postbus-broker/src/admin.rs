//! The HTTP admin API (docs/operations.md, "Admin API"): destinations (list, show, create,
//! update settings, delete, purge), a queue's messages (browse with a selector and paging,
//! fetch, delete, move, replay from a dead-letter queue), this broker's connections and
//! consumers (list, close), topic subscriptions (list, delete), policies (check, reload) and
//! the audit log, authenticated like every HTTP call and authorized by the policies' `admin`,
//! `browse`, `send`, `create`, `delete` and `purge` actions. Changes are audited. Errors are
//! `application/problem+json` (RFC 9457). The OpenAPI description is served at
//! `/v1/admin/openapi.json`.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postbus_auth::{Action, Identity};
use postbus_model::{DestinationKind, QueueSettings};
use postbus_store::AuditRecord;
use serde::Deserialize;
use serde_json::json;

use crate::Engine;
use crate::http::Caller;

/// The routes, to merge into the HTTP router.
pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/v1/admin/openapi.json", get(openapi))
        .route("/v1/admin/destinations", get(list))
        .route("/v1/admin/queues", post(create))
        .route(
            "/v1/admin/queues/{name}",
            get(show).delete(delete).patch(update),
        )
        .route("/v1/admin/queues/{name}/purge", post(purge))
        .route("/v1/admin/queues/{name}/messages", get(messages))
        .route(
            "/v1/admin/queues/{name}/messages/{id}",
            get(message).delete(delete_message),
        )
        .route(
            "/v1/admin/queues/{name}/messages/{id}/move",
            post(move_message),
        )
        .route("/v1/admin/queues/{name}/replay", post(replay))
        .route("/v1/admin/connections", get(connections))
        .route(
            "/v1/admin/connections/{id}",
            axum::routing::delete(close_connection),
        )
        .route("/v1/admin/consumers", get(consumers))
        .route("/v1/admin/subscriptions", get(subscriptions))
        .route(
            "/v1/admin/subscriptions/{name}",
            axum::routing::delete(delete_subscription),
        )
        .route("/v1/admin/policies/check", post(check))
        .route("/v1/admin/policies/reload", post(reload_policies))
        .route("/v1/admin/audit", get(audit))
}

/// An RFC 9457 problem.
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(json!({
                "type": "about:blank",
                "title": self.title,
                "status": self.status.as_u16(),
                "detail": self.detail,
            })),
        )
            .into_response()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database unavailable",
        format!("{e}; retry later"),
    )
}

/// 403 (audited) unless the policies allow it.
fn authorize(
    engine: &Engine,
    who: &Identity,
    action: Action,
    destination: &str,
) -> Result<(), Problem> {
    engine
        .authorize(who, action, destination, "admin")
        .map_err(|why| Problem::new(StatusCode::FORBIDDEN, "not authorized", why))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("admin_openapi.json"),
    )
        .into_response()
}

/// Every destination the caller may administer, with its depth.
async fn list(State(engine): State<Engine>, Caller(who): Caller) -> Result<Response, Problem> {
    let stats = engine
        .store()
        .destination_stats()
        .await
        .map_err(unavailable)?;
    let visible: Vec<_> = stats
        .into_iter()
        .filter(|s| {
            engine
                .security()
                .decide(&who, Action::Admin, &format!("/{}/{}", s.kind, s.name))
                .allowed
        })
        .collect();
    Ok(Json(json!({ "destinations": visible })).into_response())
}

async fn show(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    authorize(&engine, &who, Action::Admin, &dest)?;
    let row = find(&engine, &name).await?;
    let stats = engine
        .store()
        .destination_stats()
        .await
        .map_err(unavailable)?
        .into_iter()
        .find(|s| s.id == row.id);
    Ok(Json(json!({"name": name, "settings": row.settings, "depth": stats})).into_response())
}

async fn find(engine: &Engine, name: &str) -> Result<postbus_store::DestinationRow, Problem> {
    engine
        .store()
        .find_destination(DestinationKind::Queue, name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such queue",
                format!("queue {name} does not exist"),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQueue {
    name: String,
    #[serde(default)]
    settings: Option<SettingsRequest>,
}

/// Queue settings; what is left out keeps its default (docs/configuration.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    max_deliveries: Option<i32>,
    redelivery_delay_ms: Option<i64>,
    redelivery_backoff: Option<f64>,
    redelivery_max_delay_ms: Option<i64>,
    dead_letter_queue: Option<String>,
    expiry_queue: Option<String>,
    dedup_window_ms: Option<i64>,
    exclusive: Option<bool>,
    audit_messages: Option<bool>,
}

async fn create(
    State(engine): State<Engine>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let req: CreateQueue = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad request",
            format!("the body is not a queue to create: {e}"),
        )
    })?;
    postbus_model::destination::validate_name(&req.name)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad queue name", e.to_string()))?;
    let dest = format!("/queue/{}", req.name);
    authorize(&engine, &who, Action::Create, &dest)?;
    let s = req.settings.unwrap_or_default();
    let d = QueueSettings::default();
    let settings = QueueSettings {
        max_deliveries: s.max_deliveries.unwrap_or(d.max_deliveries),
        redelivery_delay_ms: s.redelivery_delay_ms.unwrap_or(d.redelivery_delay_ms),
        redelivery_backoff: s.redelivery_backoff.unwrap_or(d.redelivery_backoff),
        redelivery_max_delay_ms: s
            .redelivery_max_delay_ms
            .unwrap_or(d.redelivery_max_delay_ms),
        dead_letter_queue: s.dead_letter_queue,
        expiry_queue: s.expiry_queue,
        dedup_window_ms: s.dedup_window_ms.unwrap_or(d.dedup_window_ms),
        exclusive: s.exclusive.unwrap_or(false),
        audit_messages: s.audit_messages.unwrap_or(false),
        max_depth: 0,
    };
    let (row, created) = engine
        .store()
        .create_destination(DestinationKind::Queue, &req.name, &settings, false)
        .await
        .map_err(|e| match e {
            postbus_store::StoreError::Db(ref db) if db.as_db_error().is_some() => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid settings", format!("{e}"))
            }
            other => unavailable(other),
        })?;
    if !created {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "queue exists",
            format!(
                "queue {} already exists (its settings were left as they are)",
                req.name
            ),
        ));
    }
    engine.audit(
        AuditRecord::new("destination.created")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"settings": row.settings, "via": "admin"})),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": row.name, "id": row.id, "settings": row.settings})),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    authorize(&engine, &who, Action::Delete, &dest)?;
    let row = find(&engine, &name).await?;
    let deleted = engine
        .store()
        .delete_destination(row.id, q.force)
        .await
        .map_err(|e| match e {
            postbus_store::StoreError::Conflict(m) => Problem::new(
                StatusCode::CONFLICT,
                "queue not empty",
                format!("{m} (add ?force=true to delete its messages too)"),
            ),
            other => unavailable(other),
        })?;
    engine.forget_queue(row.id);
    engine.audit(
        AuditRecord::new("destination.deleted")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"messages": deleted, "via": "admin"})),
    );
    Ok(Json(json!({"name": name, "deleted_messages": deleted})).into_response())
}

async fn purge(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    authorize(&engine, &who, Action::Purge, &dest)?;
    let row = find(&engine, &name).await?;
    let n = engine.store().purge(row.id).await.map_err(unavailable)?;
    engine.audit(
        AuditRecord::new("destination.purged")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"messages": n, "via": "admin"})),
    );
    Ok(Json(json!({"name": name, "purged": n})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
    action: String,
    destination: String,
}

async fn check(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Json(req): Json<CheckRequest>,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Admin, &req.destination)?;
    let action = Action::parse(&req.action).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown action",
            format!(
                "{:?}: use send, consume, browse, create, delete, purge or admin",
                req.action
            ),
        )
    })?;
    let subject = Identity {
        principal: req.principal,
        roles: req.roles,
        expires_at: None,
    };
    let d = engine.security().decide(&subject, action, &req.destination);
    Ok(
        Json(json!({"allowed": d.allowed, "rule": d.rule, "explanation": d.explain()}))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn audit(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Admin, EVERYTHING)?;
    let records = engine
        .store()
        .audit_page(q.after, q.limit.clamp(1, 10_000))
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "records": records })).into_response())
}

/// Every destination pattern: what broker-wide calls (connections, audit, policy reload) are
/// authorized against.
const EVERYTHING: &str = "/*/>";

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad request", detail)
}

/// A request body as JSON, with a 400 that names what is wrong.
fn body_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Problem> {
    crate::http::json_body(body).map_err(bad_request)
}

/// Queue settings to change: what is left out stays as it is; `null` clears the dead-letter
/// and expiry queue (back to the defaults, `DLQ.<name>` and none).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    max_deliveries: Option<i32>,
    redelivery_delay_ms: Option<i64>,
    redelivery_backoff: Option<f64>,
    redelivery_max_delay_ms: Option<i64>,
    #[serde(default, with = "serde_with_null")]
    dead_letter_queue: Option<Option<String>>,
    #[serde(default, with = "serde_with_null")]
    expiry_queue: Option<Option<String>>,
    dedup_window_ms: Option<i64>,
    exclusive: Option<bool>,
    audit_messages: Option<bool>,
    max_depth: Option<i64>,
}

/// `Option<Option<T>>` from JSON: absent is None, `null` is Some(None).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl SettingsChange {
    /// The first value PostgreSQL's checks would refuse, said in the API's words.
    fn check(&self) -> Result<(), Problem> {
        let bad = |what: &str| Err(bad_request(what.to_owned()));
        if self.max_deliveries.is_some_and(|v| v < 1) {
            return bad("max_deliveries must be at least 1");
        }
        if self
            .redelivery_backoff
            .is_some_and(|v| v.is_nan() || v < 1.0)
        {
            return bad("redelivery_backoff must be a number of at least 1.0");
        }
        for (name, v) in [
            ("redelivery_delay_ms", self.redelivery_delay_ms),
            ("redelivery_max_delay_ms", self.redelivery_max_delay_ms),
            ("dedup_window_ms", self.dedup_window_ms),
            ("max_depth", self.max_depth),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(bad_request(format!("{name} must not be negative")));
            }
        }
        for q in [&self.dead_letter_queue, &self.expiry_queue]
            .into_iter()
            .flatten()
            .flatten()
        {
            postbus_model::destination::validate_name(q)
                .map_err(|e| bad_request(format!("{q:?} is not a queue name: {e}")))?;
        }
        Ok(())
    }

    fn apply(self, s: &mut QueueSettings) {
        if let Some(v) = self.max_deliveries {
            s.max_deliveries = v;
        }
        if let Some(v) = self.redelivery_delay_ms {
            s.redelivery_delay_ms = v;
        }
        if let Some(v) = self.redelivery_backoff {
            s.redelivery_backoff = v;
        }
        if let Some(v) = self.redelivery_max_delay_ms {
            s.redelivery_max_delay_ms = v;
        }
        if let Some(v) = self.dead_letter_queue {
            s.dead_letter_queue = v;
        }
        if let Some(v) = self.expiry_queue {
            s.expiry_queue = v;
        }
        if let Some(v) = self.dedup_window_ms {
            s.dedup_window_ms = v;
        }
        if let Some(v) = self.exclusive {
            s.exclusive = v;
        }
        if let Some(v) = self.audit_messages {
            s.audit_messages = v;
        }
        if let Some(v) = self.max_depth {
            s.max_depth = v;
        }
    }
}

async fn update(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    authorize(&engine, &who, Action::Admin, &dest)?;
    let change: SettingsChange = body_json(&body)?;
    change.check()?;
    let row = find(&engine, &name).await?;
    let updated = engine
        .store()
        .update_settings(row.id, |s| change.apply(s))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such queue",
                format!("queue {name} was deleted meanwhile"),
            )
        })?;
    engine.audit(
        AuditRecord::new("destination.updated")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"before": row.settings, "after": updated.settings, "via": "admin"})),
    );
    Ok(Json(json!({"name": name, "id": updated.id, "settings": updated.settings})).into_response())
}

/// A message as the admin API shows it; with its body when `with_body`.
fn message_json(m: &postbus_store::ManagedMessage, with_body: bool) -> serde_json::Value {
    let msg = &m.message;
    let mut v = json!({
        "id": msg.id.0,
        "message_id": format!("ID:{}", msg.message_id().0),
        "state": m.state,
        "priority": msg.priority,
        "persistent": msg.persistent,
        "timestamp": msg.sent_at,
        "expires": msg.expires_at,
        "delivery_count": msg.delivery_count,
        "group_id": msg.group_id,
        "group_seq": msg.group_seq,
        "correlation_id": msg.correlation_id,
        "reply_to": msg.reply_to,
        "type": msg.jms_type,
        "content_type": msg.content_type,
        "user_id": msg.user_id,
        "properties": msg.properties.to_json().unwrap_or_else(|| json!({})),
        "dead_letter_reason": msg.dlq_reason,
        "origin": msg.original_destination,
        "last_error": msg.last_error,
        "size": m.size,
    });
    if with_body {
        match crate::rest::body_as_json(&msg.body) {
            (Some(text), _) => v["body"] = json!(text),
            (None, b64) => v["body_base64"] = json!(b64),
        }
    }
    v
}

/// A selector from a request, parsed with the broker's limits (400 naming the fault's place).
fn parse_selector(
    engine: &Engine,
    text: Option<&str>,
) -> Result<Option<crate::selecting::ConsumerSelector>, Problem> {
    match text.filter(|s| !s.trim().is_empty()) {
        None => Ok(None),
        Some(t) => crate::selecting::ConsumerSelector::parse(t, &engine.config().selector_limits())
            .map(Some)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid selector", e)),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    selector: Option<String>,
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

async fn messages(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Browse, &format!("/queue/{name}"))?;
    let selector = parse_selector(&engine, q.selector.as_deref())?;
    let row = find(&engine, &name).await?;
    let page = engine
        .store()
        .manage_page(
            row.id,
            q.after,
            q.limit.clamp(1, 1000),
            selector.as_ref().map(|s| &s.selector),
        )
        .await
        .map_err(unavailable)?;
    let list: Vec<_> = page
        .messages
        .iter()
        .map(|m| message_json(m, false))
        .collect();
    Ok(Json(json!({"messages": list, "next_after": page.next_after})).into_response())
}

fn no_message(name: &str, id: i64) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no such message",
        format!(
            "queue {name} holds no message {id} (acknowledged, moved or expired?): list what it holds with GET /v1/admin/queues/{name}/messages"
        ),
    )
}

fn refused(name: &str, id: i64, why: postbus_store::MessageRefusal) -> Problem {
    match why {
        postbus_store::MessageRefusal::NotFound => no_message(name, id),
        postbus_store::MessageRefusal::InFlight => Problem::new(
            StatusCode::CONFLICT,
            "message in flight",
            format!(
                "message {id} of queue {name} is held by a consumer: try again once it is acknowledged or released"
            ),
        ),
    }
}

async fn message(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Browse, &format!("/queue/{name}"))?;
    let row = find(&engine, &name).await?;
    let m = engine
        .store()
        .managed_message(row.id, id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| no_message(&name, id))?;
    Ok(Json(message_json(&m, true)).into_response())
}

async fn delete_message(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    authorize(&engine, &who, Action::Purge, &dest)?;
    let row = find(&engine, &name).await?;
    engine
        .store()
        .delete_message(row.id, id)
        .await
        .map_err(unavailable)?
        .map_err(|why| refused(&name, id, why))?;
    engine.audit(
        AuditRecord::new("message.deleted")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"message": id, "via": "admin"})),
    );
    Ok(Json(json!({"deleted": id})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    to: String,
}

async fn move_message(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path((name, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    let req: MoveRequest = body_json(&body)?;
    if req.to.is_empty() {
        return Err(bad_request(
            "say where to move it: {\"to\": \"queue name\"}",
        ));
    }
    authorize(&engine, &who, Action::Purge, &dest)?;
    authorize(&engine, &who, Action::Send, &format!("/queue/{}", req.to))?;
    let row = find(&engine, &name).await?;
    let target = find(&engine, &req.to).await?;
    engine
        .store()
        .move_message(row.id, id, target.id)
        .await
        .map_err(unavailable)?
        .map_err(|why| refused(&name, id, why))?;
    engine.audit(
        AuditRecord::new("message.moved")
            .principal(who.principal.clone())
            .destination(dest)
            .detail(json!({"message": id, "to": format!("/queue/{}", req.to), "via": "admin"})),
    );
    Ok(Json(json!({"moved": id, "to": req.to})).into_response())
}

/// The most messages one replay call moves (one transaction).
const MAX_REPLAY_PER_CALL: u64 = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    selector: Option<String>,
    limit: Option<u64>,
    to: Option<String>,
    #[serde(default)]
    after: i64,
}

async fn replay(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let dest = format!("/queue/{name}");
    let req: ReplayRequest = body_json(&body)?;
    authorize(&engine, &who, Action::Purge, &dest)?;
    let selector = parse_selector(&engine, req.selector.as_deref())?;
    let row = find(&engine, &name).await?;
    let to = match &req.to {
        Some(t) => {
            authorize(&engine, &who, Action::Send, &format!("/queue/{t}"))?;
            Some(find(&engine, t).await?.id)
        }
        None => None,
    };
    let limit = req.limit.unwrap_or(1000).clamp(1, MAX_REPLAY_PER_CALL);
    let security = engine.security().clone();
    let caller = who.clone();
    // A message goes back only where the caller may send; the others are skipped.
    let may_send = move |queue: &str| {
        security
            .decide(&caller, Action::Send, &format!("/queue/{queue}"))
            .allowed
    };
    let out = engine
        .store()
        .replay(
            row.id,
            req.after,
            limit,
            selector.as_ref().map(|s| &s.selector),
            to,
            &may_send,
        )
        .await
        .map_err(unavailable)?;
    if out.moved > 0 {
        engine.audit(
            AuditRecord::new("message.replayed")
                .principal(who.principal.clone())
                .destination(dest)
                .detail(json!({
                    "messages": out.moved,
                    "selector": req.selector,
                    "to": req.to,
                    "via": "admin",
                })),
        );
    }
    Ok(Json(json!({
        "moved": out.moved,
        "skipped": out.skipped,
        "more": out.next_after.is_some(),
        "next_after": out.next_after,
    }))
    .into_response())
}

async fn connections(
    State(engine): State<Engine>,
    Caller(who): Caller,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Admin, EVERYTHING)?;
    Ok(Json(json!({"node": engine.node().0, "connections": engine.connections()})).into_response())
}

async fn close_connection(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(id): Path<u64>,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Admin, EVERYTHING)?;
    if !engine.close_connection(id) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such connection",
            format!(
                "this broker (node {}) has no connection {id}: list them with GET /v1/admin/connections on the broker that holds it",
                engine.node().0
            ),
        ));
    }
    engine.audit(
        AuditRecord::new("connection.closed")
            .principal(who.principal.clone())
            .detail(json!({"connection": id, "via": "admin"})),
    );
    Ok(Json(json!({"closed": id})).into_response())
}

async fn consumers(State(engine): State<Engine>, Caller(who): Caller) -> Result<Response, Problem> {
    let visible: Vec<_> = engine
        .consumers()
        .into_iter()
        .filter(|c| {
            engine
                .security()
                .decide(&who, Action::Admin, &c.destination)
                .allowed
        })
        .collect();
    Ok(Json(json!({"node": engine.node().0, "consumers": visible})).into_response())
}

async fn subscriptions(
    State(engine): State<Engine>,
    Caller(who): Caller,
) -> Result<Response, Problem> {
    let store = engine.store();
    let rows = store.list_subscriptions().await.map_err(unavailable)?;
    let stats = store.destination_stats().await.map_err(unavailable)?;
    let list: Vec<_> = rows
        .into_iter()
        .filter(|r| {
            engine
                .security()
                .decide(&who, Action::Admin, &format!("/topic/{}", r.topic_pattern))
                .allowed
        })
        .map(|r| {
            let depth = stats.iter().find(|s| s.id == r.destination.id);
            json!({
                "id": r.destination.id,
                "name": r.destination.name,
                "topic": r.topic_pattern,
                "selector": r.selector,
                "durable": r.durable,
                "shared": r.shared,
                "client_id": r.client_id,
                "subscription_name": r.subscription_name,
                "ready": depth.map_or(0, |d| d.ready),
                "in_flight": depth.map_or(0, |d| d.in_flight),
                "scheduled": depth.map_or(0, |d| d.scheduled),
            })
        })
        .collect();
    Ok(Json(json!({ "subscriptions": list })).into_response())
}

async fn delete_subscription(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let row = engine
        .store()
        .find_subscription(&name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no such subscription",
                format!(
                    "there is no subscription {name}: list them with GET /v1/admin/subscriptions"
                ),
            )
        })?;
    let topic = format!("/topic/{}", row.topic_pattern);
    authorize(&engine, &who, Action::Delete, &topic)?;
    let store = engine.store();
    if store
        .subscription_attached(row.destination.id)
        .await
        .map_err(unavailable)?
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "subscription in use",
            format!(
                "subscription {name} has consumers: close them first (GET /v1/admin/consumers, DELETE /v1/admin/connections/ID)"
            ),
        ));
    }
    let depth = store
        .destination_stats()
        .await
        .map_err(unavailable)?
        .into_iter()
        .find(|s| s.id == row.destination.id)
        .map_or(0, |s| s.ready + s.in_flight + s.scheduled);
    engine
        .drop_subscription(row.destination.id)
        .await
        .map_err(unavailable)?;
    engine.audit(
        AuditRecord::new("subscription.deleted")
            .principal(who.principal.clone())
            .destination(topic)
            .detail(json!({"subscription": name, "messages": depth, "via": "admin"})),
    );
    Ok(Json(json!({"deleted": name, "messages": depth})).into_response())
}

async fn reload_policies(
    State(engine): State<Engine>,
    Caller(who): Caller,
) -> Result<Response, Problem> {
    authorize(&engine, &who, Action::Admin, EVERYTHING)?;
    let result = engine.security().reload_policies();
    engine.audit(
        match &result {
            Ok(n) => {
                AuditRecord::new("policy.reloaded").detail(json!({"rules": n, "via": "admin"}))
            }
            Err(why) => {
                AuditRecord::new("policy.rejected").detail(json!({"error": why, "via": "admin"}))
            }
        }
        .principal(who.principal.clone()),
    );
    match result {
        Ok(n) => Ok(Json(json!({"reloaded": true, "rules": n})).into_response()),
        Err(why) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "policies refused",
            format!("{why}; the policies in force stay until the files are fixed"),
        )),
    }
}
