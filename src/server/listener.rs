//! The accept loop: connections up to a cap, each served on its own task,
//! until one shutdown future resolves; then every connection finishes the
//! request it is serving and closes.
//!
//! The binary passes the shutdown future (SIGINT or SIGTERM), made once:
//! a future re-created on every pass of the loop would miss a signal that
//! arrived while none existed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::api::Api;
use super::connection::{self, ConnectionLimits};

/// How long to wait for requests in flight after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve_until(
    listener: TcpListener,
    api: Arc<Api>,
    max_connections: usize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (stopping, stop) = connection::stop_signal();
    loop {
        // At the connection cap, stop accepting until one closes: the
        // kernel's backlog holds the rest.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A failed accept (out of file descriptors, a reset
                // connection) must not stop the server.
                Err(error) => {
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; Nagle's algorithm would hold a
        // pipelined client's answers back for the delayed ACK (40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {error}");
        }
        let api = Arc::clone(&api);
        let stop = stop.clone();
        tokio::spawn(async move {
            // However it ends (the client left, a timeout, shutdown), the
            // permit goes back.
            let _closed = connection::serve(stream, api, limits, stop).await;
            drop(permit);
        });
    }
    tracing::info!("shutting down: no longer accepting connections, finishing requests in flight");
    drop(listener);
    stopping.stop();
    // Every connection holds a permit until it has closed: having them all
    // back means no request is in flight.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(all)).await;
    match drained {
        Ok(_) => tracing::info!("all requests finished"),
        Err(_) => tracing::warn!("gave up waiting for requests after {DRAIN_TIMEOUT:?}"),
    }
}
