//! The HTTP listener's routes: liveness and readiness (readiness checks the database), and
//! the HTTP messaging API of docs/http-api.md (the logic is in [`crate::rest`]; this maps
//! routes, JSON and status codes).

use crate::Engine;
use crate::rest::{self, ApiError, ReceiveRequest, SendRequest};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use postbus_auth::{Action, Identity};
use postbus_model::{Destination, DestinationKind};
use postbus_store::AuditRecord;
use serde::Deserialize;
use serde_json::json;

/// Serves the HTTP API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, engine: Engine) {
    serve_with(listener, engine, None).await
}

/// Serves the HTTP API on `listener`, over TLS when `tls` is given (HTTP/1.1 and HTTP/2 as the
/// client offers; the client certificate's subject is offered to authentication).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    engine: Engine,
    tls: Option<std::sync::Arc<crate::tls::Tls>>,
) {
    let app = router(engine);
    let Some(tls) = tls else {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP listener stopped");
        }
        return;
    };
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = tls.acceptor();
        let app = app.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(socket));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed (HTTP)");
                    return;
                }
                Err(_) => return,
            };
            let principal = crate::tls::peer_principal(stream.get_ref().1);
            let service = hyper_util::service::TowerToHyperService::new(
                app.layer(axum::Extension(TlsPeer(principal))),
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Every route of the HTTP listener.
pub fn router(engine: Engine) -> Router {
    // A JSON body carries the message body as text or base64 (4/3 of its size), plus headers.
    let body_limit = engine.config().max_body_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
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
        .merge(crate::admin::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(engine)
}

/// The Prometheus text exposition (unauthenticated, as the health endpoints: it names
/// destinations and counts, never message contents).
async fn metrics(State(engine): State<Engine>) -> Response {
    let m = engine.metrics();
    let (max, size, idle, waiting) = engine.store().pool_status();
    m.db_pool_max.set(max as i64);
    m.db_pool
        .with_label_values(&["in_use"])
        .set(size.saturating_sub(idle) as i64);
    m.db_pool.with_label_values(&["idle"]).set(idle as i64);
    m.db_pool_waiting.set(waiting as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn ready(State(engine): State<Engine>) -> (StatusCode, String) {
    match engine.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// An API error as `{"error": "..."}` with its status.
pub struct Failure(StatusCode, String);

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

/// The subject of a verified TLS client certificate, put on each request of its connection.
#[derive(Clone, Debug)]
pub struct TlsPeer(pub Option<String>);

/// Who sends the request: its bearer token, verified, or its TLS client certificate (401 when
/// neither admits it).
pub struct Caller(pub Identity);

impl axum::extract::FromRequestParts<Engine> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(header::AUTHORIZATION) {
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
        let cert = parts
            .extensions
            .get::<TlsPeer>()
            .and_then(|p| p.0.as_deref());
        engine
            .security()
            .authenticate(token, cert)
            .map(Caller)
            .map_err(|e| {
                engine
                    .metrics()
                    .auth_failures
                    .with_label_values(&["http"])
                    .inc();
                engine.audit(AuditRecord::new("auth.failed").detail(json!({
                    "protocol": "http",
                    "path": parts.uri.path(),
                    "reason": e.to_string(),
                })));
                Failure(StatusCode::UNAUTHORIZED, e.to_string())
            })
    }
}

/// 403 unless the policies allow `who` to do `action` to `destination`.
fn authorize(
    engine: &Engine,
    who: &Identity,
    action: Action,
    destination: &str,
) -> Result<(), Failure> {
    engine
        .authorize(who, action, destination, "http")
        .map_err(|why| Failure(StatusCode::FORBIDDEN, why))
}

/// The request body as JSON, with a 400 that says what is wrong (axum's own rejection text
/// is kept: it names the field and the position).
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    json_body(body).map_err(|e| Failure(StatusCode::BAD_REQUEST, e))
}

/// A request body as JSON (an empty body is the call's defaults), or why it is not, naming
/// the field and the position (the messaging and the admin API both read bodies this way).
pub(crate) fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not valid JSON for this call: {e}"))
}

async fn send_to(
    engine: &Engine,
    who: Identity,
    kind: DestinationKind,
    name: &str,
    body: &[u8],
) -> Result<Response, Failure> {
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
    let message = rest::new_message(req, Some(&who.principal), postbus_store::clock::now_ms())?;
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
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, who, DestinationKind::Queue, &name, &body).await
}

async fn send_topic(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, who, DestinationKind::Topic, &name, &body).await
}

async fn send_temp_queue(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    send_to(&engine, who, DestinationKind::TempQueue, &name, &body).await
}

async fn receive_from(
    engine: &Engine,
    who: Identity,
    destination: String,
    body: &[u8],
) -> Result<Response, Failure> {
    authorize(engine, &who, Action::Consume, &destination)?;
    let req: ReceiveRequest = parse(body)?;
    let messages = rest::receive(engine, &destination, req).await?;
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn receive_queue(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    receive_from(&engine, who, format!("/queue/{name}"), &body).await
}

async fn receive_subscription(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    Caller(who): Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    receive_from(&engine, who, format!("/subscription/{name}"), &body).await
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
    _caller: Caller,
) -> Result<Response, Failure> {
    settle(&engine, &receipt, true, None).await
}
async fn nack(
    State(engine): State<Engine>,
    Path(receipt): Path<String>,
    _caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let req: NackRequest = parse(&body)?;
    settle(&engine, &receipt, false, req.error.as_deref()).await
}
