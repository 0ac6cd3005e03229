//! `POST /v1/beacon`: decode, validate, admit by policy, enqueue. No storage I/O here.
//!
//! Order of checks, cheapest and most telling first: media type and encoding (415), size (413), bots (204, not
//! stored), JSON and fields (400), site and origin (403), rate limit (429), sampling (204, not stored), then the
//! durable spool (503 when full or the disk is). Only a beacon written to the spool is answered 204.
//!
//! This route carries the load, so it sits outside the router's middleware and does that work itself, once: it
//! reads the headers in place (no extractor copies them), reads the body under the request deadline and the size
//! limit, and finishes its refusals like every other route's answers ([`super::envelope::finish`]: security
//! headers, request id, request metrics). Its log events (refusals) carry the request id as a field rather than
//! through a span: a span per beacon would be work on the hottest path for events that rarely happen.
//!
//! The 204 (stored, or dropped as a bot or by sampling) is bare: CORS, and HSTS when configured. It has no body, so
//! the document headers (CSP, framing, sniffing, referrer, resource policy, no-store) protect nothing there, and no
//! log event carries a request id for it. Those headers were ~330 of its ~400 bytes, sent to every visitor of every
//! site for every page view, and encoding and parsing them was a measurable share of ingest on both ends.

use super::{envelope, request_id, AppState};
use crate::error::{IngestError, ORIGIN_NOT_ALLOWED, UNKNOWN_SITE};
use crate::policy::client_ip::client_ip;
use crate::policy::file::{Admission, Policy};
use crate::policy::user_agent;
use crate::telemetry::metrics::{Route, Shed};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;
use storage::Accepted;

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
pub async fn post_beacon(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    // Set by the server for every connection; unspecified only when a test calls the router directly.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
    let policy = state.policy.get();
    let outcome = match read_body(&state, &parts.headers, body).await {
        Ok(body) => match check(&state, &policy, peer, &parts.headers, &body) {
            Ok(Outcome::Store(accepted)) => store(&state, accepted, &body).await.map(|()| None),
            Ok(Outcome::Dropped(why)) => Ok(Some(why)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(shed) => {
            if let Some(why) = shed {
                state.metrics.shed(why);
            }
            let mut resp = with_cors(StatusCode::NO_CONTENT.into_response());
            if policy.hsts {
                crate::security::headers::hsts(resp.headers_mut());
            }
            state.metrics.request(Route::Beacon, 204, start.elapsed());
            resp
        }
        Err(e) => {
            let id = request_id::incoming_or_new(&parts.headers);
            let reason = e.count(&state.metrics);
            state.refusal_log.refused(reason, &id, &e);
            let mut resp = with_cors(e.into_response());
            envelope::finish(
                &mut resp,
                &id,
                policy.hsts,
                &state.metrics,
                Route::Beacon,
                start,
            );
            resp
        }
    }
}

/// The body, read within the request deadline and the size limit.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, IngestError> {
    // Read first, judge after: answering with the body unread (a wrong media type, or a declared length over the
    // limit) closes the connection with data pending, and the client sees a reset instead of the answer. Reading
    // stops at the limit, so this costs at most 64 KiB.
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let read = tokio::time::timeout(state.request_timeout, read).await;
    check_media_type(headers)?;
    match read {
        Ok(Ok(collected)) => decoded_body(headers, collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngestError::TooLarge(MAX_BODY_BYTES))
        }
        Ok(Err(e)) => Err(IngestError::Unreadable(e.to_string())),
        Err(_) => Err(IngestError::TimedOut(state.request_timeout.as_secs())),
    }
}

/// Beacons come as `text/plain` (`sendBeacon` with a string) or `application/json` (`fetch`).
fn check_media_type(headers: &HeaderMap) -> Result<(), IngestError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        // Compared in place: lowercasing a copy was an allocation on every beacon.
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("text/plain")
            && !essence.eq_ignore_ascii_case("application/json")
        {
            return Err(IngestError::UnsupportedMediaType(ct.to_string()));
        }
    }
    Ok(())
}

/// Undoes the content encoding.
fn decoded_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
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
    policy: &Policy,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, IngestError> {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ua = user_agent::classify(header_str("user-agent"), header_str("sec-ch-ua-mobile"));
    if policy.bot_filter && ua.bot {
        return Ok(Outcome::Dropped(Shed::Bot));
    }
    // Ids and attribution are checked but not kept: the store has no use for them, and /v1/recent reads them
    // from its own copy of the body.
    let beacon = vitals::wire::decode_beacon_detail(
        body,
        &vitals::page::NoRules,
        vitals::SampleDetail::ValuesOnly,
    )?;
    let site = beacon.site.as_str();
    match policy.admit(site, header_str("origin")) {
        Admission::Accept => {}
        Admission::UnknownSite => return Err(IngestError::Forbidden(UNKNOWN_SITE)),
        Admission::Origin => return Err(IngestError::Forbidden(ORIGIN_NOT_ALLOWED)),
    }
    if let Some(limit) = policy.rate_limit(site) {
        let ip = client_ip(policy, peer.ip(), headers);
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
    // The id is the spool's sequence number, assigned when the record is written.
    Ok(Outcome::Store(Accepted {
        id: 0,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        device: ua.device,
        beacon,
    }))
}

/// Hands an accepted beacon to the spool and waits until it is written.
async fn store(state: &AppState, mut accepted: Accepted, body: &[u8]) -> Result<(), IngestError> {
    let samples = accepted.beacon.metrics.len() as u64;
    accepted.id = state.intake.offer(&accepted).await?;
    state.metrics.beacons_accepted.add(1);
    state.metrics.samples_accepted.add(samples);
    // /v1/recent shows only what was accepted.
    state.recent.push(accepted, body);
    Ok(())
}

/// `OPTIONS /v1/beacon`: lets `fetch` clients that send `application/json` pass their preflight.
pub async fn preflight(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
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
    finish_other(&state, req.headers(), &mut resp, start);
    resp
}

/// Any other method on `/v1/beacon`.
pub async fn method_not_allowed(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    finish_other(&state, req.headers(), &mut resp, start);
    resp
}

/// The envelope of the route's rarer answers.
fn finish_other(state: &AppState, headers: &HeaderMap, resp: &mut Response, start: Instant) {
    let id = request_id::incoming_or_new(headers);
    let hsts = state.policy.get().hsts;
    envelope::finish(resp, &id, hsts, &state.metrics, Route::Beacon, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(ct: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        h
    }

    #[test]
    fn media_types_are_matched_without_case_and_parameters() {
        for ok in [
            None,
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("Text/Plain; charset=utf-8"),
            Some("APPLICATION/JSON"),
            Some(" application/json ; x=y"),
        ] {
            assert!(check_media_type(&with_type(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            "image/png",
            "text/html",
            "text/plainx",
            "application/jsonp",
            "",
        ] {
            assert!(
                matches!(
                    check_media_type(&with_type(Some(bad))),
                    Err(IngestError::UnsupportedMediaType(_))
                ),
                "{bad:?}"
            );
        }
    }
}
