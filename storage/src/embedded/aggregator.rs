//! In-memory per-minute deltas: what arrived since the last flush, keyed like a `hist` row.

use crate::time_range::MINUTE_MS;
use crate::Accepted;
use std::collections::HashMap;
use std::sync::Arc;
use vitals::{DeviceClass, Histogram, Metric, NavType};

/// The key of a minute row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowKey {
    /// Minute start, Unix ms.
    pub start_ms: i64,
    /// Site.
    pub site: Arc<str>,
    /// Metric.
    pub metric: Metric,
    /// Page.
    pub page: Arc<str>,
    /// Device class.
    pub device: DeviceClass,
    /// Release, `""` for none.
    pub release: Arc<str>,
    /// Navigation type.
    pub nav: NavType,
}

/// Histograms per minute row, accumulated between flushes.
#[derive(Debug, Default)]
pub struct MinuteDeltas {
    /// foldhash, not SipHash: every sample hashes its row key (two short strings). It is still seeded at random,
    /// so colliding page names cannot be prepared offline.
    rows: HashMap<RowKey, Histogram, foldhash::fast::RandomState>,
    samples: u64,
    /// The largest [`Accepted::id`] recorded: with the spool, ids are spool sequence numbers, and this becomes the
    /// store's checkpoint in the same transaction as the data.
    max_id: u64,
}

impl MinuteDeltas {
    /// Empty, with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> MinuteDeltas {
        MinuteDeltas {
            rows: HashMap::with_capacity_and_hasher(rows, Default::default()),
            samples: 0,
            max_id: 0,
        }
    }

    /// Rows held.
    pub fn rows_len(&self) -> usize {
        self.rows.len()
    }

    /// Records every sample of an accepted beacon.
    pub fn record(&mut self, a: &Accepted) {
        let b = &a.beacon;
        let site: Arc<str> = b.site.as_str().into();
        let page: Arc<str> = b.url.page().into();
        let release: Arc<str> = b.release.as_ref().map_or("", |r| r.as_str()).into();
        let start_ms = a.received_at_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        self.max_id = self.max_id.max(a.id);
        for s in &b.metrics {
            let key = RowKey {
                start_ms,
                site: site.clone(),
                metric: s.metric,
                page: page.clone(),
                device: a.device,
                release: release.clone(),
                nav: b.nav,
            };
            self.rows.entry(key).or_default().record(s.metric, s.value);
            self.samples += 1;
        }
    }

    /// Folds another batch into this one.
    pub fn merge(&mut self, other: MinuteDeltas) {
        for (k, h) in other.rows {
            self.rows.entry(k).or_default().merge(&h);
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
        self.rows.is_empty()
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The rows.
    pub fn rows(&self) -> impl Iterator<Item = (&RowKey, &Histogram)> {
        self.rows.iter()
    }
}
