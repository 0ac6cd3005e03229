//! Span rows: `hist_page` merged over aligned runs of 2, 4, 8 and 16 hours and of 2 to 32 days (`hist_span`), so a
//! long range reads a few rows per page instead of one per hour and day; and, within each aligned 32-day block, the
//! merge of every prefix and every suffix of days, so that a range's day edge inside a block is one row whatever its
//! length: "the last 28 days" reads two day rows per page where spans alone took up to ten.
//!
//! A span of 2^k hours (days) starts at a multiple of its length since the epoch and is built, from its two halves
//! one level down (the hour or day rows themselves for k = 1), in the transaction that rolls up its last hour (day).
//! It therefore exists exactly when its end is at or below the roll-up watermark and its start at or above the
//! prune cut of its base resolution (spans reaching below the cut are deleted with the rows they merged).
//!
//! A prefix row (keyed by its last day) covers its block's start through that day and is built when that day rolls
//! up, from the prefix before it and the day's rows. A suffix row (keyed by its first day) covers that day through
//! the block's end; the block's suffixes are built once its last day has rolled up, last day first, one per
//! roll-up pass ([`build_next_suffix`]; a block's worth at once would hold the writer for 30 copies of every page
//! the block saw), and `day_suffix_next` in `meta` is the highest not yet built. Neither kind is kept for one day
//! or a whole block (the rows and spans hold those), nor reaches below the day prune cut.
//!
//! Hours have no prefixes or suffixes: a day's would be ~44 rows per page (measured: +0.9 GB on the benchmark's
//! 1.1 GB store) to save two or three rows at a range's hour edges, and every hour would copy forward every page the
//! day had seen.
//!
//! Late deltas into rolled-up hours and days reach every span, prefix and suffix that holds them and exists
//! (`rollup::write_deltas`). Queries take a range's day edges from prefixes and suffixes and cover the rest greedily
//! with the longest spans that fit ([`pieces`]).

use super::rollup::site_metrics;
use crate::time_range::{Resolution, DAY_MS};
use rusqlite::{params, Connection, OptionalExtension};

/// Version 3 of the schema adds the table.
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS hist_span (
    site     TEXT    NOT NULL,
    metric   INTEGER NOT NULL,
    level    INTEGER NOT NULL,  -- 10 + k: 2^k hours; 20 + k: 2^k days; 28, 29: day prefix, suffix
    start_ms INTEGER NOT NULL,
    page     TEXT    NOT NULL,
    hist     BLOB    NOT NULL,
    PRIMARY KEY (site, metric, level, start_ms, page)
) WITHOUT ROWID;
";

/// One kind of `hist_span` row over hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    base: Resolution,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 2^k buckets, aligned to their length.
    Doubling(u32),
    /// From its block's start through the bucket it is keyed by.
    Prefix,
    /// From the bucket it is keyed by through its block's end.
    Suffix,
}

/// The block day prefixes and suffixes are kept within: 32 days, the longest span. Other resolutions have none.
fn block_ms(base: Resolution) -> Option<i64> {
    (base == Resolution::Day).then_some(BLOCK_MS)
}

const BLOCK_MS: i64 = 32 * DAY_MS;

/// The `meta` key of the highest day suffix key not yet built (absent: none pending).
const SUFFIX_NEXT_KEY: &str = "day_suffix_next";

/// The highest day suffix key not yet built, if a block's suffixes are being built: that block's suffixes keyed at or
/// below it do not exist yet (every other complete block's do).
pub fn suffix_next(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        [SUFFIX_NEXT_KEY],
        |r| r.get(0),
    )
    .optional()
}

/// Whether the day suffix keyed by `key`, in a block that has rolled up, is built, given [`suffix_next`].
fn suffix_built(key: i64, next: Option<i64>) -> bool {
    next.is_none_or(|n| key > n || key.div_euclid(BLOCK_MS) != n.div_euclid(BLOCK_MS))
}

impl Span {
    /// The span lengths over `base` (hours: 2 to 16; days: 2 to 32), shortest first. Minutes have none.
    pub fn levels(base: Resolution) -> impl Iterator<Item = Span> {
        let top = match base {
            Resolution::Minute => 0,
            Resolution::Hour => 4,
            Resolution::Day => 5,
        };
        (1..=top).map(move |k| Span {
            base,
            kind: Kind::Doubling(k),
        })
    }

    fn prefix(base: Resolution) -> Span {
        Span {
            base,
            kind: Kind::Prefix,
        }
    }

    fn suffix(base: Resolution) -> Span {
        Span {
            base,
            kind: Kind::Suffix,
        }
    }

    /// The `level` column's value.
    pub fn code(self) -> i64 {
        let family = if self.base == Resolution::Hour {
            10
        } else {
            20
        };
        family
            + match self.kind {
                Kind::Doubling(k) => k as i64,
                Kind::Prefix => 8,
                Kind::Suffix => 9,
            }
    }

    /// The step between the keys of two rows of this kind: a span's length, a bucket for prefixes and suffixes.
    pub fn ms(self) -> i64 {
        match self.kind {
            Kind::Doubling(k) => self.base.ms() << k,
            Kind::Prefix | Kind::Suffix => self.base.ms(),
        }
    }

    /// The time the row keyed by `key` covers.
    pub fn covers(self, key: i64) -> (i64, i64) {
        let unit = self.base.ms();
        let block = block_ms(self.base).unwrap_or(unit);
        match self.kind {
            Kind::Doubling(_) => (key, key + self.ms()),
            Kind::Prefix => (key.div_euclid(block) * block, key + unit),
            Kind::Suffix => (key, key.div_euclid(block) * block + block),
        }
    }

    /// The kind of row a `level` value stands for.
    pub fn from_code(code: i64) -> Option<Span> {
        let base = match code / 10 {
            1 => Resolution::Hour,
            2 => Resolution::Day,
            _ => return None,
        };
        match code % 10 {
            8 if block_ms(base).is_some() => Some(Span::prefix(base)),
            9 if block_ms(base).is_some() => Some(Span::suffix(base)),
            k => Span::levels(base).find(|s| s.kind == Kind::Doubling(k as u32)),
        }
    }

    /// The span's start holding `t`.
    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.ms()) * self.ms()
    }

    fn lower(self) -> Option<Span> {
        match self.kind {
            Kind::Doubling(k) if k > 1 => Some(Span {
                base: self.base,
                kind: Kind::Doubling(k - 1),
            }),
            _ => None,
        }
    }
}

/// The statements that build spans of one (site, metric): from `hist_page` rows, and from the spans one level down.
pub(super) fn build_statements() -> [&'static str; 4] {
    [
        "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
         SELECT site, metric, ?3, (start_ms / ?6) * ?6 AS s, page, hist_merge_agg(hist) FROM hist_page
         WHERE site = ?1 AND metric = ?2 AND res = ?7 AND start_ms >= ?4 AND start_ms < ?5
         GROUP BY s, page ORDER BY s, page
         ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)",
        "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
         SELECT site, metric, ?3, (start_ms / ?6) * ?6 AS s, page, hist_merge_agg(hist) FROM hist_span
         WHERE site = ?1 AND metric = ?2 AND level = ?7 AND start_ms >= ?4 AND start_ms < ?5
         GROUP BY s, page ORDER BY s, page
         ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)",
        // A prefix or suffix row at ?4: the bucket rows in [?5, ?6) merged, then (next statement) the neighbouring
        // prefix or suffix at ?7 merged into it.
        "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
         SELECT site, metric, ?3, ?4, page, hist_merge_agg(hist) FROM hist_page
         WHERE site = ?1 AND metric = ?2 AND res = ?8 AND start_ms >= ?5 AND start_ms < ?6
         GROUP BY page ORDER BY page
         ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)",
        "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
         SELECT site, metric, ?3, ?4, page, hist FROM hist_span
         WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms = ?7 AND ?5 IS NOT NULL AND ?6 IS NOT NULL
           AND ?8 IS NOT NULL
         ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)",
    ]
}

/// Builds, for every page, each span of `span`'s length starting in `[from, to)` (aligned, ending at or below `to`)
/// from the level below.
fn build(conn: &Connection, span: Span, from: i64, to: i64) -> rusqlite::Result<()> {
    let from = -span.floor(-from);
    let to = span.floor(to);
    if from >= to {
        return Ok(());
    }
    let [from_rows, from_spans, ..] = build_statements();
    let sql = match span.lower() {
        None => from_rows,
        Some(_) => from_spans,
    };
    let source = span.lower().map_or(span.base as i64, Span::code);
    let mut stmt = conn.prepare_cached(sql)?;
    let table = if span.lower().is_some() {
        "hist_span"
    } else {
        "hist_page"
    };
    for (site, metric) in site_metrics(conn, table)? {
        stmt.execute(params![
            site,
            metric,
            span.code(),
            from,
            to,
            span.ms(),
            source
        ])?;
    }
    Ok(())
}

/// Builds, for every page, the prefix or suffix row `span` keyed by `key`: the merge of the bucket rows in
/// `[rows_from, rows_to)` and of the row of the same kind keyed by `neighbour` (absent at a block's edge).
fn build_edge(
    conn: &Connection,
    span: Span,
    key: i64,
    rows: (i64, i64),
    neighbour: i64,
) -> rusqlite::Result<()> {
    let [.., from_rows, from_neighbour] = build_statements();
    for sql in [from_rows, from_neighbour] {
        let mut stmt = conn.prepare_cached(sql)?;
        for (site, metric) in site_metrics(conn, "hist_page")? {
            stmt.execute(params![
                site,
                metric,
                span.code(),
                key,
                rows.0,
                rows.1,
                neighbour,
                span.base as i64
            ])?;
        }
    }
    Ok(())
}

/// Builds the prefix of `base` that the roll-up of the bucket ending at `end` completes, when its block starts at or
/// above `cut`; when the bucket ends its block, finishes any earlier block's suffixes and queues this block's
/// ([`build_next_suffix`] builds them) or, with `suffixes_now`, builds them at once.
fn build_edges_ending_at(
    conn: &Connection,
    base: Resolution,
    end: i64,
    cut: i64,
    suffixes_now: bool,
) -> rusqlite::Result<()> {
    let Some(block) = block_ms(base) else {
        return Ok(());
    };
    let unit = base.ms();
    let bucket = end - unit;
    let start = bucket.div_euclid(block) * block;
    let block_end = start + block;
    if start >= cut && bucket > start && bucket < block_end - unit {
        let first = if bucket == start + unit {
            start
        } else {
            bucket
        };
        build_edge(
            conn,
            Span::prefix(base),
            bucket,
            (first, end),
            bucket - unit,
        )?;
    }
    if end == block_end {
        while build_next_suffix(conn)? {}
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![SUFFIX_NEXT_KEY, block_end - 2 * unit],
        )?;
        if suffixes_now {
            while build_next_suffix(conn)? {}
        }
    }
    Ok(())
}

/// Builds the next pending day suffix (see [`suffix_next`]), if any and at or above the prune cut, and moves the
/// mark down; clears it after the block's last. Returns whether more are pending.
pub fn build_next_suffix(conn: &Connection) -> rusqlite::Result<bool> {
    let Some(key) = suffix_next(conn)? else {
        return Ok(false);
    };
    let unit = DAY_MS;
    let start = key.div_euclid(BLOCK_MS) * BLOCK_MS;
    let block_end = start + BLOCK_MS;
    let cut = super::rollup::pruned_before(conn, Resolution::Day)?;
    if key > start && key >= cut {
        let last = if key == block_end - 2 * unit {
            block_end
        } else {
            key + unit
        };
        build_edge(
            conn,
            Span::suffix(Resolution::Day),
            key,
            (key, last),
            key + unit,
        )?;
    }
    let more = key - unit > start && key - unit >= cut;
    if more {
        conn.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params![SUFFIX_NEXT_KEY, key - unit],
        )?;
    } else {
        conn.execute("DELETE FROM meta WHERE key = ?1", [SUFFIX_NEXT_KEY])?;
    }
    Ok(more)
}

/// Builds the spans, prefixes and suffixes of `base` that end at `end`, a bucket end the roll-up watermark has
/// just reached.
pub fn build_ending_at(conn: &Connection, base: Resolution, end: i64) -> rusqlite::Result<()> {
    for span in Span::levels(base) {
        if end % span.ms() != 0 {
            // Not a span end at this length, nor at any longer one.
            break;
        }
        build(conn, span, end - span.ms(), end)?;
    }
    let cut = super::rollup::pruned_before(conn, base)?;
    build_edges_ending_at(conn, base, end, cut, false)
}

/// The first bucket start of `base` holding rows, from the start of the block (or longest span) holding it and at
/// or above `cut`; `None` when there are no rows.
fn first_start(conn: &Connection, base: Resolution, cut: i64) -> rusqlite::Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT min(start_ms) FROM hist_page WHERE res = ?1",
            [base as i64],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .map(|first| {
            let longest = Span::levels(base).last().map_or(base.ms(), Span::ms);
            let longest = longest.max(block_ms(base).unwrap_or(0));
            first.div_euclid(longest).saturating_mul(longest).max(cut)
        }))
}

/// Builds every span of `base` between `cut` (the prune cut, `i64::MIN` when none) and `until` (the roll-up
/// watermark): what a store migrated to version 3 needs for the hour and day rows it already holds.
pub fn backfill(conn: &Connection, base: Resolution, cut: i64, until: i64) -> rusqlite::Result<()> {
    let Some(low) = first_start(conn, base, cut)? else {
        return Ok(());
    };
    for span in Span::levels(base) {
        build(conn, span, low, until)?;
    }
    Ok(())
}

/// Builds every prefix and suffix of `base` between `cut` and `until`, bucket by bucket as the roll-ups would have:
/// what a store migrated to version 6 needs.
pub fn backfill_edges(
    conn: &Connection,
    base: Resolution,
    cut: i64,
    until: i64,
) -> rusqlite::Result<()> {
    // From nothing: rows of these kinds already there would be counted twice.
    let mut clear = conn
        .prepare_cached("DELETE FROM hist_span WHERE site = ?1 AND metric = ?2 AND level = ?3")?;
    for (site, metric) in site_metrics(conn, "hist_span")? {
        for span in [Span::prefix(base), Span::suffix(base)] {
            clear.execute(params![site, metric, span.code()])?;
        }
    }
    conn.execute("DELETE FROM meta WHERE key = ?1", [SUFFIX_NEXT_KEY])?;
    let Some(low) = first_start(conn, base, cut)? else {
        return Ok(());
    };
    let mut end = low + base.ms();
    while end <= until {
        build_edges_ending_at(conn, base, end, cut, true)?;
        end += base.ms();
    }
    Ok(())
}

/// Deletes spans, prefixes and suffixes of `base` that reach below `cut`.
pub fn prune(conn: &Connection, base: Resolution, cut: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM hist_span WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms < ?4",
    )?;
    let mut kinds: Vec<(Span, i64)> = Span::levels(base).map(|s| (s, cut)).collect();
    if let Some(block) = block_ms(base) {
        // A prefix reaches down to its block's start: those keyed below the first block starting at or after the cut.
        let first_whole = cut
            .checked_neg()
            .map_or(cut, |n| -(n.div_euclid(block) * block));
        kinds.push((Span::prefix(base), first_whole));
        kinds.push((Span::suffix(base), cut));
    }
    for (site, metric) in site_metrics(conn, "hist_span")? {
        for &(span, below) in &kinds {
            stmt.execute(params![site, metric, span.code(), below])?;
        }
    }
    Ok(())
}

/// Merges a late delta of the `base` bucket at `start` into the spans, prefixes and suffixes holding it that exist
/// (see the module docs).
pub fn add_late(
    upsert: &mut rusqlite::CachedStatement<'_>,
    row: (&str, i64, i64, &str),
    blob: &[u8],
    base: Resolution,
    (until, cut, next_suffix): (i64, i64, Option<i64>),
) -> rusqlite::Result<()> {
    let (site, metric, start, page) = row;
    for span in Span::levels(base) {
        let s = span.floor(start);
        if s + span.ms() <= until && s >= cut {
            upsert.execute(params![site, metric, span.code(), s, page, blob])?;
        }
    }
    let Some(block) = block_ms(base) else {
        return Ok(());
    };
    let unit = base.ms();
    let block_start = start.div_euclid(block) * block;
    let block_end = block_start + block;
    // Prefixes keyed at or after the bucket, built (rolled up), not one bucket long nor the whole block.
    if block_start >= cut {
        let mut key = start.max(block_start + unit);
        while key < block_end - unit && key + unit <= until {
            upsert.execute(params![
                site,
                metric,
                Span::prefix(base).code(),
                key,
                page,
                blob
            ])?;
            key += unit;
        }
    }
    // Suffixes keyed at or before it, once the block is rolled up and they are built.
    if block_end <= until {
        let mut key = (block_start + unit).max(cut);
        while key <= start && key < block_end - unit {
            if suffix_built(key, next_suffix) {
                upsert.execute(params![
                    site,
                    metric,
                    Span::suffix(base).code(),
                    key,
                    page,
                    blob
                ])?;
            }
            key += unit;
        }
    }
    Ok(())
}

/// The upsert [`add_late`] runs.
pub const UPSERT_SPAN: &str = "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

/// Covers `[from, to)`, a range of whole `base` buckets that are all rolled up: an edge inside a block with the
/// block's suffix or prefix there, the rest with the longest spans that fit, and single buckets elsewhere (`None`),
/// all at or above `cut`; adjacent pieces of one length are coalesced. A prefix or suffix piece is the one bucket its
/// row is keyed by.
pub fn pieces(
    base: Resolution,
    from: i64,
    to: i64,
    cut: i64,
    next_suffix: Option<i64>,
) -> Vec<(Option<Span>, i64, i64)> {
    let unit = base.ms();
    let (mut lo, mut hi) = (from, to);
    let (mut head, mut tail) = (None, None);
    if let Some(block) = block_ms(base) {
        let first_end = from.div_euclid(block) * block + block;
        if from % block != 0
            && first_end <= to
            && first_end - from >= 2 * unit
            && from >= cut
            && suffix_built(from, next_suffix)
        {
            head = Some((Some(Span::suffix(base)), from, from + unit));
            lo = first_end;
        }
        let last_start = to.div_euclid(block) * block;
        if to % block != 0 && last_start >= lo && to - last_start >= 2 * unit && last_start >= cut {
            tail = Some((Some(Span::prefix(base)), to - unit, to));
            hi = last_start;
        }
    }
    let mut out: Vec<(Option<Span>, i64, i64)> = head.into_iter().collect();
    out.extend(doubling_pieces(base, lo, hi, cut));
    out.extend(tail);
    out
}

/// [`pieces`] with spans only.
fn doubling_pieces(
    base: Resolution,
    from: i64,
    to: i64,
    cut: i64,
) -> Vec<(Option<Span>, i64, i64)> {
    let spans: Vec<Span> = Span::levels(base).collect();
    let mut out: Vec<(Option<Span>, i64, i64)> = Vec::new();
    let mut t = from;
    while t < to {
        let span = spans
            .iter()
            .rev()
            .find(|s| t % s.ms() == 0 && t + s.ms() <= to && t >= cut)
            .copied();
        let end = t + span.map_or(base.ms(), Span::ms);
        match out.last_mut() {
            Some(last) if last.0 == span && last.2 == t => last.2 = end,
            _ => out.push((span, t, end)),
        }
        t = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time_range::{DAY_MS, HOUR_MS};

    #[test]
    fn pieces_take_the_longest_aligned_spans() {
        let day = 20_000 * DAY_MS; // a multiple of 32 days
        let h = |span: u32| {
            Some(Span {
                base: Resolution::Hour,
                kind: Kind::Doubling(span),
            })
        };
        // 03:00 to 23:00: 3-4, 4-8, 8-16, 16-20, 20-22, 22-23.
        assert_eq!(
            pieces(
                Resolution::Hour,
                day + 3 * HOUR_MS,
                day + 23 * HOUR_MS,
                i64::MIN,
                None
            ),
            vec![
                (None, day + 3 * HOUR_MS, day + 4 * HOUR_MS),
                (h(2), day + 4 * HOUR_MS, day + 8 * HOUR_MS),
                (h(3), day + 8 * HOUR_MS, day + 16 * HOUR_MS),
                (h(2), day + 16 * HOUR_MS, day + 20 * HOUR_MS),
                (h(1), day + 20 * HOUR_MS, day + 22 * HOUR_MS),
                (None, day + 22 * HOUR_MS, day + 23 * HOUR_MS),
            ]
        );
        // 70 days from an aligned start: two 32-day spans coalesced, then 4 and 2 days.
        let d = |k: u32| {
            Some(Span {
                base: Resolution::Day,
                kind: Kind::Doubling(k),
            })
        };
        assert_eq!(
            doubling_pieces(Resolution::Day, day, day + 70 * DAY_MS, i64::MIN),
            vec![
                (d(5), day, day + 64 * DAY_MS),
                (d(2), day + 64 * DAY_MS, day + 68 * DAY_MS),
                (d(1), day + 68 * DAY_MS, day + 70 * DAY_MS),
            ]
        );
        // With prefixes and suffixes, in days from `day`: (from, to, prune cut, next suffix to build, pieces).
        let at = |d: i64| day + d * DAY_MS;
        let (pre, suf) = (
            Some(Span::prefix(Resolution::Day)),
            Some(Span::suffix(Resolution::Day)),
        );
        type Case = (
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Vec<(Option<Span>, i64, i64)>,
        );
        let cases: Vec<Case> = vec![
            // The 32-day spans, then the third block's prefix through day 69.
            (
                0,
                70,
                None,
                None,
                vec![(d(5), at(0), at(64)), (pre, at(69), at(70))],
            ),
            // 28 days across a block boundary: a suffix and a prefix, whatever the days.
            (
                19,
                47,
                None,
                None,
                vec![(suf, at(19), at(20)), (pre, at(46), at(47))],
            ),
            // A one-day edge is that day's row.
            (31, 33, None, None, vec![(None, at(31), at(33))]),
            // No suffix reaching below the cut, nor a prefix whose block starts below it.
            (
                30,
                37,
                Some(31),
                None,
                vec![(None, at(30), at(32)), (pre, at(36), at(37))],
            ),
            (
                33,
                37,
                Some(33),
                None,
                vec![
                    (None, at(33), at(34)),
                    (d(1), at(34), at(36)),
                    (None, at(36), at(37)),
                ],
            ),
            // Until a block's suffix is built, its day rows and spans stand in.
            (
                29,
                33,
                None,
                Some(29),
                vec![
                    (None, at(29), at(30)),
                    (d(1), at(30), at(32)),
                    (None, at(32), at(33)),
                ],
            ),
            (
                29,
                33,
                None,
                Some(28),
                vec![(suf, at(29), at(30)), (None, at(32), at(33))],
            ),
        ];
        for (from, to, cut, next, want) in cases {
            let cut = cut.map_or(i64::MIN, at);
            let got = pieces(Resolution::Day, at(from), at(to), cut, next.map(at));
            assert_eq!(got, want, "days {from}..{to}");
        }
        // Hours have spans only.
        assert_eq!(
            pieces(
                Resolution::Hour,
                day + 14 * HOUR_MS,
                day + DAY_MS,
                i64::MIN,
                None
            ),
            vec![
                (h(1), day + 14 * HOUR_MS, day + 16 * HOUR_MS),
                (h(3), day + 16 * HOUR_MS, day + 24 * HOUR_MS),
            ]
        );
        // What rows they stand for.
        assert_eq!(
            Span::prefix(Resolution::Day).covers(day + 13 * DAY_MS),
            (day, day + 14 * DAY_MS)
        );
        assert_eq!(
            Span::suffix(Resolution::Day).covers(day + 19 * DAY_MS),
            (day + 19 * DAY_MS, day + 32 * DAY_MS)
        );
        for base in [Resolution::Hour, Resolution::Day] {
            for span in Span::levels(base) {
                assert_eq!(Span::from_code(span.code()), Some(span));
            }
        }
        let day_edges = [Span::prefix(Resolution::Day), Span::suffix(Resolution::Day)];
        for span in day_edges {
            assert_eq!(Span::from_code(span.code()), Some(span));
        }
        assert_eq!((Span::from_code(18), Span::from_code(19)), (None, None));
        // Below the cut, single days.
        assert_eq!(
            pieces(Resolution::Day, day, day + 4 * DAY_MS, day + DAY_MS, None),
            vec![
                (None, day, day + 2 * DAY_MS),
                (d(1), day + 2 * DAY_MS, day + 4 * DAY_MS),
            ]
        );
        assert!(pieces(Resolution::Day, day, day, i64::MIN, None).is_empty());
    }
}
