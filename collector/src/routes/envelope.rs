//! The envelope of every request of the public listener, in one middleware: a request id (kept from a proxy or
//! made, echoed, carried by every log event of the request), the security headers, and the request's count and
//! time by matched route and status class. One layer instead of three: each `from_fn` layer boxes a future and
//! clones its state per request, a measurable share of the ingest path's CPU.

use super::request_id::{self, RequestId};
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
pub async fn envelope(State(env): State<Envelope>, mut req: Request, next: Next) -> Response {
    let id = request_id::incoming_or_new(&req);
    let route = Route::from_matched(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span).await;
    crate::security::headers::apply(resp.headers_mut(), env.policy.get().hsts);
    request_id::echo(&mut resp, &id);
    env.metrics
        .request(route, resp.status().as_u16(), start.elapsed());
    resp
}
