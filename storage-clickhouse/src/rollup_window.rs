//! The sink's rollup window: stored raw rows summed per hour and group across batches, then inserted as the
//! rollup's input rows in one go.
//!
//! Why a window rather than each batch: the server's cost of the rollup is the rows it inserts and merges, and the
//! long tail of groups makes a batch's sums almost as many rows as the batch has groups (~80,000 rollup rows for
//! each second's ~250,000 samples at one collector's maximum rate, against ~35,000 a second over ten seconds).
//! Queries read the rollup for whole hours only (the current hour comes from raw rows), so the window may hold the
//! current hour's sums; it is closed as soon as it holds two hours (the hour turned, so the closed hour is in the
//! rollup one batch after it ends), after `rollup_interval`, when it holds many groups, and when the sink stops.
//!
//! Exactly once: the window only ever holds rows already stored in the raw table, from consecutive batches, so what
//! the rollup holds of this source is always the ids up to its marker (the largest id of its rows). Whenever the
//! sink reconciles (on start, after a failure) it drops the window and rolls up from raw rows everything above the
//! marker, the window's ids included; a crash loses only the window, which the next start rolls up the same way.

use crate::sink::RawRow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The window closes at this many rollup rows whatever its age: one insert, and ~30 MB of sums at most.
pub const MAX_WINDOW_ROWS: usize = 200_000;

/// One row of the rollup's input (the [`crate::schema::ROLLUP_INPUT`] columns): a group's samples of one hour summed.
/// It borrows from the window, so that closing a window of ~100,000 rows allocates nothing (building them as owned
/// rows first was ~3 % of the collector's CPU at the maximum rate, most of it the kernel zeroing fresh pages).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Serialize)]
pub struct RollupInputRow<'a> {
    /// The hour's start, Unix seconds.
    pub hour: u32,
    /// Site.
    pub r_site: &'a str,
    /// Metric code.
    pub r_metric: u8,
    /// Page key.
    pub r_page: &'a str,
    /// Device class code.
    pub r_device: u8,
    /// Release.
    pub r_release: &'a str,
    /// Navigation type code.
    pub r_nav: u8,
    /// The writer's source.
    pub r_source: &'a str,
    /// Samples.
    pub i_samples: u64,
    /// Samples rated good.
    pub i_good: u64,
    /// Samples rated needs improvement.
    pub i_ni: u64,
    /// Samples rated poor.
    pub i_poor: u64,
    /// Histogram buckets, ascending.
    pub i_buckets: &'a [u64],
    /// Each bucket's count.
    pub i_counts: &'a [u64],
    /// The largest beacon id summed.
    pub i_max_id: u64,
}

/// What the samples of one beacon share: everything in a rollup group but the metric (and the source, which is the
/// sink's own). Keyed per beacon, so a beacon's strings are hashed once for all its samples.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BeaconKey {
    hour: u32,
    site: Arc<str>,
    page: Arc<str>,
    device: u8,
    release: Arc<str>,
    nav: u8,
}

/// One metric's sums within a [`BeaconKey`].
#[derive(Debug, Default)]
struct MetricSums {
    metric: u8,
    ratings: [u64; 3],
    /// Buckets, ascending, and each one's count: a group sees few distinct buckets, so a small sorted vector beats a
    /// map.
    buckets: Vec<u64>,
    counts: Vec<u64>,
    max_id: u64,
}

/// Sums of stored rows, waiting to be inserted into the rollup.
#[derive(Debug, Default)]
pub struct RollupWindow {
    groups: HashMap<BeaconKey, Vec<MetricSums>>,
    /// Rollup rows the window would insert now (one per key and metric).
    rows: usize,
    opened_at: Option<Instant>,
    hours: Option<(u32, u32)>,
}

impl RollupWindow {
    /// Adds stored rows (one per beacon).
    pub fn add(&mut self, rows: &[RawRow]) {
        if rows.is_empty() {
            return;
        }
        self.opened_at.get_or_insert_with(Instant::now);
        for row in rows {
            let hour = row.time / 3600 * 3600;
            self.hours = Some(match self.hours {
                None => (hour, hour),
                Some((lo, hi)) => (lo.min(hour), hi.max(hour)),
            });
            let sums = self
                .groups
                .entry(BeaconKey {
                    hour,
                    site: row.site.clone(),
                    page: row.page.clone(),
                    device: row.device,
                    release: row.release.clone(),
                    nav: row.nav,
                })
                .or_default();
            for (metric, _, rating, bucket) in row.samples.iter() {
                let m = match sums.iter().position(|m| m.metric == metric) {
                    Some(i) => &mut sums[i],
                    None => {
                        self.rows += 1;
                        sums.push(MetricSums {
                            metric,
                            ..MetricSums::default()
                        });
                        sums.last_mut().expect("just pushed")
                    }
                };
                m.ratings[usize::from(rating.min(2))] += 1;
                match m.buckets.binary_search(&bucket) {
                    Ok(i) => m.counts[i] += 1,
                    Err(i) => {
                        m.buckets.insert(i, bucket);
                        m.counts.insert(i, 1);
                    }
                }
                m.max_id = m.max_id.max(row.beacon_id);
            }
        }
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Rollup rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// When the window is due by age alone (`None` when empty).
    pub fn due_at(&self, interval: Duration) -> Option<Instant> {
        self.opened_at.map(|t| t + interval)
    }

    /// Whether to insert now: it spans two hours or more, is `interval` old, or holds `max_rows` rows.
    pub fn is_due(&self, now: Instant, interval: Duration, max_rows: usize) -> bool {
        !self.is_empty()
            && (self.hours.is_some_and(|(lo, hi)| hi > lo)
                || self.due_at(interval).is_some_and(|t| now >= t)
                || self.rows >= max_rows)
    }

    /// The rollup input rows of what the window holds, for `source`.
    pub fn input_rows<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = RollupInputRow<'a>> + 'a {
        self.groups.iter().flat_map(move |(key, sums)| {
            sums.iter().map(move |m| RollupInputRow {
                hour: key.hour,
                r_site: &key.site,
                r_metric: m.metric,
                r_page: &key.page,
                r_device: key.device,
                r_release: &key.release,
                r_nav: key.nav,
                r_source: source,
                i_samples: m.ratings.iter().sum(),
                i_good: m.ratings[0],
                i_ni: m.ratings[1],
                i_poor: m.ratings[2],
                i_buckets: &m.buckets,
                i_counts: &m.counts,
                i_max_id: m.max_id,
            })
        })
    }

    /// Forgets everything held (the reconciliation rolls it up from raw rows instead).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.rows = 0;
        self.opened_at = None;
        self.hours = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A beacon's row with one sample (metric, bucket, rating).
    fn row(time: u32, page: &str, metric: u8, bucket: u64, rating: u8, id: u64) -> RawRow {
        let mut samples = crate::sink::Samples::default();
        samples.push(metric, 1.0, rating, bucket);
        RawRow {
            time,
            site: "s".into(),
            page: page.into(),
            host: "h".into(),
            path: "/".into(),
            device: 1,
            release: "".into(),
            nav: 0,
            source: "src".into(),
            beacon_id: id,
            samples,
        }
    }

    /// Rows summed per hour and group over several adds: ratings, buckets in order, the largest id; one row per
    /// group and metric.
    #[test]
    fn sums_each_hour_and_group_across_batches() {
        let h = 500_000 * 3600;
        let mut w = RollupWindow::default();
        let mut three = row(h + 5, "/a", 0, 30, 0, 3);
        three.samples.push(2, 1.0, 2, 4);
        w.add(&[
            three,
            row(h + 9, "/b", 0, 10, 2, 7),
            row(h + 10, "/a", 0, 30, 0, 8),
        ]);
        assert_eq!(w.rows(), 3);
        w.add(&[
            row(h + 3599, "/a", 0, 20, 1, 9),
            row(h + 3600, "/a", 0, 30, 0, 10),
        ]);
        assert_eq!(w.rows(), 4);
        let mut got: Vec<_> = w.input_rows("src").collect();
        assert_eq!(got.len(), 4);
        got.sort_by(|a, b| (a.hour, &a.r_page, a.r_metric).cmp(&(b.hour, &b.r_page, b.r_metric)));
        let summary: Vec<_> = got
            .iter()
            .map(|r| {
                (
                    r.hour - h,
                    r.r_page,
                    r.r_metric,
                    r.i_samples,
                    [r.i_good, r.i_ni, r.i_poor],
                    r.i_buckets.to_vec(),
                    r.i_counts.to_vec(),
                    r.i_max_id,
                    r.r_source,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, "/a", 0, 3, [2, 1, 0], vec![20, 30], vec![1, 2], 9, "src"),
                (0, "/a", 2, 1, [0, 0, 1], vec![4], vec![1], 3, "src"),
                (0, "/b", 0, 1, [0, 0, 1], vec![10], vec![1], 7, "src"),
                (3600, "/a", 0, 1, [1, 0, 0], vec![30], vec![1], 10, "src"),
            ]
        );
    }

    /// Due when the hour turned, by age, or by size; never when empty.
    #[test]
    fn is_due_when_the_hour_turns_by_age_or_by_size() {
        let h = 500_000 * 3600;
        let long = Duration::from_secs(3600);
        let mut w = RollupWindow::default();
        let now = Instant::now();
        assert!(!w.is_due(now, Duration::ZERO, 0));
        w.add(&[row(h, "/a", 0, 1, 0, 1), row(h + 3599, "/b", 0, 1, 0, 2)]);
        assert!(!w.is_due(Instant::now(), long, 10));
        assert!(w.is_due(Instant::now(), Duration::ZERO, 10));
        assert!(w.is_due(Instant::now(), long, 2));
        w.add(&[row(h + 3600, "/a", 0, 1, 0, 3)]);
        assert!(w.is_due(Instant::now(), long, 10));
        w.clear();
        assert!(w.is_empty() && !w.is_due(Instant::now(), Duration::ZERO, 0));
        assert_eq!(w.due_at(long), None);
    }
}
