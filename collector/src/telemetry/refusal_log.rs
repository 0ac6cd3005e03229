//! One log event per refusal reason per interval, not one per refused beacon.
//!
//! Under a flood (a misconfigured site, an attack, an overload) the collector refuses thousands of beacons a second;
//! logging each would turn the log into the bottleneck. The first refusal of a reason in each interval is logged with
//! its request id and error, with the count of those not logged since; the metrics count every one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How often each reason may log.
pub const INTERVAL_MS: u64 = 10_000;

/// The per-reason state; reasons are the bounded metric labels, so the table stays small.
#[derive(Default)]
pub struct RefusalLog {
    slots: Mutex<Vec<(&'static str, u64)>>,
    suppressed: [AtomicU64; 16],
}

impl RefusalLog {
    /// Records a refusal; logs it when its reason has not logged within the interval.
    pub fn refused(&self, reason: &'static str, request_id: &str, error: &dyn std::fmt::Display) {
        let now = now_ms();
        let (slot, due) = {
            let mut slots = self.slots.lock().expect("refusal log lock");
            let i = match slots.iter().position(|(r, _)| *r == reason) {
                Some(i) => i,
                None => {
                    slots.push((reason, 0));
                    slots.len() - 1
                }
            };
            let due = now.saturating_sub(slots[i].1) >= INTERVAL_MS;
            if due {
                slots[i].1 = now;
            }
            (i.min(self.suppressed.len() - 1), due)
        };
        if due {
            let suppressed = self.suppressed[slot].swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason,
                request_id,
                error = %error,
                suppressed_since_last = suppressed,
                "beacon refused"
            );
        } else {
            self.suppressed[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_reason_per_interval_and_the_rest_counted() {
        let log = RefusalLog::default();
        for _ in 0..100 {
            log.refused("invalid", "r1", &"bad");
        }
        log.refused("rate_limited", "r2", &"slow down");
        // The first of each reason logged; the other 99 "invalid" wait to be reported with the next event.
        assert_eq!(log.suppressed[0].load(Ordering::Relaxed), 99);
        assert_eq!(log.suppressed[1].load(Ordering::Relaxed), 0);
        assert_eq!(log.slots.lock().unwrap().len(), 2);
    }
}
