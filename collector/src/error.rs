//! The ingest boundary's errors, mapped once to HTTP with a JSON body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::telemetry::metrics::{Metrics, Reject, Shed};

/// The refusal for a site the policy does not list.
pub const UNKNOWN_SITE: &str = "site: not configured on this collector";
/// The refusal for an origin the site does not allow.
pub const ORIGIN_NOT_ALLOWED: &str = "origin: not allowed to send beacons for this site";

/// Why a beacon was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body failed validation; nothing from it was stored.
    #[error(transparent)]
    Invalid(#[from] vitals::wire::WireError),
    /// The body is over the limit.
    #[error("body: larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("body: {0}")]
    Unreadable(String),
    /// The body did not arrive within the request deadline (seconds).
    #[error("body: not received within {0} s")]
    TimedOut(u64),
    /// A content type beacons are never sent with.
    #[error("content-type: {0:?} is not accepted; send text/plain (navigator.sendBeacon) or application/json")]
    UnsupportedMediaType(String),
    /// Content-Encoding other than gzip or identity.
    #[error("content-encoding: {0:?} is not accepted; send gzip or no encoding")]
    UnsupportedEncoding(String),
    /// The site or origin is not allowed by the policy.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The client is over its rate limit.
    #[error("rate limited: too many beacons from this client, retry later")]
    RateLimited,
    /// The queue to the store is full: shed, and ask the client to come back.
    #[error("overloaded: the collector is shedding load, retry later")]
    Overloaded,
    /// The disk under the spool is full.
    #[error("disk full: the collector cannot store beacons until space is freed")]
    DiskFull,
    /// The spool failed to write.
    #[error("unavailable: the spool cannot write ({0})")]
    SpoolFailed(String),
    /// Shutting down or the store's writer is gone.
    #[error("unavailable: the collector is shutting down or its store is not running")]
    Unavailable,
}

impl IngestError {
    /// Counts the refusal in the declared metrics; returns the reason label it was counted under.
    pub fn count(&self, m: &Metrics) -> &'static str {
        match self {
            IngestError::Invalid(_) => m.reject(Reject::Invalid),
            IngestError::TooLarge(_) => m.reject(Reject::TooLarge),
            IngestError::Unreadable(_)
            | IngestError::TimedOut(_)
            | IngestError::UnsupportedEncoding(_) => m.reject(Reject::Unreadable),
            IngestError::UnsupportedMediaType(_) => m.reject(Reject::MediaType),
            IngestError::Forbidden(UNKNOWN_SITE) => m.reject(Reject::UnknownSite),
            IngestError::Forbidden(_) => m.reject(Reject::Origin),
            IngestError::RateLimited => m.reject(Reject::RateLimited),
            IngestError::Overloaded => m.shed(Shed::Overloaded),
            IngestError::Unavailable | IngestError::SpoolFailed(_) => m.shed(Shed::Unavailable),
            IngestError::DiskFull => m.shed(Shed::DiskFull),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngestError::Invalid(_) | IngestError::Unreadable(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Overloaded
            | IngestError::Unavailable
            | IngestError::DiskFull
            | IngestError::SpoolFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
