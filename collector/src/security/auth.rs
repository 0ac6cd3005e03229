//! Bearer tokens for the query API (`/v1/p75`, `/v1/quantiles`, `/v1/recent`).
//!
//! Tokens are configured as SHA-256 hashes and compared in constant time, each scoped to sites. Missing or unknown
//! token: 401; a token without the requested site: 403. With no tokens configured the API is open only while the
//! collector listens on loopback (start-up refuses anything else, and this check holds even if a reload removes
//! every token).

use crate::policy::PolicyHandle;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// State for the check.
#[derive(Clone)]
pub struct AuthState {
    /// The policy with the tokens.
    pub policy: PolicyHandle,
    /// Whether the public listener is on a loopback address.
    pub loopback_only: bool,
}

/// Hex SHA-256 of a token, the form tokens are configured in.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn deny(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": msg }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn requested_site(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("site="))
        .map(str::to_string)
}

/// The middleware.
pub async fn require_token(State(auth): State<AuthState>, req: Request, next: Next) -> Response {
    let policy = auth.policy.get();
    if policy.tokens.is_empty() {
        if auth.loopback_only {
            return next.run(req).await;
        }
        return deny(
            StatusCode::UNAUTHORIZED,
            "authorization: the query API needs a token and none is configured",
        );
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return deny(
            StatusCode::UNAUTHORIZED,
            "authorization: missing bearer token",
        );
    };
    let hash = token_hash(presented);
    // Compare against every token, without stopping early, so timing says nothing about which one matched.
    let mut matched = None;
    for t in &policy.tokens {
        if bool::from(
            t.sha256
                .to_ascii_lowercase()
                .as_bytes()
                .ct_eq(hash.as_bytes()),
        ) {
            matched = Some(t);
        }
    }
    let Some(token) = matched else {
        return deny(StatusCode::UNAUTHORIZED, "authorization: invalid token");
    };
    let site = requested_site(req.uri().query());
    let allowed = token
        .sites
        .iter()
        .any(|s| s == "*" || Some(s) == site.as_ref());
    if site.is_some() && !allowed {
        return deny(
            StatusCode::FORBIDDEN,
            "authorization: this token may not read that site",
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        // printf test | sha256sum
        assert_eq!(
            token_hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(
            requested_site(Some("metric=LCP&site=demo")),
            Some("demo".into())
        );
        assert_eq!(requested_site(Some("metric=LCP")), None);
    }
}
