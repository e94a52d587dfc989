//! The HTTP listener: liveness and readiness (readiness checks the database).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use postbus_store::Store;

pub async fn serve(listener: tokio::net::TcpListener, store: Store) {
    let app = Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .with_state(store);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP listener stopped");
    }
}

async fn ready(State(store): State<Store>) -> (StatusCode, String) {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}
