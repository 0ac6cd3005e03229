//! Reading merged histograms for a query: plan the range over day, hour and minute rows, then merge per group. Hour
//! and day pieces come from `hist_page` when the query needs no dimension but the page, from `hist` otherwise.

use super::rollup::watermarks;
use super::spans;
use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{GroupKey, HistQuery, StoreError};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::HashMap;
use vitals::histogram::{Merger, Summary};
use vitals::{DeviceClass, Histogram, NavType, Quantile};

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

/// [`histograms_reusing`] with fresh buffers.
#[cfg(test)]
pub fn histograms(
    conn: &Connection,
    q: &HistQuery,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    histograms_reusing(conn, q, &mut Scratch::default())
}

/// One merged histogram per group of `q` (the [`crate::HistogramSource::histograms`] contract), reusing `scratch`'s
/// buffers from earlier queries on the same reader.
pub fn histograms_reusing(
    conn: &Connection,
    q: &HistQuery,
    scratch: &mut Scratch,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    histograms_via(conn, q, page_level(q), scratch)
}

/// [`histograms_reusing`], reading `hist_page` for hour and day pieces only when `page_rows` (tests compare both
/// ways).
pub(super) fn histograms_via(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &mut Scratch,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    merged_via(conn, q, page_rows, scratch, |m, rows| {
        for row in rows {
            m.add_encoded(row)?;
        }
        Ok(m.finish())
    })
}

/// Each group's [`Summary`] for `quantiles`: what [`histograms_reusing`] gives, summarised, without building the
/// histograms.
pub fn summaries_reusing(
    conn: &Connection,
    q: &HistQuery,
    quantiles: &[Quantile],
    scratch: &mut Scratch,
) -> Result<Vec<(GroupKey, Summary)>, StoreError> {
    summaries_via(conn, q, quantiles, page_level(q), scratch)
}

/// [`summaries_reusing`], reading `hist_page` only when `page_rows`.
pub(super) fn summaries_via(
    conn: &Connection,
    q: &HistQuery,
    quantiles: &[Quantile],
    page_rows: bool,
    scratch: &mut Scratch,
) -> Result<Vec<(GroupKey, Summary)>, StoreError> {
    merged_via(conn, q, page_rows, scratch, |m, rows| {
        m.summarize_encoded(rows, q.metric, quantiles)
    })
}

/// Reads the rows of `q` and merges each group's encoded rows with `take`, which leaves the merger empty, on error
/// too (`None`: the bucket and rating totals disagree).
fn merged_via<T>(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &mut Scratch,
    take: impl FnMut(&mut Merger, &[&[u8]]) -> Result<Option<T>, vitals::histogram::DecodeError>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    // One read transaction: the watermarks and the rows come from the same snapshot.
    conn.execute_batch("BEGIN")?;
    let groups = read(conn, q, page_rows, scratch);
    conn.execute_batch("COMMIT")?;
    let out = groups.and_then(|g| g.finish(take));
    scratch.trim();
    out
}

/// A query's working memory, kept with a reader connection between queries: the row blobs of a 28-day by-page
/// query are ~4 MiB, and allocating them afresh each time cost more in page faults than the copy itself.
pub struct Scratch {
    /// Every row's encoded histogram, in row order.
    blobs: Vec<u8>,
    /// Each row's group and blob length.
    rows: Vec<(u32, u32)>,
    /// The rows' blob ranges, grouped.
    grouped: Vec<(usize, usize)>,
    merger: Merger,
    /// Groups of the last query.
    groups_seen: usize,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            blobs: Vec::new(),
            rows: Vec::new(),
            grouped: Vec::new(),
            merger: Merger::new(),
            groups_seen: 0,
        }
    }
}

/// Buffers are kept after a query only up to this many bytes in all (a 28-day by-page query over 1,000 pages leaves
/// ~10 MiB); a reader pool holds up to 8 readers, so at most 128 MiB stay with idle readers.
const SCRATCH_KEPT_BYTES: usize = 16 << 20;

impl Scratch {
    /// Empties the buffers, and frees them when a large query left them over [`SCRATCH_KEPT_BYTES`].
    fn trim(&mut self) {
        self.blobs.clear();
        self.rows.clear();
        self.grouped.clear();
        let held = self.blobs.capacity()
            + self.rows.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.grouped.capacity() * std::mem::size_of::<(usize, usize)>();
        if held > SCRATCH_KEPT_BYTES {
            self.blobs = Vec::new();
            self.rows = Vec::new();
            self.grouped = Vec::new();
        }
    }
}

/// A row's dimensions, already projected onto the query's grouping (`None` where it does not group).
struct Dims<'a> {
    page: Option<&'a str>,
    device: Option<DeviceClass>,
    release: Option<&'a str>,
    nav: Option<NavType>,
}

/// Groups found so far, and their rows. A row finds its group by a byte key built in a reused buffer, so rows of an
/// existing group allocate no strings; only a new group allocates its key.
///
/// Rows are kept as their encoded bytes and merged per group in `finish`: rows of different groups arrive
/// interleaved, a blob is a quarter of the size of its decoded pairs, and decoding once, straight into a [`Merger`],
/// needs no per-row vectors and no sort.
struct Groups<'s> {
    /// foldhash: every row hashes its key (SipHash was 2-3 % of a by-page query); still randomly seeded.
    index: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    keys: Vec<GroupKey>,
    key_buf: Vec<u8>,
    scratch: &'s mut Scratch,
}

impl<'s> Groups<'s> {
    fn new(scratch: &'s mut Scratch) -> Self {
        // Sized for as many groups as the reader's last query had: a by-page query grows these to thousands.
        let hint = scratch.groups_seen;
        Groups {
            index: HashMap::with_capacity_and_hasher(hint, Default::default()),
            keys: Vec::with_capacity(hint),
            key_buf: Vec::new(),
            scratch,
        }
    }

    fn add(&mut self, dims: Dims<'_>, blob: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(blob.len())
            .map_err(|_| StoreError::Other("embedded store: histogram over 4 GiB".into()))?;
        // Injective: fixed-width codes, the page after its length, the release last.
        let k = &mut self.key_buf;
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
                let i = self.keys.len();
                self.index.insert(k.as_slice().into(), i);
                self.keys.push(GroupKey {
                    page: dims.page.map(str::to_string),
                    device: dims.device,
                    release: dims.release.map(str::to_string),
                    nav: dims.nav,
                });
                i
            }
        };
        self.scratch.rows.push((i as u32, len));
        self.scratch.blobs.extend_from_slice(blob);
        Ok(())
    }

    fn finish<T>(
        self,
        mut take: impl FnMut(&mut Merger, &[&[u8]]) -> Result<Option<T>, vitals::histogram::DecodeError>,
    ) -> Result<Vec<(GroupKey, T)>, StoreError> {
        let Scratch {
            blobs,
            rows,
            grouped,
            merger,
            groups_seen,
        } = self.scratch;
        // Counting sort of the rows' blob ranges by group: `first[g]..first[g + 1]` are group g's.
        let mut first = vec![0usize; self.keys.len() + 1];
        for &(g, _) in rows.iter() {
            first[g as usize + 1] += 1;
        }
        for g in 1..first.len() {
            first[g] += first[g - 1];
        }
        let mut next = first.clone();
        grouped.resize(rows.len(), (0, 0));
        let mut at = 0usize;
        for &(g, len) in rows.iter() {
            let end = at + len as usize;
            grouped[next[g as usize]] = (at, end);
            next[g as usize] += 1;
            at = end;
        }
        *groups_seen = self.keys.len();
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut out = Vec::with_capacity(self.keys.len());
        for (key, range) in self.keys.into_iter().zip(first.windows(2)) {
            rows.clear();
            rows.extend(
                grouped[range[0]..range[1]]
                    .iter()
                    .map(|&(start, end)| &blobs[start..end]),
            );
            match take(merger, &rows) {
                Ok(Some(h)) => out.push((key, h)),
                Ok(None) => {
                    return Err(StoreError::Other(
                        "embedded store: bucket and rating counts disagree".into(),
                    ))
                }
                Err(e) => {
                    // The merger outlives this query: leave it empty for the next.
                    merger.finish();
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }
}

const PAGE_SQL: &str = "SELECT page, hist FROM hist_page
    WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5";
const ONE_PAGE_SQL: &str = "SELECT page, hist FROM hist_page
    WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5 AND page = ?6";
const SPAN_SQL: &str = "SELECT page, hist FROM hist_span
    WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms >= ?4 AND start_ms < ?5";
const ONE_PAGE_SPAN_SQL: &str = "SELECT page, hist FROM hist_span
    WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms >= ?4 AND start_ms < ?5 AND page = ?6";

fn blob<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(i)?.as_blob()?)
}

fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    Ok(row.get_ref(i)?.as_str()?)
}

fn read<'s>(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &'s mut Scratch,
) -> Result<Groups<'s>, StoreError> {
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
    let mut groups = Groups::new(scratch);
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
            // Hour and day pieces: the longest spans that fit, single hour or day rows around them.
            let cut = super::rollup::pruned_before(conn, res)?;
            for (span, from, to) in spans::pieces(res, start, end, cut) {
                let (sql, level) = match (span, f.page.is_some()) {
                    (Some(s), false) => (SPAN_SQL, s.code()),
                    (Some(s), true) => (ONE_PAGE_SPAN_SQL, s.code()),
                    (None, false) => (PAGE_SQL, res as i64),
                    (None, true) => (ONE_PAGE_SQL, res as i64),
                };
                params[2] = Value::Integer(level);
                params[3] = Value::Integer(from);
                params[4] = Value::Integer(to);
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(row) = rows.next()? {
                    let dims = Dims {
                        page: by.page.then_some(text(row, 0)?),
                        device: None,
                        release: None,
                        nav: None,
                    };
                    groups.add(dims, blob(row, 1)?)?;
                }
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
    Ok(groups)
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
