//! Serving a router on a listener with the limits a public endpoint needs: a deadline for request headers
//! (slowloris), a cap on header bytes, the peer address for each request, and a graceful shutdown that stops
//! accepting and lets in-flight requests finish.
//!
//! The header deadline is kept per connection, not per request. hyper's own (`header_read_timeout`) arms and
//! cancels a timer for every request; at the maximum ingest rate that cost 4-7 µs of CPU per beacon (three
//! interleaved pairs: 55.9/54.9/56.1 against 51.5/50.2/49.0 µs). Here each connection has a deadline in an atomic,
//! moved by its requests (none while one is being served; `header_timeout` from when its answer is ready), and one
//! sleeping watchdog that drops the connection once the deadline passes: one timer per connection per
//! `header_timeout`. A connection idle that long between requests is closed too.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send its request headers within this time.
    pub header_timeout: Duration,
    /// Most bytes buffered for request headers (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
}

/// A connection's deadline while it serves a request.
const SERVING: u64 = u64::MAX;

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Serves until `shutdown`; then waits up to `drain` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let epoch = Instant::now();
    let timeout_ms = limits.header_timeout.as_millis() as u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Milliseconds since `epoch` by which the next request head must be complete; `SERVING` while a
                // request is being served (its body and handler have their own deadlines).
                let deadline = Arc::new(AtomicU64::new(ms_since(epoch) + timeout_ms));
                let (on_request, on_answer) = (deadline.clone(), deadline.clone());
                let svc = router
                    .clone()
                    .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                        on_request.store(SERVING, Ordering::Relaxed);
                        let mut req = req.map(axum::body::Body::new);
                        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                        req
                    })
                    .map_response(move |resp| {
                        on_answer.store(ms_since(epoch) + timeout_ms, Ordering::Relaxed);
                        resp
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(limits.max_header_bytes.max(8192))
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    tokio::pin!(watched);
                    loop {
                        let at = deadline.load(Ordering::Relaxed);
                        let wake = if at == SERVING {
                            Instant::now() + limits.header_timeout
                        } else {
                            epoch + Duration::from_millis(at)
                        };
                        tokio::select! {
                            ended = &mut watched => {
                                if let Err(e) = ended {
                                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                                }
                                return;
                            }
                            _ = tokio::time::sleep_until(wake.into()) => {
                                let at = deadline.load(Ordering::Relaxed);
                                if at != SERVING && ms_since(epoch) >= at {
                                    // Dropping the connection closes its socket.
                                    tracing::debug!(%peer, "no complete request head in time; closing the connection");
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "some connections were still open after the drain timeout"
        );
    }
    Ok(())
}
