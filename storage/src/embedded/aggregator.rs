//! In-memory per-minute deltas: what arrived since the last flush, keyed like a `hist_minute` row.
//!
//! Rows are held per view (minute, site, page, device, release, nav), each with one histogram slot per metric: a
//! beacon's samples share everything but the metric, so a beacon costs one hash and one key compare, not one per
//! sample, and a view already present is found from the beacon's borrowed strings without allocating a key.

use crate::time_range::MINUTE_MS;
use crate::Accepted;
use hashbrown::{Equivalent, HashMap};
use std::sync::Arc;
use vitals::{DeviceClass, Histogram, Metric, NavType};

/// One page view's row key without the metric: what a beacon's samples have in common.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    /// Minute start, Unix ms.
    pub start_ms: i64,
    /// Site.
    pub site: Arc<str>,
    /// Page.
    pub page: Arc<str>,
    /// Device class.
    pub device: DeviceClass,
    /// Release, `""` for none.
    pub release: Arc<str>,
    /// Navigation type.
    pub nav: NavType,
}

/// A [`ViewKey`] borrowed from a beacon. Its fields hash exactly as the owned key's do (an `Arc<str>` hashes as
/// its `str`), field by field in the same order, which `Equivalent` lookups require.
#[derive(Hash)]
struct ViewRef<'a> {
    start_ms: i64,
    site: &'a str,
    page: &'a str,
    device: DeviceClass,
    release: &'a str,
    nav: NavType,
}

impl Equivalent<ViewKey> for ViewRef<'_> {
    fn equivalent(&self, k: &ViewKey) -> bool {
        self.start_ms == k.start_ms
            && self.device == k.device
            && self.nav == k.nav
            && *self.page == *k.page
            && *self.site == *k.site
            && *self.release == *k.release
    }
}

use super::view_blob::Slots;

/// Histograms per minute row, accumulated between flushes.
#[derive(Debug, Default)]
pub struct MinuteDeltas {
    /// foldhash, not SipHash: every beacon hashes its view key (short strings). It is still seeded at random, so
    /// colliding page names cannot be prepared offline.
    views: HashMap<ViewKey, Slots, foldhash::fast::RandomState>,
    samples: u64,
    /// The largest [`Accepted::id`] recorded: with the spool, ids are spool sequence numbers, and this becomes the
    /// store's checkpoint in the same transaction as the data.
    max_id: u64,
}

impl MinuteDeltas {
    /// Empty, with room for `views` views.
    pub fn with_capacity(views: usize) -> MinuteDeltas {
        MinuteDeltas {
            views: HashMap::with_capacity_and_hasher(views, Default::default()),
            ..MinuteDeltas::default()
        }
    }

    /// Minute rows held: (view, metric) pairs with a histogram. Counted when asked (reports and tests), not kept.
    pub fn rows_len(&self) -> usize {
        self.rows().count()
    }

    /// Views held (each one or more minute rows).
    pub fn views_len(&self) -> usize {
        self.views.len()
    }

    /// Records every sample of an accepted beacon.
    pub fn record(&mut self, a: &Accepted) {
        let b = &a.beacon;
        self.max_id = self.max_id.max(a.id);
        if b.metrics.is_empty() {
            return;
        }
        let view = ViewRef {
            start_ms: a.received_at_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            site: b.site.as_str(),
            page: b.url.page(),
            device: a.device,
            release: b.release.as_ref().map_or("", |r| r.as_str()),
            nav: b.nav,
        };
        let slots = match self.views.get_mut(&view) {
            Some(slots) => slots,
            None => self
                .views
                .entry(ViewKey {
                    start_ms: view.start_ms,
                    site: view.site.into(),
                    page: view.page.into(),
                    device: view.device,
                    release: view.release.into(),
                    nav: view.nav,
                })
                .or_default(),
        };
        for s in &b.metrics {
            slots[s.metric.code() as usize]
                .get_or_insert_with(Histogram::default)
                .record(s.metric, s.value);
            self.samples += 1;
        }
    }

    /// Folds another batch into this one.
    pub fn merge(&mut self, other: MinuteDeltas) {
        for (k, theirs) in other.views {
            let mine = self.views.entry(k).or_default();
            for (slot, h) in mine.iter_mut().zip(theirs) {
                match (slot.as_mut(), h) {
                    (Some(m), Some(h)) => m.merge(&h),
                    (None, h @ Some(_)) => *slot = h,
                    (_, None) => {}
                }
            }
        }
        self.samples += other.samples;
        self.max_id = self.max_id.max(other.max_id);
    }

    /// The largest id recorded (0 when none).
    pub fn max_id(&self) -> u64 {
        self.max_id
    }

    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The views, each with one histogram slot per metric (indexed by [`Metric::code`]).
    pub fn views(&self) -> impl Iterator<Item = (&ViewKey, &Slots)> {
        self.views.iter()
    }

    /// The minute rows: each view with each metric it has a histogram for.
    pub fn rows(&self) -> impl Iterator<Item = (&ViewKey, Metric, &Histogram)> {
        self.views.iter().flat_map(|(k, slots)| {
            Metric::ALL
                .iter()
                .zip(slots)
                .filter_map(move |(&m, h)| h.as_ref().map(|h| (k, m, h)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn accepted(
        id: u64,
        at: i64,
        page: &str,
        release: Option<&str>,
        samples: &[(Metric, f64)],
    ) -> Accepted {
        let metrics: Vec<String> = samples
            .iter()
            .enumerate()
            .map(|(i, (m, v))| format!(r#"{{"name":"{}","value":{v},"id":"v4-{i}"}}"#, m.as_str()))
            .collect();
        let release = release.map_or(String::new(), |r| format!(r#","release":"{r}""#));
        let json = format!(
            r#"{{"v":1,"site":"shop","url":"https://shop.example{page}","nav":"navigate"{release},"metrics":[{}]}}"#,
            metrics.join(",")
        );
        Accepted {
            id,
            received_at_ms: at,
            device: DeviceClass::Phone,
            beacon: vitals::decode_beacon(json.as_bytes()).expect("a valid beacon"),
        }
    }

    /// The rows as (minute, page, release, metric) to histogram, for comparing with a per-sample reference.
    fn by_row(d: &MinuteDeltas) -> BTreeMap<(i64, String, String, u8), Histogram> {
        d.rows()
            .map(|(k, m, h)| {
                (
                    (
                        k.start_ms,
                        k.page.to_string(),
                        k.release.to_string(),
                        m.code(),
                    ),
                    h.clone(),
                )
            })
            .collect()
    }

    proptest! {
        /// Grouping by view and then by metric gives exactly the rows a map keyed by every column would, whether
        /// beacons are recorded into one batch or split over two batches that are merged.
        #[test]
        fn rows_match_a_per_sample_reference(
            beacons in proptest::collection::vec(
                (0i64..3, 0usize..3, proptest::option::of(0usize..2),
                 proptest::collection::btree_map(0usize..5, 0.0f64..50.0, 1..6)),
                0..40),
            split in 0usize..40,
        ) {
            let pages = ["/a", "/b", "/c/d"];
            let releases = ["r1", "r2"];
            let mut reference: BTreeMap<(i64, String, String, u8), Histogram> = BTreeMap::new();
            let mut all = MinuteDeltas::default();
            let (mut first, mut second) = (MinuteDeltas::default(), MinuteDeltas::default());
            for (i, (minute, page, release, samples)) in beacons.iter().enumerate() {
                let samples: Vec<(Metric, f64)> = samples.iter().map(|(&m, &v)| (Metric::ALL[m], v)).collect();
                let at = 1_800_000_000_000 + minute * MINUTE_MS + 1_234;
                let a = accepted(i as u64 + 1, at, pages[*page], release.map(|r| releases[r]), &samples);
                for s in &a.beacon.metrics {
                    reference
                        .entry((at - 1_234, a.beacon.url.page().to_string(),
                                a.beacon.release.as_ref().map_or("", |r| r.as_str()).to_string(), s.metric.code()))
                        .or_default()
                        .record(s.metric, s.value);
                }
                all.record(&a);
                if i < split { first.record(&a) } else { second.record(&a) }
            }
            first.merge(second);
            let n: u64 = beacons.iter().map(|b| b.3.len() as u64).sum();
            for d in [&all, &first] {
                prop_assert_eq!(by_row(d), reference.clone());
                prop_assert_eq!(d.rows_len(), reference.len());
                prop_assert_eq!(d.samples(), n);
                prop_assert_eq!(d.max_id(), beacons.len() as u64);
            }
        }
    }
}
