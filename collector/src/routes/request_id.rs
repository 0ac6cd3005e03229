//! Request ids: every request gets one (a sane incoming `X-Request-Id` from a proxy is kept), it is echoed in the
//! response and carried by the request's log events (through a span on most routes, as a field on the beacon
//! route's refusals), so an operator can follow one beacon from the proxy log to ours.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The header.
pub const HEADER: &str = "x-request-id";

fn generate() -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Unique per process start (nanosecond clock) and per request (counter): no randomness needed for an id.
    let boot = *BOOT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    // "<12 hex digits>-<8 hex digits>", written directly: `format!` was a visible share of a beacon's cost.
    let mut out = [0u8; 21];
    hex(&mut out[..12], boot & 0xffff_ffff_ffff);
    out[12] = b'-';
    hex(
        &mut out[13..],
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff,
    );
    out.iter().map(|&b| b as char).collect()
}

/// Writes `v` as lower-case hex, right-aligned and zero-padded to `out`'s length.
fn hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Kept only when short and made of safe characters: it goes into logs verbatim.
fn acceptable(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The request's id: a sane incoming one, else a new one.
pub fn incoming_or_new(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(generate, str::to_string)
}

/// Echoes the id in the response.
pub fn echo(resp: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_unsafe_incoming_ids_are_replaced() {
        assert_ne!(generate(), generate());
        let id = generate();
        assert_eq!(id.len(), 21, "{id}");
        assert!(acceptable(&id) && id.as_bytes()[12] == b'-', "{id}");
        let mut out = [0u8; 4];
        hex(&mut out, 0xbeef);
        assert_eq!(&out, b"beef");
        hex(&mut out, 0x2a);
        assert_eq!(&out, b"002a");
        assert!(acceptable("abc-123_x.y"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("a\nb"));
        assert!(!acceptable(&"x".repeat(65)));
    }
}
