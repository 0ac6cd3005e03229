//! The ingest boundary's errors, mapped once to HTTP with a JSON body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

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
    /// A content type beacons are never sent with.
    #[error("content-type: {0:?} is not accepted; send text/plain (navigator.sendBeacon) or application/json")]
    UnsupportedMediaType(String),
    /// The queue to the store is full: shed, and ask the client to come back.
    #[error("overloaded: the collector is shedding load, retry later")]
    Overloaded,
    /// Shutting down or the store's writer is gone.
    #[error("unavailable: the collector is shutting down or its store is not running")]
    Unavailable,
}

impl IngestError {
    /// A short, bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::TooLarge(_) => "too_large",
            IngestError::Unreadable(_) => "unreadable",
            IngestError::UnsupportedMediaType(_) => "media_type",
            IngestError::Overloaded => "overloaded",
            IngestError::Unavailable => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngestError::Invalid(_) | IngestError::Unreadable(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Overloaded | IngestError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
