//! HTTP routes of the public listener.

pub mod admin;
pub mod beacon;
pub mod beacon_files;
pub mod envelope;
pub mod health;
pub mod recent;
pub mod request_id;

use crate::intake::Intake;
use crate::policy::rate_limit::RateLimiter;
use crate::policy::PolicyHandle;
use crate::recent::Recent;
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;
use storage::embedded::WriterHealth;

/// The ingest route (the one served on each connection's own thread, see [`crate::server::ConnectionThreads`]).
pub const BEACON_PATH: &str = "/v1/beacon";

/// State shared by the collector's own handlers: one `Arc`, because every request clones it (the handler's
/// `State`) and drops it again. As a struct of `Arc`s that was eight atomic counter updates each way, on cache
/// lines every connection thread shares.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(shared: SharedState) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct SharedState {
    /// The queue to the store.
    pub intake: Intake,
    /// Recent samples per site.
    pub recent: Arc<Recent>,
    /// The store writer's health.
    pub writer: Arc<WriterHealth>,
    /// Per-site policy.
    pub policy: PolicyHandle,
    /// Per-client rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Declared metrics.
    pub metrics: Arc<Metrics>,
    /// The spool's size limit (readiness turns false at it).
    pub spool_max_bytes: u64,
    /// The deadline for reading a beacon's body (the router's timeout layer covers the other routes).
    pub request_timeout: std::time::Duration,
    /// Refusals, logged once per reason per interval.
    pub refusal_log: Arc<crate::telemetry::refusal_log::RefusalLog>,
}
