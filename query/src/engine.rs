//! The query engine: from a stats request to rows of quantiles and rating shares.

use crate::params::StatsRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::sync::Arc;
use storage::{snap_range, GroupKey, HistQuery, HistogramSource, StoreError};
use vitals::histogram::Summary;
use vitals::{Metric, Quantile};

/// Why a query failed; mapped once to HTTP in [`crate::http`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is wrong; the message names the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Answers stats requests from a histogram source.
#[derive(Clone)]
pub struct QueryEngine {
    source: Arc<dyn HistogramSource>,
}

/// One row: a group, its quantiles, count and shares.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    /// The group.
    pub key: GroupKey,
    /// Quantile values keyed as the caller wrote them.
    pub quantiles: Vec<(String, f64)>,
    /// Samples in the group.
    pub n: u64,
    /// Share rated good.
    pub good: f64,
    /// Share rated needs improvement.
    pub ni: f64,
    /// Share rated poor.
    pub poor: f64,
    /// Whether this is a `/v1/p75` row (a `p75` field) or a `/v1/quantiles` row (a `quantiles` object).
    pub p75_only: bool,
}

/// A stats answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatsResponse {
    /// Site.
    pub site: String,
    /// Metric.
    pub metric: Metric,
    /// Effective start (after snapping), RFC 3339.
    pub from: String,
    /// Effective end (after snapping), RFC 3339.
    pub to: String,
    /// Rows, largest `n` first.
    pub rows: Vec<StatsRow>,
    /// Whether `limit` cut rows off.
    pub truncated: bool,
}

impl Serialize for StatsRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(p) = &self.key.page {
            m.serialize_entry("page", p)?;
        }
        if let Some(d) = self.key.device {
            m.serialize_entry("device", d.as_str())?;
        }
        if let Some(r) = &self.key.release {
            // Beacons without a release form their own group, shown as null.
            m.serialize_entry("release", &(!r.is_empty()).then_some(r))?;
        }
        if let Some(n) = self.key.nav {
            m.serialize_entry("nav", n.as_str())?;
        }
        if self.p75_only {
            m.serialize_entry("p75", &self.quantiles.first().map(|q| q.1))?;
        } else {
            let qs: serde_json::Map<String, serde_json::Value> = self
                .quantiles
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            m.serialize_entry("quantiles", &qs)?;
        }
        m.serialize_entry("n", &self.n)?;
        m.serialize_entry("good", &self.good)?;
        m.serialize_entry("ni", &self.ni)?;
        m.serialize_entry("poor", &self.poor)?;
        m.end()
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl QueryEngine {
    /// An engine over a source.
    pub fn new(source: Arc<dyn HistogramSource>) -> QueryEngine {
        QueryEngine { source }
    }

    /// Answers a request as of `now`.
    pub async fn stats(
        &self,
        req: &StatsRequest,
        p75_only: bool,
    ) -> Result<StatsResponse, QueryError> {
        self.stats_at(req, p75_only, Utc::now()).await
    }

    /// Answers a request as of a given time (tests use this to pin the default range).
    pub async fn stats_at(
        &self,
        req: &StatsRequest,
        p75_only: bool,
        now: DateTime<Utc>,
    ) -> Result<StatsResponse, QueryError> {
        let to = req.to.unwrap_or(now);
        let from = req
            .from
            .unwrap_or(to - chrono::Duration::days(crate::params::DEFAULT_RANGE_DAYS));
        let (from_ms, to_ms) = snap_range(
            from.timestamp_millis(),
            to.timestamp_millis(),
            now.timestamp_millis(),
        );
        let q = HistQuery {
            site: req.site.clone(),
            metric: req.metric,
            from_ms,
            to_ms,
            by: req.by,
            filters: req.filters.clone(),
        };
        let quantiles: Vec<Quantile> = req.quantiles.iter().map(|(_, q)| *q).collect();
        let mut groups = self.source.summaries(&q, &quantiles).await?;
        groups.retain(|(_, s)| s.count() > 0);
        // Largest groups first; ties in key order so that answers are stable across stores and runs. Keys are
        // unique, so an unstable sort gives the same order; sorting (count, key) pairs before building the rows moves
        // less, and rows past the limit are never built.
        groups.sort_unstable_by(|(ka, a), (kb, b)| {
            b.count().cmp(&a.count()).then_with(|| ka.cmp(kb))
        });
        let truncated = groups.len() > req.limit;
        groups.truncate(req.limit);
        let rows: Vec<StatsRow> = groups
            .into_iter()
            .map(|(key, s)| row(req, key, &s, p75_only))
            .collect();
        Ok(StatsResponse {
            site: req.site.clone(),
            metric: req.metric,
            from: rfc3339(from_ms),
            to: rfc3339(to_ms),
            rows,
            truncated,
        })
    }
}

/// A row from a group's summary, whose quantiles are `req.quantiles` in order.
fn row(req: &StatsRequest, key: GroupKey, s: &Summary, p75_only: bool) -> StatsRow {
    let shares = s.shares().expect("non-empty histogram has shares");
    let quantiles = req
        .quantiles
        .iter()
        .zip(s.quantiles())
        .map(|((name, _), v)| (name.clone(), v.expect("non-empty histogram has quantiles")))
        .collect();
    StatsRow {
        key,
        quantiles,
        n: s.count(),
        good: shares.good,
        ni: shares.ni,
        poor: shares.poor,
        p75_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{parse, Endpoint};
    use storage::GroupKey;
    use vitals::Histogram;

    /// A source holding fixed groups: the engine's ordering and limits, apart from any store.
    struct Fixed(Vec<(GroupKey, Histogram)>);

    #[async_trait::async_trait]
    impl HistogramSource for Fixed {
        async fn histograms(
            &self,
            _: &HistQuery,
        ) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
            Ok(self.0.clone())
        }
    }

    fn page(p: &str, n: usize) -> (GroupKey, Histogram) {
        let mut h = Histogram::new();
        for i in 0..n {
            h.record(Metric::Lcp, 1000.0 + i as f64);
        }
        let key = GroupKey {
            page: Some(p.into()),
            ..GroupKey::default()
        };
        (key, h)
    }

    fn request(limit: usize) -> StatsRequest {
        let pairs: Vec<(String, String)> = [
            ("site", "shop"),
            ("metric", "LCP"),
            ("by", "page"),
            ("limit", &limit.to_string()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        parse(&pairs, Endpoint::P75).expect("a valid request")
    }

    #[tokio::test]
    async fn rows_come_largest_first_ties_in_key_order_and_empty_groups_never() {
        let groups = vec![
            page("/c", 2),
            page("/empty", 0),
            page("/a", 5),
            page("/d", 2),
            page("/b", 2),
            page("/e", 1),
        ];
        let engine = QueryEngine::new(Arc::new(Fixed(groups)));
        let pages = |a: &StatsResponse| -> Vec<(String, u64)> {
            a.rows
                .iter()
                .map(|r| (r.key.page.clone().unwrap_or_default(), r.n))
                .collect()
        };
        let all = engine.stats(&request(100), true).await.unwrap();
        assert_eq!(
            pages(&all),
            [("/a", 5), ("/b", 2), ("/c", 2), ("/d", 2), ("/e", 1)]
                .map(|(p, n)| (p.to_string(), n))
        );
        assert!(!all.truncated);
        let cut = engine.stats(&request(3), true).await.unwrap();
        assert_eq!(pages(&cut), pages(&all)[..3]);
        assert!(cut.truncated);
        let exact = engine.stats(&request(5), true).await.unwrap();
        assert!(!exact.truncated);
    }
}
