//! The HTTP admin API (docs/operations.md, "Admin API"): destinations (list, show, create,
//! delete, purge), a policy check and the audit log, authenticated like every HTTP call and
//! authorized by the policies' `admin`, `create`, `delete` and `purge` actions. Changes are
//! audited. Errors are `application/problem+json` (RFC 9457). The OpenAPI description is
//! served at `/v1/admin/openapi.json`.

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
        .route("/v1/admin/queues/{name}", get(show).delete(delete))
        .route("/v1/admin/queues/{name}/purge", post(purge))
        .route("/v1/admin/policies/check", post(check))
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
    authorize(&engine, &who, Action::Admin, "/*/>")?;
    let records = engine
        .store()
        .audit_page(q.after, q.limit.clamp(1, 10_000))
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "records": records })).into_response())
}
