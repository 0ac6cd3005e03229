//! `GET /healthz` (the process is alive) and `GET /readyz` (it can accept beacons: the spool has room and the store
//! has not been failing for long).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;

/// Store failures tolerated before readiness turns false.
pub const STORE_FAILING_GRACE_MS: i64 = 30_000;

/// Liveness.
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness, with the reasons when not ready.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    let failing_since = state.writer.failing_since_ms.load(Ordering::Relaxed);
    let store_ok = failing_since == 0 || now - failing_since < STORE_FAILING_GRACE_MS;
    let stats = state.intake.spool().stats();
    let spool_bytes = stats.bytes.load(Ordering::Relaxed);
    let spool_ok = spool_bytes < state.spool_max_bytes;
    let ready = store_ok && spool_ok;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": if failing_since == 0 { "ok" } else if store_ok { "degraded" } else { "failing" },
        "store_error": state.writer.last_error.lock().expect("health lock").clone(),
        "spool": {
            "status": if spool_ok { "ok" } else { "full" },
            "bytes": spool_bytes,
            "max_bytes": state.spool_max_bytes,
            "unstored": stats.last_seq.load(Ordering::Relaxed).saturating_sub(state.writer.stored_through.load(Ordering::Relaxed)),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
