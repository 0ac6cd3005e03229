//! Per-(site, client IP) token buckets, bounded in memory.

use super::file::RateLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets tracked at most; beyond it idle buckets are swept, and if none is idle new clients share a refusal.
pub const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, IpAddr), Bucket>>,
}

impl RateLimiter {
    /// Takes one token for `(site, ip)`; false when the client is over its limit.
    pub fn allow(&self, site: &str, ip: IpAddr, limit: RateLimit, now: Instant) -> bool {
        let mut map = self.buckets.lock().expect("rate limiter lock");
        if map.len() >= MAX_BUCKETS && !map.contains_key(&(site.to_string(), ip)) {
            // A full bucket has been idle long enough to refill: forgetting it changes nothing.
            map.retain(|_, b| {
                now.duration_since(b.last).as_secs_f64() * limit.per_second < limit.burst as f64
            });
            if map.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let b = map.entry((site.to_string(), ip)).or_insert(Bucket {
            tokens: limit.burst as f64,
            last: now,
        });
        let refill = now.duration_since(b.last).as_secs_f64() * limit.per_second;
        b.tokens = (b.tokens + refill).min(limit.burst as f64);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_client() {
        let l = RateLimiter::default();
        let lim = RateLimit {
            per_second: 2.0,
            burst: 3,
        };
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.allow("s", a, lim, t)).count(), 3);
        assert!(l.allow("s", b, lim, t), "another client has its own bucket");
        assert!(l.allow("t", a, lim, t), "and another site");
        assert!(!l.allow("s", a, lim, t + Duration::from_millis(400)));
        assert!(
            l.allow("s", a, lim, t + Duration::from_millis(600)),
            "one token after 0.5 s"
        );
        assert_eq!(
            (0..10)
                .filter(|_| l.allow("s", a, lim, t + Duration::from_secs(60)))
                .count(),
            3,
            "capped at burst"
        );
    }
}
