//! The envelope of every request of the public listener, in one middleware: a request id (kept from a proxy or
//! made, echoed, carried by the request's log events through a span), the security headers, and the request's count and
//! time by matched route and status class. One layer instead of three: each `from_fn` layer boxes a future and
//! clones its state per request, a measurable share of the ingest path's CPU. `POST /v1/beacon`, the one route
//! that carries the load, does the same work itself without the layer ([`finish`]; see `beacon.rs`).

use super::request_id;
use crate::policy::PolicyHandle;
use crate::telemetry::metrics::{Metrics, Route};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What the envelope needs.
#[derive(Clone)]
pub struct Envelope {
    /// Request counts and times.
    pub metrics: Arc<Metrics>,
    /// For HSTS.
    pub policy: PolicyHandle,
}

/// The middleware.
pub async fn envelope(State(env): State<Envelope>, req: Request, next: Next) -> Response {
    let id = request_id::incoming_or_new(req.headers());
    let route = Route::from_matched(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let span = tracing::info_span!("request", request_id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span).await;
    finish(
        &mut resp,
        &id,
        env.policy.get().hsts,
        &env.metrics,
        route,
        start,
    );
    resp
}

/// What every response gets on its way out: the security headers, the echoed request id, and its count and time.
pub fn finish(
    resp: &mut Response,
    id: &str,
    hsts: bool,
    metrics: &Metrics,
    route: Route,
    start: Instant,
) {
    crate::security::headers::apply(resp.headers_mut(), hsts);
    request_id::echo(resp, id);
    metrics.request(route, resp.status().as_u16(), start.elapsed());
}
