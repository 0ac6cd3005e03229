//! The query API's HTTP routes, mounted by the collector: `GET /v1/p75` and `GET /v1/quantiles`.

use crate::engine::{QueryEngine, QueryError, StatsResponse};
use crate::params::{self, Endpoint};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use storage::StoreError;

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = match &self {
            QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "query failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// A stats answer as JSON, written into a buffer sized for its rows up front (a month by page is ~120 KB, which
/// `Json` grows into from 128 bytes, copying as it doubles).
fn json(answer: &StatsResponse) -> Response {
    let mut body = Vec::with_capacity(256 + answer.rows.len() * 128);
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => {
            let mut resp = body.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => QueryError::Store(StoreError::Other(format!("encoding the answer: {e}")))
            .into_response(),
    }
}

/// The query routes over an engine.
pub fn routes(engine: QueryEngine) -> Router {
    Router::new()
        .route("/v1/p75", get(p75))
        .route("/v1/quantiles", get(quantiles))
        .with_state(engine)
}

fn decode_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, QueryError> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded_pairs(&raw).map_err(QueryError::BadRequest)
}

/// Splits and percent-decodes `a=b&c=d` (with `+` as space), refusing invalid UTF-8.
fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.ok_or_else(|| format!("query string: bad percent escape in {s:?}"))?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query string: {s:?} is not UTF-8"))
}

async fn p75(
    State(engine): State<QueryEngine>,
    RawQuery(raw): RawQuery,
) -> Result<Response, QueryError> {
    let req = params::parse(&decode_pairs(raw)?, Endpoint::P75).map_err(QueryError::BadRequest)?;
    Ok(json(&engine.stats(&req, true).await?))
}

async fn quantiles(
    State(engine): State<QueryEngine>,
    RawQuery(raw): RawQuery,
) -> Result<Response, QueryError> {
    let req =
        params::parse(&decode_pairs(raw)?, Endpoint::Quantiles).map_err(QueryError::BadRequest)?;
    Ok(json(&engine.stats(&req, false).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            serde_urlencoded_pairs("page=%2Fproducts%2F%3Aid&by=page,device&x").unwrap(),
            vec![
                ("page".into(), "/products/:id".into()),
                ("by".into(), "page,device".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("a+b%20c").unwrap(), "a b c");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
        assert!(percent_decode("%2").is_err());
    }
}
