//! `POST /v1/beacon`: decode, validate, enqueue. No storage I/O here.

use super::AppState;
use crate::error::IngestError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use storage::Accepted;
use vitals::DeviceClass;

/// Largest beacon body: what `sendBeacon` allows in flight.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Any site may post beacons (sendBeacon ignores the answer; `fetch` clients read it).
fn with_cors(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// The handler.
pub async fn post_beacon(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept(&state, &headers, body) {
        Ok(()) => with_cors(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            tracing::debug!(reason = e.reason(), error = %e, "beacon refused");
            with_cors(e.into_response())
        }
    }
}

fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), IngestError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "text/plain" && essence != "application/json" {
            return Err(IngestError::UnsupportedMediaType(ct.to_string()));
        }
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge(MAX_BODY_BYTES)
        } else {
            IngestError::Unreadable(e.body_text())
        }
    })?;
    let beacon = vitals::decode_beacon(&body)?;
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let device =
        DeviceClass::from_headers(header_str("user-agent"), header_str("sec-ch-ua-mobile"));
    let accepted = Accepted {
        id: state.intake.next_id(),
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        device,
        beacon,
    };
    // /v1/recent shows only what was accepted, so its entries are built now and kept once the queue took the beacon.
    let (site, entries) = crate::recent::Recent::prepare(&accepted);
    state.intake.offer(accepted)?;
    state.recent.push(site, entries);
    Ok(())
}

/// `OPTIONS /v1/beacon`: lets `fetch` clients that send `application/json` pass their preflight.
pub async fn preflight() -> Response {
    let mut resp = with_cors(StatusCode::NO_CONTENT.into_response());
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}
