//! The five Core Web Vitals metrics, their units, bounds and CrUX/web-vitals ratings.

use serde::{Deserialize, Serialize};

/// A field metric, named exactly as web-vitals names it on the wire (`"LCP"`, `"INP"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metric {
    /// Largest Contentful Paint, milliseconds.
    #[serde(rename = "LCP")]
    Lcp,
    /// Interaction to Next Paint, milliseconds.
    #[serde(rename = "INP")]
    Inp,
    /// Cumulative Layout Shift, unitless.
    #[serde(rename = "CLS")]
    Cls,
    /// First Contentful Paint, milliseconds.
    #[serde(rename = "FCP")]
    Fcp,
    /// Time To First Byte, milliseconds.
    #[serde(rename = "TTFB")]
    Ttfb,
}

/// The unit a metric's values are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Millis,
    /// A unitless score (CLS).
    Score,
}

/// CrUX's three bins. A value equal to the "good" threshold is good; above the "poor" threshold is poor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rating {
    /// At or below the first threshold.
    Good,
    /// Above the first threshold, at or below the second.
    NeedsImprovement,
    /// Above the second threshold.
    Poor,
}

impl Rating {
    /// The web-vitals spelling: `good`, `needs-improvement`, `poor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Good => "good",
            Rating::NeedsImprovement => "needs-improvement",
            Rating::Poor => "poor",
        }
    }

    /// A small integer code, stable on disk and in ClickHouse: 0 good, 1 needs improvement, 2 poor.
    pub fn code(self) -> u8 {
        match self {
            Rating::Good => 0,
            Rating::NeedsImprovement => 1,
            Rating::Poor => 2,
        }
    }
}

impl Metric {
    /// Every metric, in the order the product lists them.
    pub const ALL: [Metric; 5] = [
        Metric::Lcp,
        Metric::Inp,
        Metric::Cls,
        Metric::Fcp,
        Metric::Ttfb,
    ];

    /// The wire and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Lcp => "LCP",
            Metric::Inp => "INP",
            Metric::Cls => "CLS",
            Metric::Fcp => "FCP",
            Metric::Ttfb => "TTFB",
        }
    }

    /// Parses the wire/API name. Case-sensitive on the wire would be needlessly unkind to analysts typing
    /// `metric=lcp`, so this accepts any ASCII case.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// The metric's unit.
    pub fn unit(self) -> Unit {
        match self {
            Metric::Cls => Unit::Score,
            _ => Unit::Millis,
        }
    }

    /// The (good, poor) thresholds of web-vitals and CrUX.
    pub fn thresholds(self) -> (f64, f64) {
        match self {
            Metric::Lcp => (2500.0, 4000.0),
            Metric::Inp => (200.0, 500.0),
            Metric::Cls => (0.1, 0.25),
            Metric::Fcp => (1800.0, 3000.0),
            Metric::Ttfb => (800.0, 1800.0),
        }
    }

    /// The largest value accepted from a beacon. Anything above is a measurement bug or abuse, not a user's
    /// experience: one hour for the timing metrics (a tab left loading that long reports no LCP anyway) and 100 for
    /// CLS (each shift scores at most 1 and a session window lasts at most 5 s).
    pub fn max_value(self) -> f64 {
        match self {
            Metric::Cls => MAX_CLS,
            _ => MAX_MILLIS,
        }
    }

    /// Rates a value exactly as web-vitals does (`value <= good` is good, `value > poor` is poor).
    pub fn rate(self, value: f64) -> Rating {
        let (good, poor) = self.thresholds();
        if value <= good {
            Rating::Good
        } else if value <= poor {
            Rating::NeedsImprovement
        } else {
            Rating::Poor
        }
    }

    /// A small integer code, stable on disk and in ClickHouse (the index in [`Metric::ALL`]).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Metric::code`].
    pub fn from_code(code: u8) -> Option<Metric> {
        Metric::ALL.get(code as usize).copied()
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bound for millisecond metrics: one hour.
pub const MAX_MILLIS: f64 = 3_600_000.0;
/// Upper bound for CLS.
pub const MAX_CLS: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_inclusive_at_good_and_exclusive_at_poor() {
        for m in Metric::ALL {
            let (good, poor) = m.thresholds();
            assert_eq!(m.rate(good), Rating::Good, "{m} at good threshold");
            assert_eq!(
                m.rate(poor),
                Rating::NeedsImprovement,
                "{m} at poor threshold"
            );
            assert_eq!(m.rate(poor * 1.0001), Rating::Poor, "{m} just above poor");
            assert_eq!(
                m.rate(good * 1.0001),
                Rating::NeedsImprovement,
                "{m} just above good"
            );
            assert_eq!(m.rate(0.0), Rating::Good);
        }
        assert_eq!(Metric::Lcp.rate(2500.0), Rating::Good);
        assert_eq!(Metric::Lcp.rate(2500.1), Rating::NeedsImprovement);
        assert_eq!(Metric::Cls.rate(0.25), Rating::NeedsImprovement);
        assert_eq!(Metric::Cls.rate(0.2501), Rating::Poor);
        assert_eq!(Metric::Inp.rate(501.0), Rating::Poor);
    }

    #[test]
    fn codes_round_trip() {
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(m.code() as usize, i);
            assert_eq!(Metric::from_code(m.code()), Some(m));
        }
        assert_eq!(Metric::from_code(5), None);
        for n in crate::wire::NavType::ALL {
            assert_eq!(crate::wire::NavType::from_code(n.code()), Some(n));
        }
    }

    #[test]
    fn names_round_trip_and_parse_any_case() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Some(m));
            assert_eq!(Metric::parse(&m.as_str().to_lowercase()), Some(m));
        }
        assert_eq!(Metric::parse("FID"), None);
        assert_eq!(Metric::parse(""), None);
    }
}
