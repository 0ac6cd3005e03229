//! Reading histograms: hourly rollups for the whole hours of a range, raw rows for its edges, merged per group.
//!
//! The range arrives snapped by `storage::snap_range` (minute edges for the last 48 hours, hour or day edges
//! before). Whole UTC hours inside it are read from the rollup (`sumMapMerge` of (bucket, count)), the partial
//! hours at either end from raw rows (`sumMap` of the same buckets), and each group's pairs become one
//! `vitals::Histogram`. Because both tables hold the `vitals` bucket of every sample and the exact rating, the
//! histogram equals the embedded store's for the same samples, and so does every quantile and share.

use crate::config::ClickHouseConfig;
use crate::schema::{RAW_ALL, ROLLUP};
use clickhouse::query::Query;
use clickhouse::Client;
use storage::{GroupKey, HistQuery, StoreError, HOUR_MS};
use vitals::{DeviceClass, Histogram, NavType};

/// One group's aggregates as ClickHouse returns them.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
pub(crate) struct GroupRow {
    page: String,
    device: u8,
    release: String,
    nav: u8,
    n: u64,
    good: u64,
    ni: u64,
    poor: u64,
    hist: (Vec<u64>, Vec<u64>),
}

/// Which part of a range is read from which table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whole hours `[from, to)` read from the rollup, if any.
    pub rollup: Option<(i64, i64)>,
    /// Edges read from raw rows (at most two).
    pub raw: Vec<(i64, i64)>,
}

/// An hour is read from the rollup once it ended this long ago; before that, from raw rows. The sink's rollup window
/// holds the current hour's sums and closes about one batch (≤ 1 s) after the hour turns, so an hour still open, or
/// only just closed, may lack rows in the rollup that the raw table already has.
pub const ROLLUP_SETTLE_MS: i64 = 60_000;

/// Splits `[from, to)` into whole hours that ended at least [`ROLLUP_SETTLE_MS`] before `now_ms`, and edges.
pub fn plan(from_ms: i64, to_ms: i64, now_ms: i64) -> Plan {
    if from_ms >= to_ms {
        return Plan {
            rollup: None,
            raw: vec![],
        };
    }
    // The first hour boundary at or after `from`.
    let h0 = -(-from_ms).div_euclid(HOUR_MS) * HOUR_MS;
    // The last hour boundary at or before `to`, and at or before the end of the last settled hour.
    let h1 = (to_ms.div_euclid(HOUR_MS) * HOUR_MS)
        .min((now_ms - ROLLUP_SETTLE_MS).div_euclid(HOUR_MS) * HOUR_MS);
    if h0 >= h1 {
        return Plan {
            rollup: None,
            raw: vec![(from_ms, to_ms)],
        };
    }
    let raw = [(from_ms, h0), (h1, to_ms)]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect();
    Plan {
        rollup: Some((h0, h1)),
        raw,
    }
}

fn secs(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

/// The group columns: the dimension when grouped by it, a constant otherwise (fewer rows to send back).
/// `prefix` is `""` for the raw table and `"r_"` for the rollup (whose dimension columns are named `r_*`).
fn group_select(q: &HistQuery, prefix: &str) -> String {
    let col = |on: bool, name: &str, none: &str| {
        if on {
            format!("{prefix}{name}")
        } else {
            none.to_string()
        }
    };
    format!(
        "{} AS g_page, {} AS g_device, {} AS g_release, {} AS g_nav",
        col(q.by.page, "page", "''"),
        col(q.by.device, "device", "toUInt8(0)"),
        col(q.by.release, "release", "''"),
        col(q.by.nav, "nav", "toUInt8(0)"),
    )
}

fn filters_sql(q: &HistQuery, prefix: &str) -> String {
    let f = &q.filters;
    let mut s = String::new();
    for (on, name) in [
        (f.page.is_some(), "page"),
        (f.device.is_some(), "device"),
        (f.release.is_some(), "release"),
        (f.nav.is_some(), "nav"),
    ] {
        if on {
            s.push_str(&format!(" AND {prefix}{name} = ?"));
        }
    }
    s
}

fn bind_filters(mut query: Query, q: &HistQuery) -> Query {
    let f = &q.filters;
    if let Some(p) = &f.page {
        query = query.bind(p.as_str());
    }
    if let Some(d) = f.device {
        query = query.bind(d.code());
    }
    if let Some(r) = &f.release {
        query = query.bind(r.as_str());
    }
    if let Some(n) = f.nav {
        query = query.bind(n.code());
    }
    query
}

/// The raw-rows query for the edges `ranges` (values bound client-side).
pub fn raw_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    q: &HistQuery,
    ranges: &[(i64, i64)],
) -> Query {
    let time_sql: Vec<&str> = ranges
        .iter()
        .map(|_| "(time >= toDateTime(?) AND time < toDateTime(?))")
        .collect();
    let sql = format!(
        "SELECT {g}, count() AS n, toUInt64(sum(rating = 0)) AS good, toUInt64(sum(rating = 1)) AS ni, \
         toUInt64(sum(rating = 2)) AS poor, sumMap([bucket], [toUInt64(1)]) AS hist \
         FROM {db}.{RAW_ALL} WHERE site = ? AND metric = ? AND ({times}){filters} \
         GROUP BY g_page, g_device, g_release, g_nav",
        g = group_select(q, ""),
        db = cfg.database,
        times = time_sql.join(" OR "),
        filters = filters_sql(q, ""),
    );
    let mut query = crate::read_raw(client.query(&sql))
        .bind(q.site.as_str())
        .bind(q.metric.code());
    for &(a, b) in ranges {
        query = query.bind(secs(a)).bind(secs(b));
    }
    bind_filters(query, q)
}

/// The rollup query for the whole hours `[from, to)`.
pub fn rollup_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    q: &HistQuery,
    from: i64,
    to: i64,
) -> Query {
    let sql = format!(
        "SELECT {g}, countMerge(samples) AS n, sumMerge(good) AS g_good, sumMerge(ni) AS g_ni, \
         sumMerge(poor) AS g_poor, sumMapMerge(hist) AS g_hist \
         FROM {db}.{ROLLUP} WHERE r_site = ? AND r_metric = ? AND hour >= toDateTime(?) AND hour < toDateTime(?){filters} \
         GROUP BY g_page, g_device, g_release, g_nav",
        g = group_select(q, "r_"),
        db = cfg.database,
        filters = filters_sql(q, "r_"),
    );
    let query = client
        .query(&sql)
        .bind(q.site.as_str())
        .bind(q.metric.code())
        .bind(secs(from))
        .bind(secs(to));
    bind_filters(query, q)
}

/// The queries a histogram request runs, in order.
pub fn queries(client: &Client, cfg: &ClickHouseConfig, q: &HistQuery) -> Vec<Query> {
    let p = plan(q.from_ms, q.to_ms, chrono::Utc::now().timestamp_millis());
    let mut out = Vec::new();
    if let Some((a, b)) = p.rollup {
        out.push(rollup_query(client, cfg, q, a, b));
    }
    if !p.raw.is_empty() {
        out.push(raw_query(client, cfg, q, &p.raw));
    }
    out
}

/// Runs the queries and merges their groups.
pub async fn histograms(
    client: &Client,
    cfg: &ClickHouseConfig,
    q: &HistQuery,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    let mut groups: std::collections::HashMap<GroupKey, Histogram> = Default::default();
    for query in queries(client, cfg, q) {
        let rows = tokio::time::timeout(cfg.query_timeout, query.fetch_all::<GroupRow>())
            .await
            .map_err(|_| StoreError::Unavailable("clickhouse query timed out".into()))?
            .map_err(|e| StoreError::Unavailable(format!("clickhouse query: {e}")))?;
        for r in rows {
            if r.n == 0 {
                // Grouping by constants only: old servers answer one all-zero row for no data.
                continue;
            }
            let device = DeviceClass::from_code(r.device).ok_or_else(|| {
                StoreError::Other(format!("clickhouse: unknown device code {}", r.device))
            })?;
            let nav = NavType::from_code(r.nav).ok_or_else(|| {
                StoreError::Other(format!("clickhouse: unknown nav code {}", r.nav))
            })?;
            let (buckets, counts) = r.hist;
            if buckets.len() != counts.len() || r.good + r.ni + r.poor != r.n {
                return Err(StoreError::Other(
                    "clickhouse: inconsistent aggregates".into(),
                ));
            }
            let h = Histogram::from_parts(buckets.into_iter().zip(counts), [r.good, r.ni, r.poor])
                .ok_or_else(|| {
                    StoreError::Other("clickhouse: histogram and rating counts disagree".into())
                })?;
            let key = GroupKey::project(q.by, &r.page, device, &r.release, nav);
            groups.entry(key).or_default().merge(&h);
        }
    }
    Ok(groups.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MINUTE_MS;

    #[test]
    fn whole_hours_from_the_rollup_edges_from_raw_rows() {
        let h = 500_000 * HOUR_MS;
        let later = h + 30 * HOUR_MS;
        assert_eq!(
            plan(h - 5 * MINUTE_MS, h + 2 * HOUR_MS + MINUTE_MS, later),
            Plan {
                rollup: Some((h, h + 2 * HOUR_MS)),
                raw: vec![
                    (h - 5 * MINUTE_MS, h),
                    (h + 2 * HOUR_MS, h + 2 * HOUR_MS + MINUTE_MS)
                ]
            }
        );
        assert_eq!(
            plan(h, h + HOUR_MS, later),
            Plan {
                rollup: Some((h, h + HOUR_MS)),
                raw: vec![]
            }
        );
        assert_eq!(
            plan(h + MINUTE_MS, h + 2 * MINUTE_MS, later),
            Plan {
                rollup: None,
                raw: vec![(h + MINUTE_MS, h + 2 * MINUTE_MS)]
            }
        );
        // The hour still open, and the one closed less than a minute ago, come from raw rows.
        for now in [
            h + HOUR_MS + 30 * MINUTE_MS,
            h + 2 * HOUR_MS + ROLLUP_SETTLE_MS - 1,
        ] {
            assert_eq!(
                plan(h - 5 * MINUTE_MS, h + 3 * HOUR_MS, now),
                Plan {
                    rollup: Some((h, h + HOUR_MS)),
                    raw: vec![(h - 5 * MINUTE_MS, h), (h + HOUR_MS, h + 3 * HOUR_MS)]
                }
            );
        }
        assert_eq!(
            plan(
                h - 5 * MINUTE_MS,
                h + 3 * HOUR_MS,
                h + 2 * HOUR_MS + ROLLUP_SETTLE_MS
            ),
            Plan {
                rollup: Some((h, h + 2 * HOUR_MS)),
                raw: vec![(h - 5 * MINUTE_MS, h), (h + 2 * HOUR_MS, h + 3 * HOUR_MS)]
            }
        );
        assert_eq!(
            plan(h, h + HOUR_MS, h + HOUR_MS + 1),
            Plan {
                rollup: None,
                raw: vec![(h, h + HOUR_MS)]
            }
        );
        assert_eq!(
            plan(h, h, later),
            Plan {
                rollup: None,
                raw: vec![]
            }
        );
    }
}
