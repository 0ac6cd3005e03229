//! Reading merged histograms for a query: plan the range over day, hour and minute rows, then merge per group.

use super::rollup::watermarks;
use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{GroupKey, HistQuery, StoreError};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::HashMap;
use vitals::{DeviceClass, Histogram, NavType};

/// Covers `[from, to)` with the coarsest rolled-up rows, minute rows elsewhere. Adjacent pieces of one resolution
/// are coalesced, so a 28-day range is a handful of index scans.
pub fn plan(from: i64, to: i64, hours_until: i64, days_until: i64) -> Vec<(Resolution, i64, i64)> {
    let mut out: Vec<(Resolution, i64, i64)> = Vec::new();
    let mut t = from;
    while t < to {
        let res = if t % DAY_MS == 0 && t + DAY_MS <= to && t + DAY_MS <= days_until {
            Resolution::Day
        } else if t % HOUR_MS == 0 && t + HOUR_MS <= to && t + HOUR_MS <= hours_until {
            Resolution::Hour
        } else {
            Resolution::Minute
        };
        let end = (t + res.ms()).min(to);
        match out.last_mut() {
            Some(last) if last.0 == res && last.2 == t => last.2 = end,
            _ => out.push((res, t, end)),
        }
        t = if res == Resolution::Minute {
            Resolution::Minute.floor(t) + MINUTE_MS
        } else {
            end
        };
    }
    out
}

/// A group's (bucket, count) pairs in row order, and its rating counts.
type PendingGroup = (Vec<(u64, u64)>, [u64; 3]);

pub fn histograms(
    conn: &Connection,
    q: &HistQuery,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    // One read transaction: the watermarks and the rows come from the same snapshot.
    conn.execute_batch("BEGIN")?;
    let out = read(conn, q);
    conn.execute_batch("COMMIT")?;
    out
}

fn read(conn: &Connection, q: &HistQuery) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    let (hours_until, days_until) = watermarks(conn)?;
    let mut sql = String::from(
        "SELECT page, device, release, nav, hist FROM hist
         WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5",
    );
    let mut extra: Vec<Value> = Vec::new();
    let f = &q.filters;
    if let Some(p) = &f.page {
        extra.push(Value::Text(p.clone()));
        sql.push_str(&format!(" AND page = ?{}", 5 + extra.len()));
    }
    if let Some(d) = f.device {
        extra.push(Value::Integer(d.code() as i64));
        sql.push_str(&format!(" AND device = ?{}", 5 + extra.len()));
    }
    if let Some(r) = &f.release {
        extra.push(Value::Text(r.clone()));
        sql.push_str(&format!(" AND release = ?{}", 5 + extra.len()));
    }
    if let Some(n) = f.nav {
        extra.push(Value::Integer(n.code() as i64));
        sql.push_str(&format!(" AND nav = ?{}", 5 + extra.len()));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    // Per group, every row's (bucket, count) pairs are collected and sorted once at the end: merging row by row
    // re-sorted the group's histogram for each of its (often thousands of) rows.
    let mut groups: HashMap<GroupKey, PendingGroup> = HashMap::new();
    for (res, start, end) in plan(q.from_ms, q.to_ms, hours_until, days_until) {
        let mut params: Vec<Value> = vec![
            Value::Text(q.site.clone()),
            Value::Integer(q.metric.code() as i64),
            Value::Integer(res as i64),
            Value::Integer(start),
            Value::Integer(end),
        ];
        params.extend(extra.iter().cloned());
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            let page: String = row.get(0)?;
            let device = DeviceClass::from_code(row.get::<_, u8>(1)?)
                .ok_or_else(|| StoreError::Other("embedded store: unknown device code".into()))?;
            let release: String = row.get(2)?;
            let nav = NavType::from_code(row.get::<_, u8>(3)?)
                .ok_or_else(|| StoreError::Other("embedded store: unknown nav code".into()))?;
            let h = Histogram::decode(row.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?)?;
            let key = GroupKey::project(q.by, &page, device, &release, nav);
            let (pairs, ratings) = groups.entry(key).or_default();
            pairs.extend_from_slice(h.buckets());
            for (total, r) in ratings.iter_mut().zip(h.rating_counts()) {
                *total += r;
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, (pairs, ratings))| {
            Histogram::from_parts(pairs, ratings)
                .map(|h| (key, h))
                .ok_or_else(|| {
                    StoreError::Other("embedded store: bucket and rating counts disagree".into())
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_days_hours_and_minutes() {
        let day = 20_000 * DAY_MS;
        // From 22:30 the day before to 01:05 two days later; everything rolled up.
        let from = day - 90 * MINUTE_MS;
        let to = day + DAY_MS + HOUR_MS + 5 * MINUTE_MS;
        let p = plan(from, to, i64::MAX, i64::MAX);
        assert_eq!(
            p,
            vec![
                (Resolution::Minute, from, day - HOUR_MS),
                (Resolution::Hour, day - HOUR_MS, day),
                (Resolution::Day, day, day + DAY_MS),
                (Resolution::Hour, day + DAY_MS, day + DAY_MS + HOUR_MS),
                (Resolution::Minute, day + DAY_MS + HOUR_MS, to),
            ]
        );
        // Nothing rolled up: all minutes, one coalesced range.
        assert_eq!(plan(from, to, 0, 0), vec![(Resolution::Minute, from, to)]);
        assert!(plan(to, to, 0, 0).is_empty());
    }
}
