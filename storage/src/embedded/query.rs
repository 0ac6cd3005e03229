//! Reading merged histograms for a query: plan the range over day, hour and minute rows, then merge per group. Hour
//! and day pieces come from `hist_page` when the query needs no dimension but the page, from `hist` otherwise.

use super::rollup::watermarks;
use super::spans;
use super::view_blob;
use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::{GroupKey, HistQuery, StoreError};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use vitals::histogram::{DecodeError, Merger, Summary};
use vitals::{DeviceClass, Histogram, Metric, NavType, Quantile};

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
    merged_via(conn, q, page_rows, scratch, None, &merge_rows)
}

/// [`histograms_reusing`] on two readers at once: each reads part of the range, each merges part of the groups.
pub fn histograms_parallel(
    a: (&Connection, &mut Scratch),
    b: (&mut Connection, &mut Scratch),
    q: &HistQuery,
) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
    merged_via(a.0, q, page_level(q), a.1, Some(b), &merge_rows)
}

/// [`summaries_reusing`] on two readers at once.
pub fn summaries_parallel(
    a: (&Connection, &mut Scratch),
    b: (&mut Connection, &mut Scratch),
    q: &HistQuery,
    quantiles: &[Quantile],
) -> Result<Vec<(GroupKey, Summary)>, StoreError> {
    merged_via(a.0, q, page_level(q), a.1, Some(b), &|m, rows| {
        m.summarize_encoded(rows, q.metric, quantiles)
    })
}

fn merge_rows(m: &mut Merger, rows: &[&[u8]]) -> Result<Option<Histogram>, DecodeError> {
    for row in rows {
        m.add_encoded(row)?;
    }
    Ok(m.finish())
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
    merged_via(conn, q, page_rows, scratch, None, &|m, rows| {
        m.summarize_encoded(rows, q.metric, quantiles)
    })
}

/// Merges a group's encoded rows into a value, leaving the merger empty on success (`None`: the bucket and rating
/// totals disagree).
type Take<'t, T> = dyn Fn(&mut Merger, &[&[u8]]) -> Result<Option<T>, DecodeError> + Sync + 't;

/// Reads the rows of `q` and merges each group's encoded rows with `take`. With a `second` reader, a query grouped
/// by page is split by page between the two readers (each reads and merges its half on its own thread); any other
/// query has the range's pieces split between the two readers and then the groups' merges.
///
/// Why two: a month by page reads ~8,000 rows and merges 1,000 groups; on two cores both halves take half as long.
/// Each reader reads its pieces in one read transaction; the pieces are disjoint in time, so a write that lands
/// between the two transactions' starts can only make one piece as fresh as the other, never count a sample twice.
fn merged_via<T: Send>(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &mut Scratch,
    second: Option<(&mut Connection, &mut Scratch)>,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    // One read transaction: the watermarks and the rows come from the same snapshot.
    conn.execute_batch("BEGIN")?;
    let out = match second {
        None => read_serially(conn, q, page_rows, scratch).and_then(|g| g.finish(take, None)),
        Some((conn_b, scratch_b)) => {
            let second = Second {
                conn: conn_b,
                scratch: &mut *scratch_b,
            };
            let out = on_two_readers(conn, q, page_rows, scratch, second, take);
            scratch_b.trim();
            out
        }
    };
    conn.execute_batch("COMMIT")?;
    scratch.trim();
    out
}

fn read_serially<'s>(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &'s mut Scratch,
) -> Result<Groups<'s>, StoreError> {
    let pieces = pieces(conn, q, page_rows)?;
    let mut groups = Groups::new(scratch);
    read_pieces(conn, q, &pieces, Pages::All, &mut groups)?;
    Ok(groups)
}

/// A query's second reader and its buffers.
struct Second<'a> {
    conn: &'a mut Connection,
    scratch: &'a mut Scratch,
}

/// Reads `pieces` of `q` for `pages` in a read transaction of its own (a second reader's).
fn read_in_transaction<'s>(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
    pages: Pages<'_>,
    scratch: &'s mut Scratch,
) -> Result<Groups<'s>, StoreError> {
    in_read_transaction(conn, || {
        let mut g = Groups::new(scratch);
        read_pieces(conn, q, pieces, pages, &mut g).map(|()| g)
    })
}

/// Runs `read` in a read transaction of its own on `conn` (a second reader's snapshot).
fn in_read_transaction<R>(
    conn: &Connection,
    read: impl FnOnce() -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("BEGIN")?;
    let out = read();
    conn.execute_batch("COMMIT")?;
    out
}

/// Reads and merges `q` on two readers: split by page when it groups by page (see [`split_by_page`]), by time
/// otherwise (see [`split_by_time`]).
fn on_two_readers<T: Send>(
    conn: &Connection,
    q: &HistQuery,
    page_rows: bool,
    scratch: &mut Scratch,
    second: Second<'_>,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    let pieces = pieces(conn, q, page_rows)?;
    if !(q.by.page && q.filters.page.is_none()) {
        return split_by_time(conn, q, pieces, scratch, second, take);
    }
    match scratch.split_page(conn, q, &pieces)? {
        Some(split) => split_by_page(conn, q, &pieces, split, scratch, second, take),
        None => {
            // Nothing to split on: one reader reads all (there is little to read).
            let mut groups = Groups::new(scratch);
            read_pieces(conn, q, &pieces, Pages::All, &mut groups)?;
            groups.finish(take, None)
        }
    }
}

/// A query grouped by page on two readers: each reads every piece for its half of the pages (split at the median
/// page of the piece with the longest buckets) and merges its own groups, which the other never sees. Each group
/// therefore comes from one reader's snapshot.
fn split_by_page<T: Send>(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
    split: String,
    scratch: &mut Scratch,
    second: Second<'_>,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    let Second {
        conn: conn_b,
        scratch: scratch_b,
    } = second;
    if streamable(pieces) {
        return stream_split(conn, q, pieces, &split, scratch, conn_b, scratch_b, take);
    }
    let (pieces_b, scratch_b_now) = (pieces, &mut *scratch_b);
    let mut theirs: Option<Result<Vec<(GroupKey, T)>, StoreError>> = None;
    let mine = query_pool().in_place_scope(|s| {
        let (out, split) = (&mut theirs, split.as_str());
        s.spawn(move |_| {
            *out = Some(
                read_in_transaction(conn_b, q, pieces_b, Pages::From(split), scratch_b_now)
                    .and_then(|g| g.finish(take, None)),
            );
        });
        let mut g = Groups::new(scratch);
        read_pieces(conn, q, pieces, Pages::Below(split), &mut g)?;
        g.finish(take, None)
    });
    let theirs = theirs.expect("the second reader's task ran");
    let mut out = mine?;
    out.extend(theirs?);
    Ok(out)
}

/// Most buckets a by-page query streams (one cursor each, see [`stream_pages`]); past it rows are collected.
const STREAM_CURSORS: usize = 32;

/// Whether `pieces` can be read by [`stream_pages`]: page-level rows (at most one per page in a bucket) and view
/// rows of minutes, in few buckets.
fn streamable(pieces: &[Piece]) -> bool {
    let mut buckets = 0usize;
    for p in pieces {
        if matches!(p, Piece::Hist(res, ..) if *res != Resolution::Minute) {
            return false;
        }
        let (start, end, step) = p.times();
        buckets += ((end - start + step - 1) / step).max(0) as usize;
    }
    buckets <= STREAM_CURSORS
}

/// [`split_by_page`] for [`streamable`] pieces: each reader streams its half of the pages.
#[allow(clippy::too_many_arguments)]
fn stream_split<T: Send>(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
    split: &str,
    scratch: &mut Scratch,
    conn_b: &mut Connection,
    scratch_b: &mut Scratch,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    let mut theirs: Option<Result<Vec<(GroupKey, T)>, StoreError>> = None;
    let merger_b = &mut scratch_b.merger;
    let mine = query_pool().in_place_scope(|s| {
        let out = &mut theirs;
        s.spawn(move |_| {
            let conn_b = &*conn_b;
            *out = Some(in_read_transaction(conn_b, || {
                stream_pages(conn_b, q, pieces, Pages::From(split), merger_b, take)
            }));
        });
        stream_pages(
            conn,
            q,
            pieces,
            Pages::Below(split),
            &mut scratch.merger,
            take,
        )
    });
    let theirs = theirs.expect("the second reader's task ran");
    let mut out = mine?;
    out.extend(theirs?);
    Ok(out)
}

/// Reads `pieces` for `pages` with one cursor per bucket, each in page order, and merges each page's rows as the
/// cursors reach it (a k-way merge by page): no page-level row is copied out of SQLite (only the few minute view rows
/// of the hour in progress, several to a page) and no group is looked up.
fn stream_pages<T>(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
    pages: Pages<'_>,
    merger: &mut Merger,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    use fallible_streaming_iterator::FallibleStreamingIterator;
    // Every cursor seeks one bucket from a page bound: all pages are those from "".
    let (pages, bound) = match pages {
        Pages::All => (Pages::From(""), ""),
        Pages::Below(p) | Pages::From(p) => (pages, p),
    };
    let buckets: Vec<(Piece, i64)> = pieces
        .iter()
        .flat_map(|&p| {
            let (start, end, step) = p.times();
            (start..end).step_by(step as usize).map(move |t| (p, t))
        })
        .collect();
    // One statement per cursor. Cursors reading the same table and level would share one cached statement, so each
    // carries the count of those before it (`ORDER BY page` follows the key: no sort).
    let mut stmts = Vec::with_capacity(buckets.len());
    let mut seen: Vec<String> = Vec::with_capacity(buckets.len());
    for &(piece, _) in &buckets {
        let sql = piece_sql(piece, pages, &q.filters);
        let n = seen.iter().filter(|s| **s == sql).count();
        stmts.push(conn.prepare_cached(&format!("{sql} ORDER BY page /* {n} */"))?);
        seen.push(sql);
    }
    let mut cursors = Vec::with_capacity(buckets.len());
    for (stmt, &(piece, t)) in stmts.iter_mut().zip(&buckets) {
        let mut rows = stmt.query(rusqlite::params![
            q.site,
            q.metric.code() as i64,
            piece.source().2,
            t,
            bound
        ])?;
        rows.advance()?;
        cursors.push(rows);
    }
    // Minute cursors hold view rows: several per page, each with every metric.
    let views: Vec<bool> = buckets
        .iter()
        .map(|(p, _)| matches!(p, Piece::Hist(Resolution::Minute, ..)))
        .collect();
    let mut out = Vec::new();
    let mut at: Vec<usize> = Vec::with_capacity(cursors.len());
    let mut minute_bytes: Vec<u8> = Vec::new();
    let mut minute_rows: Vec<(usize, usize)> = Vec::new();
    loop {
        // The smallest page any cursor is on, and the cursors on it.
        at.clear();
        let mut page: Option<&[u8]> = None;
        for (i, c) in cursors.iter().enumerate() {
            let Some(row) = c.get() else { continue };
            let p = text(row, 0)?;
            match page {
                Some(min) if p > min => {}
                Some(min) if p == min => at.push(i),
                _ => {
                    page = Some(p);
                    at.clear();
                    at.push(i);
                }
            }
        }
        let Some(page) = page else { break };
        let page = std::str::from_utf8(page)
            .map(str::to_string)
            .map_err(|_| StoreError::Other("embedded store: text that is not UTF-8".into()))?;
        // The page's view rows: this metric's histogram of each, copied (the cursor moves on past them).
        minute_bytes.clear();
        minute_rows.clear();
        for &i in at.iter().filter(|&&i| views[i]) {
            while let Some(row) = cursors[i].get() {
                if text(row, 0)? != page.as_bytes() {
                    break;
                }
                if let Some(h) = view_blob::pick(blob(row, 4)?, q.metric)? {
                    minute_rows.push((minute_bytes.len(), minute_bytes.len() + h.len()));
                    minute_bytes.extend_from_slice(h);
                }
                cursors[i].advance()?;
            }
        }
        let mut rows: Vec<&[u8]> = Vec::with_capacity(at.len() + minute_rows.len());
        for &i in at.iter().filter(|&&i| !views[i]) {
            rows.push(blob(cursors[i].get().expect("a cursor on the page"), 1)?);
        }
        rows.extend(minute_rows.iter().map(|&(a, b)| &minute_bytes[a..b]));
        if rows.is_empty() {
            // Only view rows without this metric.
            continue;
        }
        let key = GroupKey {
            page: Some(page),
            device: None,
            release: None,
            nav: None,
        };
        out.push((key, take_group(merger, &rows, take)?));
        drop(rows);
        for &i in at.iter().filter(|&&i| !views[i]) {
            cursors[i].advance()?;
        }
    }
    Ok(out)
}

/// The middle page, in text order, of the rows of one bucket of the piece with the longest buckets (the one most
/// likely to hold every page of the range); `None` when that bucket is empty.
fn median_page(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
) -> Result<Option<String>, StoreError> {
    let Some(&piece) = pieces.iter().max_by_key(|p| p.times().2) else {
        return Ok(None);
    };
    let (table, _, code) = piece.source();
    let key = piece.key_sql();
    let (start, _, _) = piece.times();
    // One statement: the bucket's rows are counted, then the cursor steps to the middle one.
    let sql = format!(
        "SELECT page FROM {table} WHERE {key} AND start_ms = ?4
         ORDER BY page LIMIT 1 OFFSET (SELECT count(*) / 2 FROM {table}
             WHERE {key} AND start_ms = ?4)"
    );
    let page = conn
        .prepare_cached(&sql)?
        .query_row(
            rusqlite::params![q.site, q.metric.code() as i64, code, start],
            |r| r.get(0),
        )
        .optional()?;
    Ok(page)
}

/// A query on two readers split by time: the pieces are shared out by length, then the groups' merges by bytes.
fn split_by_time<T: Send>(
    conn: &Connection,
    q: &HistQuery,
    mut pieces: Vec<Piece>,
    scratch: &mut Scratch,
    Second {
        conn: conn_b,
        scratch: scratch_b,
    }: Second<'_>,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    // Heaviest first, each to the reader with less so far (a piece's length in time stands for its rows).
    pieces.sort_by_key(|p| std::cmp::Reverse(p.weight()));
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let (mut w_mine, mut w_theirs) = (0i64, 0i64);
    for p in pieces {
        if w_mine <= w_theirs {
            w_mine += p.weight();
            mine.push(p);
        } else {
            w_theirs += p.weight();
            theirs.push(p);
        }
    }
    let scratch_b_now = &mut *scratch_b;
    let mut groups_b: Option<Result<Parts, StoreError>> = None;
    let groups = query_pool().in_place_scope(|s| {
        let out = &mut groups_b;
        s.spawn(move |_| {
            let read = read_in_transaction(conn_b, q, &theirs, Pages::All, scratch_b_now)
                .map(Groups::into_parts);
            *out = Some(read);
        });
        let mut g = Groups::new(scratch);
        read_pieces(conn, q, &mine, Pages::All, &mut g).map(|()| g)
    });
    let groups_b = groups_b.expect("the second reader's task ran");
    let mut groups = groups?;
    let mut parts = groups_b?;
    groups.absorb(&mut parts);
    let out = groups.finish(take, Some((&mut scratch_b.merger, &parts.blobs)));
    // The second reader keeps its buffers' capacity for its next query.
    parts.blobs.clear();
    parts.rows.clear();
    scratch_b.blobs = parts.blobs;
    scratch_b.rows = parts.rows;
    out
}

/// The threads a query's second half reads and merges on (the first half runs on the query's own thread), kept for
/// the process's life: a thread started per query began with an empty allocator heap, and faulting in fresh (huge)
/// pages for it cost more than a tenth of the query.
fn query_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|i| format!("query-{i}"))
            .build()
            .expect("query threads start")
    })
}

/// What one reader's [`Groups`] found, taken out of its scratch to be absorbed by another's.
struct Parts {
    blobs: Vec<u8>,
    rows: Vec<(u32, u32)>,
    /// Each group's byte key and key, by group number.
    keys: Vec<(Box<[u8]>, GroupKey)>,
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
    /// The last split page found for a (site, metric), and when: finding it costs two scans of a bucket (a twentieth
    /// of a month-by-page query), and any page splits correctly, a recent one evenly enough.
    split: Option<(String, Metric, String, std::time::Instant)>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            blobs: Vec::new(),
            rows: Vec::new(),
            grouped: Vec::new(),
            merger: Merger::new(),
            groups_seen: 0,
            split: None,
        }
    }
}

/// Buffers are kept after a query only up to this many bytes in all (a 28-day by-page query over 1,000 pages leaves
/// ~10 MiB); a reader pool holds up to 8 readers, so at most 128 MiB stay with idle readers.
const SCRATCH_KEPT_BYTES: usize = 16 << 20;

/// How long a split page found for a (site, metric) is reused.
const SPLIT_KEPT: std::time::Duration = std::time::Duration::from_secs(30);

impl Scratch {
    /// The page splitting `q`'s groups between two readers: [`median_page`], or the one found for the same site and
    /// metric within [`SPLIT_KEPT`].
    fn split_page(
        &mut self,
        conn: &Connection,
        q: &HistQuery,
        pieces: &[Piece],
    ) -> Result<Option<String>, StoreError> {
        if let Some((site, metric, page, at)) = &self.split {
            if *site == q.site && *metric == q.metric && at.elapsed() < SPLIT_KEPT {
                return Ok(Some(page.clone()));
            }
        }
        let page = median_page(conn, q, pieces)?;
        self.split = page
            .clone()
            .map(|p| (q.site.clone(), q.metric, p, std::time::Instant::now()));
        Ok(page)
    }

    /// Makes the next by-page queries on two readers split at `page`, or at the median page found afresh with
    /// `None` (tests: any page must split exactly).
    #[cfg(test)]
    pub(super) fn force_split(&mut self, q: &HistQuery, page: Option<&str>) {
        self.split = page.map(|p| {
            (
                q.site.clone(),
                q.metric,
                p.to_string(),
                std::time::Instant::now(),
            )
        });
    }

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
///
/// Text comes as SQLite's bytes: only a row that starts a group has its text checked as UTF-8 (most rows join a
/// group that exists).
struct Dims<'a> {
    page: Option<&'a [u8]>,
    device: Option<DeviceClass>,
    release: Option<&'a [u8]>,
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
            k.extend_from_slice(p);
        }
        if let Some(r) = dims.release {
            k.push(1);
            k.extend_from_slice(r);
        }
        let i = match self.index.get(k.as_slice()) {
            Some(&i) => i,
            None => {
                let text = |t: Option<&[u8]>| -> Result<Option<String>, StoreError> {
                    t.map(|t| {
                        std::str::from_utf8(t).map(str::to_string).map_err(|_| {
                            StoreError::Other("embedded store: text that is not UTF-8".into())
                        })
                    })
                    .transpose()
                };
                let key = GroupKey {
                    page: text(dims.page)?,
                    device: dims.device,
                    release: text(dims.release)?,
                    nav: dims.nav,
                };
                let i = self.keys.len();
                self.index.insert(k.as_slice().into(), i);
                self.keys.push(key);
                i
            }
        };
        self.scratch.rows.push((i as u32, len));
        self.scratch.blobs.extend_from_slice(blob);
        Ok(())
    }

    fn into_parts(self) -> Parts {
        let mut bytes: Vec<Box<[u8]>> = vec![Box::default(); self.keys.len()];
        for (k, i) in self.index {
            bytes[i] = k;
        }
        Parts {
            blobs: std::mem::take(&mut self.scratch.blobs),
            rows: std::mem::take(&mut self.scratch.rows),
            keys: bytes.into_iter().zip(self.keys).collect(),
        }
    }

    /// Adds another reader's groups and rows (after this one's, in blob order).
    fn absorb(&mut self, parts: &mut Parts) {
        let mut map: Vec<u32> = Vec::with_capacity(parts.keys.len());
        for (bytes, key) in parts.keys.drain(..) {
            let i = match self.index.get(&bytes) {
                Some(&i) => i,
                None => {
                    let i = self.keys.len();
                    self.index.insert(bytes, i);
                    self.keys.push(key);
                    i
                }
            };
            map.push(i as u32);
        }
        // The blobs stay where they are: `finish` reads the rows' bytes from this reader's blobs, then from those.
        self.scratch
            .rows
            .extend(parts.rows.iter().map(|&(g, len)| (map[g as usize], len)));
    }

    /// Merges each group's rows with `take`. With `other` (a second merger, and the blobs of the rows absorbed
    /// from a second reader, which follow this reader's rows) the later half of the groups (by bytes) is merged on a
    /// second thread.
    fn finish<T: Send>(
        self,
        take: &Take<'_, T>,
        other: Option<(&mut Merger, &[u8])>,
    ) -> Result<Vec<(GroupKey, T)>, StoreError> {
        let Scratch {
            blobs,
            rows,
            grouped,
            merger,
            groups_seen,
            ..
        } = self.scratch;
        let mut keys = self.keys;
        // Counting sort of the rows' blob ranges by group: `first[g]..first[g + 1]` are group g's.
        let mut first = vec![0usize; keys.len() + 1];
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
        *groups_seen = keys.len();
        let blobs = Blobs {
            first: &blobs[..],
            then: other.as_ref().map_or(&[][..], |o| o.1),
        };
        let grouped = &grouped[..];
        let Some((other, _)) = other.filter(|_| keys.len() > 1) else {
            return decode_groups(keys, &first, grouped, blobs, merger, take);
        };
        // Split where half the bytes are behind.
        let mut seen = 0usize;
        let split = (0..keys.len())
            .find(|&g| {
                seen += grouped[first[g]..first[g + 1]]
                    .iter()
                    .map(|&(s, e)| e - s)
                    .sum::<usize>();
                seen * 2 >= blobs.first.len() + blobs.then.len()
            })
            .map_or(keys.len(), |g| g + 1)
            .clamp(1, keys.len() - 1);
        let later = keys.split_off(split);
        // On the kept query thread, as the reads were (a thread started per query faulted in fresh pages).
        let mut tail = None;
        let head = query_pool().in_place_scope(|s| {
            let (out, first) = (&mut tail, &first);
            s.spawn(move |_| {
                *out = Some(decode_groups(
                    later,
                    &first[split..],
                    grouped,
                    blobs,
                    other,
                    take,
                ));
            });
            decode_groups(keys, &first[..=split], grouped, blobs, merger, take)
        });
        let mut out = head?;
        out.extend(tail.expect("the second half's task ran")?);
        Ok(out)
    }
}

/// Rows' bytes: byte offsets run through `first`, then on through `then`.
#[derive(Clone, Copy)]
struct Blobs<'a> {
    first: &'a [u8],
    then: &'a [u8],
}

impl<'a> Blobs<'a> {
    /// The bytes at `start..end`, which lie wholly in one of the two (a row's bytes are never split).
    fn get(self, start: usize, end: usize) -> &'a [u8] {
        let n = self.first.len();
        if start >= n {
            &self.then[start - n..end - n]
        } else {
            &self.first[start..end]
        }
    }
}

/// Merges one group's `rows` with `take`, leaving the merger empty, on error too (it outlives the query).
fn take_group<T>(merger: &mut Merger, rows: &[&[u8]], take: &Take<'_, T>) -> Result<T, StoreError> {
    match take(merger, rows) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(StoreError::Other(
            "embedded store: bucket and rating counts disagree".into(),
        )),
        Err(e) => {
            merger.finish();
            Err(e.into())
        }
    }
}

/// Merges the groups `keys` (group i's rows are `grouped[bounds[i]..bounds[i + 1]]`) with `take`, leaving the
/// merger empty, on error too.
fn decode_groups<T>(
    keys: Vec<GroupKey>,
    bounds: &[usize],
    grouped: &[(usize, usize)],
    blobs: Blobs<'_>,
    merger: &mut Merger,
    take: &Take<'_, T>,
) -> Result<Vec<(GroupKey, T)>, StoreError> {
    let mut rows: Vec<&[u8]> = Vec::new();
    let mut out = Vec::with_capacity(keys.len());
    for (key, range) in keys.into_iter().zip(bounds.windows(2)) {
        rows.clear();
        rows.extend(
            grouped[range[0]..range[1]]
                .iter()
                .map(|&(start, end)| blobs.get(start, end)),
        );
        out.push((key, take_group(merger, &rows, take)?));
    }
    Ok(out)
}

fn blob<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(i)?.as_blob()?)
}

fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(i)?.as_bytes()?)
}

/// One range read of a query: rows of one table and one resolution or span length.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Rows with every dimension: `hist_minute`'s (one per view, every metric) for minutes, `hist`'s otherwise.
    Hist(Resolution, i64, i64),
    /// `hist_page` hour or day rows.
    Page(Resolution, i64, i64),
    /// `hist_span` rows.
    Span(spans::Span, i64, i64),
    /// `hist_page`'s partial rows of the hour starting at the first time, covering its minutes up to the second.
    Partial(i64, i64),
}

impl Piece {
    /// The time it covers, which stands for how much it reads.
    fn weight(&self) -> i64 {
        match *self {
            Piece::Hist(_, a, b)
            | Piece::Page(_, a, b)
            | Piece::Span(_, a, b)
            | Piece::Partial(a, b) => b - a,
        }
    }
}

/// The pieces covering `q`'s range: [`plan`]'s, with hour and day pieces split into spans and single rows when
/// `page_rows`.
fn pieces(conn: &Connection, q: &HistQuery, page_rows: bool) -> Result<Vec<Piece>, StoreError> {
    let (hours_until, days_until) = watermarks(conn)?;
    let merged = if page_rows {
        super::rollup::merged_until(conn)?
    } else {
        hours_until
    };
    let next_suffix = spans::suffix_next(conn)?;
    let mut out = Vec::new();
    for (res, start, end) in plan(q.from_ms, q.to_ms, hours_until, days_until) {
        if page_rows && res == Resolution::Minute {
            out.extend(minute_pieces(start, end, hours_until, merged));
        } else if page_rows {
            // The longest spans that fit, single hour or day rows around them.
            let cut = super::rollup::pruned_before(conn, res)?;
            out.extend(
                spans::pieces(res, start, end, cut, next_suffix)
                    .into_iter()
                    .map(|(span, from, to)| match span {
                        Some(s) => Piece::Span(s, from, to),
                        None => Piece::Page(res, from, to),
                    }),
            );
        } else {
            out.push(Piece::Hist(res, start, end));
        }
    }
    Ok(out)
}

/// Covers the minutes `[from, to)` of a page-level query: where the range holds an hour's start and every minute of
/// it merged into its partial rows (an hour at or above the roll-up watermark `hours_until`, minutes before
/// `merged`), those rows; minute rows elsewhere.
fn minute_pieces(from: i64, to: i64, hours_until: i64, merged: i64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let hour = Resolution::Hour.floor(t);
        let end = (hour + HOUR_MS).min(to);
        let covered = (hour + HOUR_MS).min(merged);
        if t == hour && hour >= hours_until && covered > hour && covered <= end {
            out.push(Piece::Partial(hour, covered));
            if covered < end {
                out.push(Piece::Hist(Resolution::Minute, covered, end));
            }
        } else {
            out.push(Piece::Hist(Resolution::Minute, t, end));
        }
        t = end;
    }
    out
}

/// The pages one reader reads: all of them, or one side of a split page (in SQLite's binary text order).
#[derive(Debug, Clone, Copy)]
enum Pages<'a> {
    All,
    /// Pages ordered before this one.
    Below(&'a str),
    /// This page and those after it.
    From(&'a str),
}

impl Piece {
    /// The table, the column holding the resolution or span length, and its value.
    fn source(self) -> (&'static str, &'static str, i64) {
        match self {
            Piece::Hist(Resolution::Minute, ..) => ("hist_minute", "", 0),
            Piece::Hist(res, ..) => ("hist", "res", res as i64),
            Piece::Page(res, ..) => ("hist_page", "res", res as i64),
            Piece::Span(s, ..) => ("hist_span", "level", s.code()),
            Piece::Partial(..) => ("hist_page", "res", super::rollup::PARTIAL_HOUR_RES),
        }
    }

    /// The SQL selecting the piece's site, metric and resolution: `?1`, `?2` and `?3`. `hist_minute` rows hold
    /// every metric (the reader picks one) and only minutes, so only the site narrows them; `?2` and `?3` are
    /// still bound, to keep the parameters' numbers the same for every table.
    fn key_sql(self) -> String {
        match self.source() {
            ("hist_minute", ..) => "site = ?1 AND ?2 IS NOT NULL AND ?3 IS NOT NULL".into(),
            (_, level, _) => format!("site = ?1 AND metric = ?2 AND {level} = ?3"),
        }
    }

    /// The time covered, and the length of one of its buckets (or spans).
    fn times(self) -> (i64, i64, i64) {
        match self {
            Piece::Hist(res, a, b) | Piece::Page(res, a, b) => (a, b, res.ms()),
            Piece::Span(s, a, b) => (a, b, s.ms()),
            // One bucket: the hour's partial rows all start at the hour.
            Piece::Partial(a, b) => (a, b, HOUR_MS),
        }
    }
}

/// The SQL reading one piece's rows: `?1` site, `?2` metric, `?3` resolution or level, `?4`/`?5` the time range (or,
/// with a page bound, `?4` one bucket start and `?5` the bound, so that the key's page column narrows the seek), then
/// the filters as `?6`.. in `Filters` order. `hist` rows come with their dimensions, the others with the page only.
fn piece_sql(piece: Piece, pages: Pages<'_>, f: &crate::Filters) -> String {
    let (table, _, _) = piece.source();
    let key = piece.key_sql();
    let columns = match piece {
        Piece::Hist(Resolution::Minute, ..) => "page, device, release, nav, hists",
        Piece::Hist(..) => "page, device, release, nav, hist",
        _ => "page, hist",
    };
    let time = match pages {
        Pages::All => "start_ms >= ?4 AND start_ms < ?5",
        Pages::Below(_) => "start_ms = ?4 AND page < ?5",
        Pages::From(_) => "start_ms = ?4 AND page >= ?5",
    };
    let mut sql = format!("SELECT {columns} FROM {table} WHERE {key} AND {time}");
    let mut n = 5;
    let mut filter = |column: &str, present: bool| {
        if present {
            n += 1;
            sql.push_str(&format!(" AND {column} = ?{n}"));
        }
    };
    // `hist_page` and `hist_span` pieces are only planned when the filters hold at most a page (`page_level`).
    filter("page", f.page.is_some());
    filter("device", f.device.is_some());
    filter("release", f.release.is_some());
    filter("nav", f.nav.is_some());
    sql
}

/// Reads `pieces` of `q`, for `pages`, into `groups`.
fn read_pieces(
    conn: &Connection,
    q: &HistQuery,
    pieces: &[Piece],
    pages: Pages<'_>,
    groups: &mut Groups<'_>,
) -> Result<(), StoreError> {
    let f = &q.filters;
    let mut extra: Vec<Value> = Vec::new();
    if let Some(p) = &f.page {
        extra.push(Value::Text(p.clone()));
    }
    if let Some(d) = f.device {
        extra.push(Value::Integer(d.code() as i64));
    }
    if let Some(r) = &f.release {
        extra.push(Value::Text(r.clone()));
    }
    if let Some(n) = f.nav {
        extra.push(Value::Integer(n.code() as i64));
    }
    let by = q.by;
    for &piece in pieces {
        let (_, _, level) = piece.source();
        let (start, end, step) = piece.times();
        // Whole range in one statement, or (split by page) one seek per bucket.
        let ranges: Vec<(Value, Value)> = match pages {
            Pages::All => vec![(Value::Integer(start), Value::Integer(end))],
            Pages::Below(p) | Pages::From(p) => (start..end)
                .step_by(step as usize)
                .map(|t| (Value::Integer(t), Value::Text(p.to_string())))
                .collect(),
        };
        let mut stmt = conn.prepare_cached(&piece_sql(piece, pages, f))?;
        for (p4, p5) in ranges {
            let mut params: Vec<Value> = vec![
                Value::Text(q.site.clone()),
                Value::Integer(q.metric.code() as i64),
                Value::Integer(level),
                p4,
                p5,
            ];
            params.extend(extra.iter().cloned());
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            if !matches!(piece, Piece::Hist(..)) {
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
            let minutes = matches!(piece, Piece::Hist(Resolution::Minute, ..));
            while let Some(row) = rows.next()? {
                let hist = if minutes {
                    // A view row: this metric's histogram, if the view has one.
                    match view_blob::pick(blob(row, 4)?, q.metric)? {
                        Some(h) => h,
                        None => continue,
                    }
                } else {
                    blob(row, 4)?
                };
                let device = DeviceClass::from_code(row.get::<_, u8>(1)?).ok_or_else(|| {
                    StoreError::Other("embedded store: unknown device code".into())
                })?;
                let nav = NavType::from_code(row.get::<_, u8>(3)?)
                    .ok_or_else(|| StoreError::Other("embedded store: unknown nav code".into()))?;
                let dims = Dims {
                    page: by.page.then_some(text(row, 0)?),
                    device: by.device.then_some(device),
                    release: by.release.then_some(text(row, 2)?),
                    nav: by.nav.then_some(nav),
                };
                groups.add(dims, hist)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_pieces_take_partial_hour_rows_where_an_hour_is_covered_from_its_start() {
        let h = 20_000 * DAY_MS + 5 * HOUR_MS;
        let m = |n: i64| n * MINUTE_MS;
        let pieces = |from, to, merged| -> Vec<(&'static str, i64, i64)> {
            minute_pieces(from, to, h, merged)
                .into_iter()
                .map(|p| match p {
                    Piece::Partial(a, b) => ("partial", a, b),
                    Piece::Hist(Resolution::Minute, a, b) => ("minutes", a, b),
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        };
        // From the hour's start past the merged minutes: partial rows, then the minutes after.
        assert_eq!(
            pieces(h, h + m(50), h + m(42)),
            vec![("partial", h, h + m(42)), ("minutes", h + m(42), h + m(50))]
        );
        // Ending exactly at the merged minutes: partial rows only.
        assert_eq!(
            pieces(h, h + m(42), h + m(42)),
            vec![("partial", h, h + m(42))]
        );
        // Ending before them, or starting after the hour's start: minute rows.
        assert_eq!(
            pieces(h, h + m(30), h + m(42)),
            vec![("minutes", h, h + m(30))]
        );
        assert_eq!(
            pieces(h + m(1), h + m(50), h + m(42)),
            vec![("minutes", h + m(1), h + m(50))]
        );
        // Nothing merged yet: minute rows.
        assert_eq!(pieces(h, h + m(50), h), vec![("minutes", h, h + m(50))]);
        // Two hours not rolled up (the first in its grace period), merged into the second: one piece per hour.
        assert_eq!(
            pieces(h, h + HOUR_MS + m(20), h + HOUR_MS + m(10)),
            vec![
                ("partial", h, h + HOUR_MS),
                ("partial", h + HOUR_MS, h + HOUR_MS + m(10)),
                ("minutes", h + HOUR_MS + m(10), h + HOUR_MS + m(20))
            ]
        );
        // An hour below the roll-up watermark has no partial rows.
        assert_eq!(
            pieces(h - HOUR_MS, h - m(10), h + m(42)),
            vec![("minutes", h - HOUR_MS, h - m(10))]
        );
    }

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
