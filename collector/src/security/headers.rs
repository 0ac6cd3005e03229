//! Security headers (OWASP Secure Headers for an API) on every response.
//!
//! API answers are never cached (`Cache-Control: no-store`) unless the handler set its own caching (the beacon
//! files do); nothing may frame us; nothing is sniffed; no referrer leaks; HSTS when configured (behind TLS).

use axum::http::{header, HeaderMap, HeaderValue};

/// Adds the headers to a response; `hsts` from the policy (only behind TLS).
pub fn apply(h: &mut HeaderMap, hsts: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry("cross-origin-resource-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    if hsts {
        self::hsts(h);
    }
    h.remove(header::SERVER);
}

/// Strict-Transport-Security (only behind TLS, when the policy says so).
pub fn hsts(h: &mut HeaderMap) {
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
}
