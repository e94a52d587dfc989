//! The STOMP listener: accepts TCP connections, enforces the connection limit, and runs one
//! session task per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::SinkExt;
use postbus_stomp::{Command, Frame, StompCodec};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedWrite;

use crate::engine::Engine;
use crate::session::run_session;

/// Serves STOMP on `listener` until the task is dropped.
pub async fn serve_stomp(engine: Engine, listener: TcpListener) {
    let limit = engine.config().max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let engine = engine.clone();
                tokio::spawn(async move {
                    run_session(engine, socket, peer).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(refuse(socket, peer, limit));
            }
        }
    }
}

async fn refuse(socket: tokio::net::TcpStream, peer: SocketAddr, limit: usize) {
    tracing::warn!(%peer, limit, "connection refused: too many connections");
    let mut w = FramedWrite::new(socket, StompCodec::default());
    let f = Frame::new(Command::Error)
        .with_header(
            "message",
            format!("too many connections (limit {limit}); try again later"),
        )
        .with_body(format!("the broker's max_connections is {limit}").into_bytes());
    let _ = w.send(f).await;
}
