//! The STOMP listener: accepts TCP connections (TLS when configured), enforces the
//! connection limit, and runs one session task per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::SinkExt;
use postbus_stomp::{Command, Frame, StompCodec};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedWrite;

use crate::engine::Engine;
use crate::session::run_session;
use crate::tls::{Tls, peer_principal};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves plain STOMP on `listener` until the task is dropped.
pub async fn serve_stomp(engine: Engine, listener: TcpListener) {
    serve_stomp_with(engine, listener, None).await
}

/// Serves STOMP on `listener`, over TLS when `tls` is given.
pub async fn serve_stomp_with(engine: Engine, listener: TcpListener, tls: Option<Arc<Tls>>) {
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
        // One connection per turn of the scheduler: in a storm of new connections the
        // established sessions' work runs between them, not behind thousands of them.
        tokio::task::yield_now().await;
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let engine = engine.clone();
                let acceptor = tls.as_ref().map(|t| t.acceptor());
                let metrics = engine.metrics().clone();
                metrics.connections.inc();
                metrics.connections_opened.inc();
                tokio::spawn(async move {
                    match acceptor {
                        None => run_session(engine, socket, peer, None).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket))
                                .await
                            {
                                Ok(Ok(stream)) => {
                                    let principal = peer_principal(stream.get_ref().1);
                                    run_session(engine, stream, peer, principal).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                    metrics.connections.dec();
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
