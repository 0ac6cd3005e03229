//! Benchmark (1), the limit: the least a Rust HTTP service can do to accept a beacon — read the body, answer 204.
//! Same stack as the collector (axum on hyper, tokio's multi-threaded runtime), none of its work.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::net::SocketAddr;

async fn accept(body: Bytes) -> StatusCode {
    // Touch the body so the read cannot be optimised away.
    std::hint::black_box(body.len());
    StatusCode::NO_CONTENT
}

/// Serves `POST /v1/beacon` → 204 on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route("/v1/beacon", post(accept));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench-sink listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
