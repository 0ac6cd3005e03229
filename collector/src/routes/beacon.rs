//! `POST /v1/beacon`: decode, validate, admit by policy, enqueue. No storage I/O here.
//!
//! Order of checks, cheapest and most telling first: media type and encoding (415), size (413), bots (204, not
//! stored), JSON and fields (400), site and origin (403), rate limit (429), sampling (204, not stored), then the
//! durable spool (503 when full or the disk is). Only a beacon written to the spool is answered 204.

use super::request_id::RequestId;
use super::AppState;
use crate::error::{IngestError, ORIGIN_NOT_ALLOWED, UNKNOWN_SITE};
use crate::policy::bots::is_bot;
use crate::policy::client_ip::client_ip;
use crate::policy::file::Admission;
use crate::telemetry::metrics::Shed;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use storage::Accepted;
use vitals::DeviceClass;

/// Largest beacon body, after decompression: what `sendBeacon` allows in flight.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Any site may post beacons (sendBeacon ignores the answer; `fetch` clients read it).
fn with_cors(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// What the checks decided for a beacon.
enum Outcome {
    /// Goes to the spool.
    Store(Accepted),
    /// Answered 204 but not stored.
    Dropped(Shed),
}

/// The handler.
pub async fn post_beacon(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = match check(&state, peer, &headers, body) {
        Ok(Outcome::Store(accepted)) => store(&state, accepted).await.map(|()| None),
        Ok(Outcome::Dropped(why)) => Ok(Some(why)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(None) => with_cors(StatusCode::NO_CONTENT.into_response()),
        Ok(Some(why)) => {
            state.metrics.shed(why);
            with_cors(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            let reason = e.count(&state.metrics);
            let id = request_id
                .as_ref()
                .map_or("", |Extension(RequestId(id))| id.as_str());
            state.refusal_log.refused(reason, id, &e);
            with_cors(e.into_response())
        }
    }
}

fn body_bytes(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, IngestError> {
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
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge(MAX_BODY_BYTES)
        } else {
            IngestError::Unreadable(e.body_text())
        }
    })?;
    match encoding.as_deref() {
        None | Some("identity") => Ok(body),
        Some("gzip") => {
            // Read at most one byte past the limit: a gzip bomb costs 64 KiB of memory, not its expansion.
            let mut out = Vec::with_capacity(body.len().min(MAX_BODY_BYTES) * 2);
            let mut dec = flate2::read::GzDecoder::new(&body[..]).take(MAX_BODY_BYTES as u64 + 1);
            dec.read_to_end(&mut out)
                .map_err(|e| IngestError::Unreadable(format!("gzip: {e}")))?;
            if out.len() > MAX_BODY_BYTES {
                return Err(IngestError::TooLarge(MAX_BODY_BYTES));
            }
            Ok(out.into())
        }
        Some(other) => Err(IngestError::UnsupportedEncoding(other.to_string())),
    }
}

fn check(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Outcome, IngestError> {
    let body = body_bytes(headers, body)?;
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let user_agent = header_str("user-agent");
    let policy = state.policy.get();
    if policy.bot_filter && is_bot(user_agent) {
        return Ok(Outcome::Dropped(Shed::Bot));
    }
    let beacon = vitals::decode_beacon(&body)?;
    let site = beacon.site.as_str();
    match policy.admit(site, header_str("origin")) {
        Admission::Accept => {}
        Admission::UnknownSite => return Err(IngestError::Forbidden(UNKNOWN_SITE)),
        Admission::Origin => return Err(IngestError::Forbidden(ORIGIN_NOT_ALLOWED)),
    }
    if let Some(limit) = policy.rate_limit(site) {
        let ip = client_ip(&policy, peer.ip(), headers);
        if !state
            .limiter
            .allow(site, ip, limit, std::time::Instant::now())
        {
            return Err(IngestError::RateLimited);
        }
    }
    let rate = policy.sample_rate(site);
    if rate < 1.0 && rand::random::<f64>() >= rate {
        return Ok(Outcome::Dropped(Shed::SampledOut));
    }
    let device = DeviceClass::from_headers(user_agent, header_str("sec-ch-ua-mobile"));
    // The id is the spool's sequence number, assigned when the record is written.
    Ok(Outcome::Store(Accepted {
        id: 0,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        device,
        beacon,
    }))
}

/// Hands an accepted beacon to the spool and waits until it is written.
async fn store(state: &AppState, mut accepted: Accepted) -> Result<(), IngestError> {
    let samples = accepted.beacon.metrics.len() as u64;
    accepted.id = state.intake.offer(&accepted).await?;
    state
        .metrics
        .beacons_accepted
        .fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .samples_accepted
        .fetch_add(samples, Ordering::Relaxed);
    // /v1/recent shows only what was accepted.
    state.recent.push(accepted);
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
        HeaderValue::from_static("content-type, content-encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}
