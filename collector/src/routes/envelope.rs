//! Counts every request by matched route and status class, and times it.

use crate::telemetry::metrics::{Metrics, Route};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// The middleware.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = Route::from_matched(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.request(route, resp.status().as_u16(), start.elapsed());
    resp
}
