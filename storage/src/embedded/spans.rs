//! Span rows: `hist_page` merged over aligned runs of 2, 4, 8 and 16 hours and of 2 to 32 days (`hist_span`), so a
//! long range reads a few rows per page instead of one per hour and day.
//!
//! A span of 2^k hours (days) starts at a multiple of its length since the epoch and is built, from its two halves
//! one level down (the hour or day rows themselves for k = 1), in the transaction that rolls up its last hour (day).
//! It therefore exists exactly when its end is at or below the roll-up watermark and its start at or above the
//! prune cut of its base resolution (spans reaching below the cut are deleted with the rows they merged). Late
//! deltas into rolled-up hours and days reach the spans that already exist (`rollup::write_deltas`). Queries cover
//! each hour and day piece greedily with the longest span that fits ([`pieces`]).

use super::rollup::site_metrics;
use crate::time_range::Resolution;
use rusqlite::{params, Connection};

/// Version 3 of the schema adds the table.
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS hist_span (
    site     TEXT    NOT NULL,
    metric   INTEGER NOT NULL,
    level    INTEGER NOT NULL,  -- 10 + k: 2^k hours; 20 + k: 2^k days
    start_ms INTEGER NOT NULL,
    page     TEXT    NOT NULL,
    hist     BLOB    NOT NULL,
    PRIMARY KEY (site, metric, level, start_ms, page)
) WITHOUT ROWID;
";

/// One span length: 2^k units of an hour or a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    base: Resolution,
    k: u32,
}

impl Span {
    /// The span lengths over `base` (hours: 2 to 16; days: 2 to 32), shortest first. Minutes have none.
    pub fn levels(base: Resolution) -> impl Iterator<Item = Span> {
        let top = match base {
            Resolution::Minute => 0,
            Resolution::Hour => 4,
            Resolution::Day => 5,
        };
        (1..=top).map(move |k| Span { base, k })
    }

    /// The `level` column's value.
    pub fn code(self) -> i64 {
        let family = if self.base == Resolution::Hour {
            10
        } else {
            20
        };
        family + self.k as i64
    }

    /// The length in ms.
    pub fn ms(self) -> i64 {
        self.base.ms() << self.k
    }

    /// The span's start holding `t`.
    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.ms()) * self.ms()
    }

    fn lower(self) -> Option<Span> {
        (self.k > 1).then_some(Span {
            base: self.base,
            k: self.k - 1,
        })
    }
}

/// The statements that build spans of one (site, metric): from `hist_page` rows, and from the spans one level down.
pub(super) fn build_statements() -> [&'static str; 2] {
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
    let [from_rows, from_spans] = build_statements();
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

/// Builds the spans of `base` that end at `end`, a bucket end the roll-up watermark has just reached.
pub fn build_ending_at(conn: &Connection, base: Resolution, end: i64) -> rusqlite::Result<()> {
    for span in Span::levels(base) {
        if end % span.ms() != 0 {
            // Not a span end at this length, nor at any longer one.
            break;
        }
        build(conn, span, end - span.ms(), end)?;
    }
    Ok(())
}

/// Builds every span of `base` between `cut` (the prune cut, `i64::MIN` when none) and `until` (the roll-up
/// watermark): what a store migrated to version 3 needs for the hour and day rows it already holds.
pub fn backfill(conn: &Connection, base: Resolution, cut: i64, until: i64) -> rusqlite::Result<()> {
    let low = match conn
        .query_row(
            "SELECT min(start_ms) FROM hist_page WHERE res = ?1",
            [base as i64],
            |r| r.get::<_, Option<i64>>(0),
        )?
        // From the start of the longest span holding the first row: no span that queries may use (one starting at or
        // above the cut) is left unbuilt.
        .map(|first| {
            let longest = Span::levels(base).last().map_or(base.ms(), Span::ms);
            first.div_euclid(longest).saturating_mul(longest).max(cut)
        }) {
        Some(low) => low,
        None => return Ok(()),
    };
    for span in Span::levels(base) {
        build(conn, span, low, until)?;
    }
    Ok(())
}

/// Deletes spans of `base` that start below `cut`.
pub fn prune(conn: &Connection, base: Resolution, cut: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM hist_span WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms < ?4",
    )?;
    for (site, metric) in site_metrics(conn, "hist_span")? {
        for span in Span::levels(base) {
            stmt.execute(params![site, metric, span.code(), cut])?;
        }
    }
    Ok(())
}

/// Merges a late delta of the `base` bucket at `start` into the spans holding it that exist (see the module docs).
pub fn add_late(
    upsert: &mut rusqlite::CachedStatement<'_>,
    row: (&str, i64, i64, &str),
    blob: &[u8],
    base: Resolution,
    until: i64,
    cut: i64,
) -> rusqlite::Result<()> {
    let (site, metric, start, page) = row;
    for span in Span::levels(base) {
        let s = span.floor(start);
        if s + span.ms() <= until && s >= cut {
            upsert.execute(params![site, metric, span.code(), s, page, blob])?;
        }
    }
    Ok(())
}

/// The upsert [`add_late`] runs.
pub const UPSERT_SPAN: &str = "INSERT INTO hist_span(site, metric, level, start_ms, page, hist)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(site, metric, level, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

/// Covers `[from, to)`, a range of whole `base` buckets that are all rolled up, with the longest spans that fit and
/// start at or above `cut`, and single buckets elsewhere (`None`); adjacent pieces of one length are coalesced.
pub fn pieces(base: Resolution, from: i64, to: i64, cut: i64) -> Vec<(Option<Span>, i64, i64)> {
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
                k: span,
            })
        };
        // 03:00 to 23:00: 3-4, 4-8, 8-16, 16-20, 20-22, 22-23.
        assert_eq!(
            pieces(
                Resolution::Hour,
                day + 3 * HOUR_MS,
                day + 23 * HOUR_MS,
                i64::MIN
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
                k,
            })
        };
        assert_eq!(
            pieces(Resolution::Day, day, day + 70 * DAY_MS, i64::MIN),
            vec![
                (d(5), day, day + 64 * DAY_MS),
                (d(2), day + 64 * DAY_MS, day + 68 * DAY_MS),
                (d(1), day + 68 * DAY_MS, day + 70 * DAY_MS),
            ]
        );
        // Below the cut, single days.
        assert_eq!(
            pieces(Resolution::Day, day, day + 4 * DAY_MS, day + DAY_MS),
            vec![
                (None, day, day + 2 * DAY_MS),
                (d(1), day + 2 * DAY_MS, day + 4 * DAY_MS),
            ]
        );
        assert!(pieces(Resolution::Day, day, day, i64::MIN).is_empty());
    }
}
