//! Reading merged histograms for a query: plan the range over day, hour and minute rows, then merge per group. Hour
//! and day pieces come from `hist_page` when the query needs no dimension but the page, from `hist` otherwise.

use super::rollup::watermarks;
use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{GroupKey, HistQuery, StoreError};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::HashMap;
use vitals::histogram::Merger;
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

/// Whether `q` can read `hist_page`'s hour and day rows: it neither groups by nor filters on a dimension that table
/// merged away (device, release, nav). Minute pieces always come from `hist`.
pub(super) fn page_level(q: &HistQuery) -> bool {
    let (by, f) = (q.by, &q.filters);
    !(by.device || by.release || by.nav)
        && f.device.is_none()
        && f.release.is_none()
        && f.nav.is_none()
}

pub fn histograms(
    conn: &Connection,
    q: &HistQuery,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    histograms_via(conn, q, page_level(q))
}

/// [`histograms`], reading `hist_page` for hour and day pieces only when `page_rows` (tests compare both ways).
pub(super) fn histograms_via(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    // One read transaction: the watermarks and the rows come from the same snapshot.
    conn.execute_batch("BEGIN")?;
    let out = read(conn, q, page_rows);
    conn.execute_batch("COMMIT")?;
    out
}

/// A row's dimensions, already projected onto the query's grouping (`None` where it does not group).
struct Dims<'a> {
    page: Option<&'a str>,
    device: Option<DeviceClass>,
    release: Option<&'a str>,
    nav: Option<NavType>,
}

/// One group's rows: their encoded histograms, each after its length (u32, little-endian), merged in `finish`.
/// Why bytes: rows of different groups arrive interleaved, and a row's blob is a quarter of the size of its decoded
/// pairs; decoding once, straight into a [`Merger`], needs no per-row vectors and no sort.
struct Pending {
    key: GroupKey,
    blobs: Vec<u8>,
}

/// Groups found so far. A row finds its group by a byte key built in a reused buffer, so rows of an existing group
/// allocate no strings; only a new group allocates its key.
#[derive(Default)]
struct Groups {
    index: HashMap<Box<[u8]>, usize>,
    groups: Vec<Pending>,
    scratch: Vec<u8>,
}

impl Groups {
    fn add(&mut self, dims: Dims<'_>, blob: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(blob.len())
            .map_err(|_| StoreError::Other("embedded store: histogram over 4 GiB".into()))?;
        // Injective: fixed-width codes, the page after its length, the release last.
        let k = &mut self.scratch;
        k.clear();
        k.push(dims.device.map_or(u8::MAX, DeviceClass::code));
        k.push(dims.nav.map_or(u8::MAX, NavType::code));
        if let Some(p) = dims.page {
            k.extend_from_slice(&(p.len() as u64).to_le_bytes());
            k.extend_from_slice(p.as_bytes());
        }
        if let Some(r) = dims.release {
            k.push(1);
            k.extend_from_slice(r.as_bytes());
        }
        let i = match self.index.get(k.as_slice()) {
            Some(&i) => i,
            None => {
                let i = self.groups.len();
                self.index.insert(k.as_slice().into(), i);
                self.groups.push(Pending {
                    key: GroupKey {
                        page: dims.page.map(str::to_string),
                        device: dims.device,
                        release: dims.release.map(str::to_string),
                        nav: dims.nav,
                    },
                    blobs: Vec::new(),
                });
                i
            }
        };
        let g = &mut self.groups[i].blobs;
        g.extend_from_slice(&len.to_le_bytes());
        g.extend_from_slice(blob);
        Ok(())
    }

    fn finish(self) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
        let mut merger = Merger::new();
        self.groups
            .into_iter()
            .map(|g| {
                let mut rest = g.blobs.as_slice();
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let (blob, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
                    merger.add_encoded(blob)?;
                    rest = tail;
                }
                merger.finish().map(|h| (g.key, h)).ok_or_else(|| {
                    StoreError::Other("embedded store: bucket and rating counts disagree".into())
                })
            })
            .collect()
    }
}

const PAGE_SQL: &str = "SELECT page, hist FROM hist_page
    WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5";
const ONE_PAGE_SQL: &str = "SELECT page, hist FROM hist_page
    WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5 AND page = ?6";

fn blob<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(i)?.as_blob()?)
}

fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    Ok(row.get_ref(i)?.as_str()?)
}

fn read(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
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
    let by = q.by;
    let mut groups = Groups::default();
    for (res, start, end) in plan(q.from_ms, q.to_ms, hours_until, days_until) {
        let mut params: Vec<Value> = vec![
            Value::Text(q.site.clone()),
            Value::Integer(q.metric.code() as i64),
            Value::Integer(res as i64),
            Value::Integer(start),
            Value::Integer(end),
        ];
        // With `page_rows`, `extra` holds at most the page filter.
        params.extend(extra.iter().cloned());
        if page_rows && res != Resolution::Minute {
            let sql = if f.page.is_some() {
                ONE_PAGE_SQL
            } else {
                PAGE_SQL
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            while let Some(row) = rows.next()? {
                let dims = Dims {
                    page: by.page.then_some(text(row, 0)?),
                    device: None,
                    release: None,
                    nav: None,
                };
                groups.add(dims, blob(row, 1)?)?;
            }
            continue;
        }
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            let device = DeviceClass::from_code(row.get::<_, u8>(1)?)
                .ok_or_else(|| StoreError::Other("embedded store: unknown device code".into()))?;
            let nav = NavType::from_code(row.get::<_, u8>(3)?)
                .ok_or_else(|| StoreError::Other("embedded store: unknown nav code".into()))?;
            let dims = Dims {
                page: by.page.then_some(text(row, 0)?),
                device: by.device.then_some(device),
                release: by.release.then_some(text(row, 2)?),
                nav: by.nav.then_some(nav),
            };
            groups.add(dims, blob(row, 4)?)?;
        }
    }
    groups.finish()
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
