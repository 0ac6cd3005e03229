//! Query time ranges snapped to the resolution the stores keep at each age.
//!
//! Stores keep minutes for the last 48 hours, hours for 90 days and days beyond (the embedded store prunes finer
//! rows after those ages; ClickHouse keeps raw rows at least 48 hours and hourly rollups). Snapping outward to the
//! resolution of the range's edges makes the effective range explicit and the same for every store.

/// One minute in ms.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in ms.
pub const DAY_MS: i64 = 86_400_000;

/// A storage resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// Minute buckets.
    Minute,
    /// Hour buckets.
    Hour,
    /// Day buckets (UTC).
    Day,
}

impl Resolution {
    /// The bucket length in ms.
    pub fn ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
            Resolution::Day => DAY_MS,
        }
    }

    /// How long stores must keep buckets of this resolution (the finest one kept at a given age is used).
    pub fn kept_for_ms(self) -> i64 {
        match self {
            Resolution::Minute => 48 * HOUR_MS,
            Resolution::Hour => 90 * DAY_MS,
            Resolution::Day => i64::MAX,
        }
    }

    /// The finest resolution every store keeps for a time `t` when it is now `now`.
    pub fn finest_at(t: i64, now: i64) -> Resolution {
        let age = now.saturating_sub(t);
        if age < Resolution::Minute.kept_for_ms() {
            Resolution::Minute
        } else if age < Resolution::Hour.kept_for_ms() {
            Resolution::Hour
        } else {
            Resolution::Day
        }
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.ms()) * self.ms()
    }

    /// The end of the bucket holding `t - 1` (so an aligned `t` is kept).
    pub fn ceil(self, t: i64) -> i64 {
        -self.floor(-t)
    }
}

/// Snaps `[from, to)` outward to the resolution kept at each edge's age. Returns the effective range.
pub fn snap_range(from_ms: i64, to_ms: i64, now_ms: i64) -> (i64, i64) {
    let from = Resolution::finest_at(from_ms, now_ms).floor(from_ms);
    let to = Resolution::finest_at(to_ms, now_ms).ceil(to_ms);
    (from, to.max(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

    #[test]
    fn recent_edges_snap_to_minutes_old_ones_to_hours_and_days() {
        let (f, t) = snap_range(NOW - 90_500, NOW - 30_500, NOW);
        assert_eq!((f % MINUTE_MS, t % MINUTE_MS), (0, 0));
        assert!(f <= NOW - 90_500 && t >= NOW - 30_500 && t - f == 2 * MINUTE_MS);
        let (f, _) = snap_range(NOW - 28 * DAY_MS + 1234, NOW, NOW);
        assert_eq!(f, Resolution::Hour.floor(NOW - 28 * DAY_MS));
        let (f, _) = snap_range(NOW - 100 * DAY_MS + 1234, NOW, NOW);
        assert_eq!(f % DAY_MS, 0);
        assert_eq!(
            snap_range(NOW, NOW - 5, NOW).0,
            snap_range(NOW, NOW - 5, NOW).1,
            "empty when reversed"
        );
        assert_eq!(Resolution::Minute.ceil(MINUTE_MS), MINUTE_MS);
        assert_eq!(Resolution::Minute.ceil(MINUTE_MS + 1), 2 * MINUTE_MS);
        assert_eq!(Resolution::Hour.floor(-1), -HOUR_MS);
    }
}
