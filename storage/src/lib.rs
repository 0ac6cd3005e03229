//! fieldvitals storage: what the collector writes and what the query side reads, behind one contract.
//!
//! Data path: the collector turns each validated beacon into an [`Accepted`] (the beacon plus what the collector
//! itself knows: receive time, device class, an id). A store consumes those — the embedded store
//! (`embedded`) aggregates them into per-minute sparse histograms in SQLite and rolls minutes up into
//! hours and days; the ClickHouse store writes raw rows and lets a materialized view roll them up. Either way the
//! query side asks a [`HistogramSource`] for one merged [`vitals::Histogram`] per group of a [`HistQuery`], and
//! computes quantiles and shares from those with `vitals`, so both stores give identical answers for the same data.
//!
//! Time ranges are first snapped by [`snap_range`] to the resolution every store keeps for that age (minutes for the
//! last 48 hours, hours for 90 days, days beyond), so that a query's effective range is the same whatever the store.

pub mod codec;
pub mod embedded;
mod time_range;

pub use time_range::{snap_range, Resolution, DAY_MS, HOUR_MS, MINUTE_MS};

use vitals::histogram::Summary;
use vitals::wire::Beacon;
use vitals::{DeviceClass, Histogram, Metric, NavType, Quantile};

/// One accepted beacon: what crossed the ingest boundary, plus what the collector derived from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Collector-assigned id, unique per accepted beacon (for deduplication on replay).
    pub id: u64,
    /// When the collector received it, in Unix milliseconds. Aggregation time is receive time, never page time.
    pub received_at_ms: i64,
    /// From the request headers.
    pub device: DeviceClass,
    /// The validated beacon.
    pub beacon: Beacon,
}

/// Which dimensions a query groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    /// By page.
    pub page: bool,
    /// By device class.
    pub device: bool,
    /// By release.
    pub release: bool,
    /// By navigation type.
    pub nav: bool,
}

/// Equality filters on the dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    /// Only this page.
    pub page: Option<String>,
    /// Only this device class.
    pub device: Option<DeviceClass>,
    /// Only this release (`""` selects beacons sent without one).
    pub release: Option<String>,
    /// Only this navigation type.
    pub nav: Option<NavType>,
}

/// A histogram query: one site, one metric, a snapped time range, grouping and filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistQuery {
    /// The site.
    pub site: String,
    /// The metric.
    pub metric: Metric,
    /// Start, inclusive, Unix ms, already snapped by [`snap_range`].
    pub from_ms: i64,
    /// End, exclusive, Unix ms, already snapped by [`snap_range`].
    pub to_ms: i64,
    /// Grouping.
    pub by: GroupBy,
    /// Filters.
    pub filters: Filters,
}

/// A group's identity: each field is `Some` exactly when the query groups by it. A release of `""` means the
/// beacons carried none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GroupKey {
    /// The page.
    pub page: Option<String>,
    /// The device class.
    pub device: Option<DeviceClass>,
    /// The release.
    pub release: Option<String>,
    /// The navigation type.
    pub nav: Option<NavType>,
}

impl GroupKey {
    /// The group a stored row falls in under `by`.
    pub fn project(
        by: GroupBy,
        page: &str,
        device: DeviceClass,
        release: &str,
        nav: NavType,
    ) -> GroupKey {
        GroupKey {
            page: by.page.then(|| page.to_string()),
            device: by.device.then_some(device),
            release: by.release.then(|| release.to_string()),
            nav: by.nav.then_some(nav),
        }
    }
}

/// Why a store could not answer or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored histogram could not be read back.
    #[error("embedded store: corrupt histogram: {0}")]
    Corrupt(#[from] vitals::histogram::DecodeError),
    /// The store is not reachable or failed in a way that may pass.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
}

/// Where the query side reads histograms from.
#[async_trait::async_trait]
pub trait HistogramSource: Send + Sync + 'static {
    /// One merged histogram per group with data in the range. Groups without data are absent.
    async fn histograms(&self, q: &HistQuery) -> Result<Vec<(GroupKey, Histogram)>, StoreError>;

    /// Each group's [`Summary`] for `quantiles`: [`HistogramSource::histograms`], summarised. A store may answer it
    /// without building the histograms.
    async fn summaries(
        &self,
        q: &HistQuery,
        quantiles: &[Quantile],
    ) -> Result<Vec<(GroupKey, Summary)>, StoreError> {
        Ok(self
            .histograms(q)
            .await?
            .into_iter()
            .map(|(k, h)| (k, h.summary(q.metric, quantiles)))
            .collect())
    }
}
