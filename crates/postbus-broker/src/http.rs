//! The HTTP listener's routes: liveness and readiness (readiness checks the database), and
//! the HTTP messaging API of docs/http-api.md (the logic is in [`crate::rest`]; this maps
//! routes, JSON and status codes).

use crate::Engine;
use crate::rest::{self, ApiError, ReceiveRequest, SendRequest};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postbus_auth::{Action, Identity};
use postbus_model::{Destination, DestinationKind};
use serde::Deserialize;
use serde_json::json;

/// Serves the HTTP API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, engine: Engine) {
    if let Err(e) = axum::serve(listener, router(engine)).await {
        tracing::error!(error = %e, "HTTP listener stopped");
    }
}

/// Every route of the HTTP listener.
pub fn router(engine: Engine) -> Router {
    // A JSON body carries the message body as text or base64 (4/3 of its size), plus headers.
    let body_limit = engine.config().max_body_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/v1/queues/{name}/messages", post(send_queue))
        .route("/v1/topics/{name}/messages", post(send_topic))
        .route("/v1/temp-queues/{name}/messages", post(send_temp_queue))
        .route("/v1/queues/{name}/receive", post(receive_queue))
        .route(
            "/v1/subscriptions/{name}/receive",
            post(receive_subscription),
        )
        .route("/v1/receipts/{receipt}/ack", post(ack))
        .route("/v1/receipts/{receipt}/nack", post(nack))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(engine)
}

async fn ready(State(engine): State<Engine>) -> (StatusCode, String) {
    match engine.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// An API error as `{"error": "..."}` with its status.
struct Failure(StatusCode, String);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let status = match e {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure(status, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("a header value"),
            );
        }
        r
    }
}

/// Who sends the request: its bearer token, verified (401 when missing or refused).
fn identify(engine: &Engine, headers: &HeaderMap) -> Result<Identity, Failure> {
    let token = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            match v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                Some(t) => Some(t.trim()),
                None => {
                    return Err(Failure(
                        StatusCode::UNAUTHORIZED,
                        "the Authorization header must be `Bearer <JWT>`".into(),
                    ));
                }
            }
        }
    };
    engine
        .security()
        .authenticate(token)
        .map_err(|e| Failure(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// 403 unless the policies allow `who` to do `action` to `destination`.
fn authorize(
    engine: &Engine,
    who: &Identity,
    action: Action,
    destination: &str,
) -> Result<(), Failure> {
    let d = engine.security().decide(who, action, destination);
    if d.allowed {
        return Ok(());
    }
    tracing::warn!(principal = %who.principal, action = action.as_str(), destination, reason = %d.explain(), "authorization denied (HTTP)");
    Err(Failure(
        StatusCode::FORBIDDEN,
        format!(
            "not authorized: {} may not {action} {destination} ({})",
            who.principal,
            d.explain()
        ),
    ))
}

/// The request body as JSON, with a 400 that says what is wrong (axum's own rejection text
/// is kept: it names the field and the position).
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON for this call: {e}"),
        )
    })
}

async fn send_to(
    engine: &Engine,
    headers: &HeaderMap,
    kind: DestinationKind,
    name: &str,
    body: &[u8],
) -> Result<Response, Failure> {
    let who = identify(engine, headers)?;
    let destination = Destination::parse_stomp(&format!("/{}/{name}", kind.as_str()))
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, e.to_string()))?;
    let stomp = destination.to_stomp();
    authorize(engine, &who, Action::Send, &stomp)?;
    if kind != DestinationKind::TempQueue
        && !engine
            .security()
            .decide(&who, Action::Create, &stomp)
            .allowed
        && !engine
            .destination_exists(kind, name)
            .await
            .map_err(|e| Failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
    {
        authorize(engine, &who, Action::Create, &stomp)?;
    }
    let req: SendRequest = parse(body)?;
    // JMSXUserID is the authenticated principal, whatever the request says.
    let message = rest::new_message(req, Some(&who.principal), postbus_model::now_ms())?;
    let sent = rest::send(engine, &destination, message).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(sent)).into_response())
}

async fn send_queue(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, &headers, DestinationKind::Queue, &name, &body).await
}

async fn send_topic(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, &headers, DestinationKind::Topic, &name, &body).await
}

async fn send_temp_queue(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, &headers, DestinationKind::TempQueue, &name, &body).await
}

async fn receive_from(
    engine: &Engine,
    headers: &HeaderMap,
    destination: String,
    body: &[u8],
) -> Result<Response, Failure> {
    let who = identify(engine, headers)?;
    authorize(engine, &who, Action::Consume, &destination)?;
    let req: ReceiveRequest = parse(body)?;
    let messages = rest::receive(engine, &destination, req).await?;
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn receive_queue(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    receive_from(&engine, &headers, format!("/queue/{name}"), &body).await
}

async fn receive_subscription(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    receive_from(&engine, &headers, format!("/subscription/{name}"), &body).await
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackRequest {
    error: Option<String>,
}

async fn settle(
    engine: &Engine,
    receipt: &str,
    ack: bool,
    error: Option<&str>,
) -> Result<Response, Failure> {
    if rest::settle(engine, receipt, ack, error).await? {
        Ok(Json(json!({ "settled": true })).into_response())
    } else {
        Err(Failure(
            StatusCode::CONFLICT,
            format!(
                "receipt {receipt} no longer holds its message: it was settled already, or its lease ran out and the message went back to its queue (receive it again)"
            ),
        ))
    }
}

async fn ack(
    State(engine): State<Engine>,
    Path(receipt): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    identify(&engine, &headers)?;
    settle(&engine, &receipt, true, None).await
}
async fn nack(
    State(engine): State<Engine>,
    Path(receipt): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    identify(&engine, &headers)?;
    let req: NackRequest = parse(&body)?;
    settle(&engine, &receipt, false, req.error.as_deref()).await
}
