//! Writing minute deltas, and rolling closed hours up from minutes and closed days up from hours.
//!
//! Minute rows live in `hist_minute`, one per view with every metric's histogram ([`super::view_blob`]); hour and day
//! rows in `hist`, one per metric. An hour rolls up from `hist_minute` into `hist`, one metric at a time.
//!
//! Watermarks in `meta` say how far roll-ups have gone: every hour before `hours_rolled_until` has its hour rows,
//! every day before `days_rolled_until` its day rows. A delta for a minute that is already rolled up (a beacon
//! replayed after a restart) is merged into the hour and day rows too, so every resolution stays exact.
//!
//! `hist_page` (hour and day rows merged over device, release and nav) follows `hist` step for step: its hours are
//! rolled from `hist`'s new hour rows in the same transaction, its days from its own hours, late deltas
//! reach it like they reach `hist`'s hours and days, and it is pruned with the same cuts. It also holds partial rows
//! for the hours not yet rolled up ([`PARTIAL_HOUR_RES`]): each closed minute is merged into them once, after
//! [`MERGE_GRACE_MS`], and a later delta for a merged minute reaches them like a late delta reaches an hour row. An
//! hour's partial rows are deleted when the hour rolls up.

use super::aggregator::{MinuteDeltas, ViewKey};
use super::pacer::Pacer;
use super::spans;
use super::view_blob::{self, Slots};
use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use vitals::{Histogram, Metric};

/// How long after an hour ends before it is rolled up: deltas reach the database within a couple of seconds.
pub const ROLLUP_GRACE_MS: i64 = 2 * 60_000;

const HOURS_KEY: &str = "hours_rolled_until";
/// The largest accepted-beacon id whose samples are in `hist` (the spool checkpoint, moved with the data).
const STORED_THROUGH_KEY: &str = "stored_through";
const DAYS_KEY: &str = "days_rolled_until";
/// Every minute before this (and at or after `hours_rolled_until`) is merged into its hour's partial rows.
const MERGED_KEY: &str = "minutes_merged_until";

/// `hist_page`'s `res` for the partial rows of hours not yet rolled up: per page, the merge of the hour's minutes
/// before [`merged_until`]. A query over the hour in progress then reads one row per page for the minutes merged
/// and minute rows only for the few after: with traffic, an hour's minute rows for one metric run to hundreds of
/// thousands (every page, device, release and nav of every minute), and a month by page read them all.
pub const PARTIAL_HOUR_RES: i64 = 3;

/// How long after a minute ends before it is merged into its hour's partial rows: its deltas are flushed within a
/// second or two; any later ones reach the partial rows as late deltas (below).
pub const MERGE_GRACE_MS: i64 = 5_000;

/// Sets the watermarks for a new database: nothing before now needs rolling.
pub fn init_watermarks(tx: &Transaction<'_>, now_ms: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
        params![HOURS_KEY, Resolution::Hour.floor(now_ms)],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
        params![DAYS_KEY, Resolution::Day.floor(now_ms)],
    )?;
    Ok(())
}

/// The (hours, days) roll-up watermarks.
pub fn watermarks(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let get = |k: &str| -> rusqlite::Result<i64> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    };
    Ok((get(HOURS_KEY)?, get(DAYS_KEY)?))
}

/// Where the minutes merged into partial hour rows end: never below the hour roll-up watermark (minutes below it are
/// in hour rows, and their partial rows were deleted when their hour rolled up).
pub fn merged_until(conn: &Connection) -> rusqlite::Result<i64> {
    let (hours_until, _) = watermarks(conn)?;
    let merged: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [MERGED_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(merged.unwrap_or(hours_until).max(hours_until))
}

/// Deletes one (site, metric)'s partial rows (`?3`) of the hour starting at `?4`.
const DROP_PARTIAL: &str =
    "DELETE FROM hist_page WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms = ?4";

/// Merges every closed minute not yet merged (above the hour watermark) into its hour's partial rows.
///
/// In Rust rather than SQL: each view row holds every metric, so one pass over a minute's rows fills all five
/// metrics' partial rows. A minute's rows come in page order (the key's order after site and minute), so each
/// page's histograms are merged and written as soon as the next page starts: memory holds one page, however many
/// pages the site has. (Holding every page of a minute at once raised the collector's peak RSS with 100,000 pages
/// from 123 to 188 MiB.)
fn merge_closed_minutes(conn: &mut Connection, now_ms: i64) -> rusqlite::Result<()> {
    let from = merged_until(conn)?;
    let to = Resolution::Minute.floor(now_ms - MERGE_GRACE_MS);
    if to <= from {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut read = tx.prepare_cached(MINUTE_BY_PAGE)?;
        let mut upsert = tx.prepare_cached(UPSERT_PAGE)?;
        for site in sites(&tx, "hist_minute")? {
            let mut minute = from;
            while minute < to {
                let hour = Resolution::Hour.floor(minute);
                let mut put = |page: &str, slots: &Slots| -> rusqlite::Result<()> {
                    for (metric, h) in Metric::ALL.iter().zip(slots) {
                        if let Some(h) = h {
                            upsert.execute(params![
                                PARTIAL_HOUR_RES,
                                site,
                                metric.code(),
                                hour,
                                page,
                                h.encode()
                            ])?;
                        }
                    }
                    Ok(())
                };
                let mut current: Option<(String, Slots)> = None;
                let mut rows = read.query(params![site, minute])?;
                while let Some(row) = rows.next()? {
                    let page = row.get_ref(0)?.as_str()?;
                    if current.as_ref().is_none_or(|(p, _)| p != page) {
                        if let Some((p, slots)) = current.take() {
                            put(&p, &slots)?;
                        }
                        current = Some((page.to_owned(), Slots::default()));
                    }
                    let slots = &mut current.as_mut().expect("set above").1;
                    view_blob::merge_into(slots, row.get_ref(1)?.as_blob()?).map_err(corrupt)?;
                }
                if let Some((p, slots)) = current.take() {
                    put(&p, &slots)?;
                }
                minute += MINUTE_MS;
            }
        }
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![MERGED_KEY, to],
    )?;
    tx.commit()
}

/// One site's (`?1`) view rows of one minute (`?2`), in page order: the key's own order, so no sort.
const MINUTE_BY_PAGE: &str =
    "SELECT page, hists FROM hist_minute WHERE site = ?1 AND start_ms = ?2 ORDER BY page";

/// A `hist_minute` blob that does not decode: the file is damaged or was written by something else.
fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
}

/// A view's minute deltas merged into its `hist_minute` row.
const UPSERT_MINUTE: &str =
    "INSERT INTO hist_minute(site, start_ms, page, device, release, nav, hists) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT(site, start_ms, page, device, release, nav) DO UPDATE SET hists = view_merge(hists, excluded.hists)";

/// A late delta merged into its hour or day row of `hist`.
const UPSERT: &str =
    "INSERT INTO hist(res, site, metric, start_ms, page, device, release, nav, hist)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT(site, metric, res, start_ms, page, device, release, nav)
    DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

const UPSERT_PAGE: &str = "INSERT INTO hist_page(res, site, metric, start_ms, page, hist)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(site, metric, res, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

/// A view's key in `hist_minute`'s key order.
fn view_order(k: &ViewKey) -> (&str, i64, &str, u8, &str, u8) {
    (
        &k.site,
        k.start_ms,
        &k.page,
        k.device.code(),
        &k.release,
        k.nav.code(),
    )
}

/// A late row's key in `hist`'s key order (site, metric, start, page, device, release, nav; one resolution).
fn key_order(k: &ViewKey, metric: Metric) -> (&str, u8, i64, &str, u8, &str, u8) {
    (
        &k.site,
        metric.code(),
        k.start_ms,
        &k.page,
        k.device.code(),
        &k.release,
        k.nav.code(),
    )
}

/// A `hist_page` row's key: resolution, site, metric, bucket start, page.
type PageRowKey = (Resolution, Arc<str>, Metric, i64, Arc<str>);

/// The largest accepted-beacon id whose samples are stored (0 when none).
pub fn stored_through(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [STORED_THROUGH_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// Merges a batch of minute deltas in one transaction, moving the stored-through checkpoint with them.
pub fn write_deltas(conn: &mut Connection, deltas: &MinuteDeltas) -> rusqlite::Result<()> {
    write_deltas_paced(conn, deltas, &mut Pacer::flat_out())
}

/// [`write_deltas`], letting `pace` pause between minute rows (the bulk of a flush).
pub fn write_deltas_paced(
    conn: &mut Connection,
    deltas: &MinuteDeltas,
    pace: &mut Pacer,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let (hours_until, days_until) = watermarks(&tx)?;
    let merged = merged_until(&tx)?;
    // Late deltas for `hist_page`, merged per page first: one upsert per page, hour and day rather than per row.
    let mut late: HashMap<PageRowKey, Histogram> = HashMap::new();
    // Deltas for minutes already merged into their hour's partial rows (see [`PARTIAL_HOUR_RES`]), per page.
    let mut partial: HashMap<(Arc<str>, Metric, i64, Arc<str>), Histogram> = HashMap::new();
    {
        // In the table's key order: consecutive upserts then descend to the same or the next leaf, whose pages are
        // still in the CPU's caches, instead of to a random one each.
        let mut upsert_minute = tx.prepare_cached(UPSERT_MINUTE)?;
        let mut views: Vec<_> = deltas.views().collect();
        views.sort_unstable_by(|(a, _), (b, _)| view_order(a).cmp(&view_order(b)));
        for (k, slots) in views {
            upsert_minute.execute(params![
                &*k.site,
                k.start_ms,
                &*k.page,
                k.device.code(),
                &*k.release,
                k.nav.code(),
                view_blob::encode(slots)
            ])?;
            pace.row_done();
        }
        // Minutes already merged into partial hour rows, or rolled up into hours and days: their deltas go there
        // too (a replay after a restart, or a flush that waited behind a roll-up).
        let mut upsert = tx.prepare_cached(UPSERT)?;
        let mut rows: Vec<_> = deltas
            .rows()
            .filter(|(k, ..)| k.start_ms < merged)
            .collect();
        rows.sort_unstable_by(|(a, am, _), (b, bm, _)| key_order(a, *am).cmp(&key_order(b, *bm)));
        for (k, metric, h) in rows {
            let blob = h.encode();
            let mut put = |res: Resolution| {
                upsert.execute(params![
                    res as i64,
                    &*k.site,
                    metric.code(),
                    res.floor(k.start_ms),
                    &*k.page,
                    k.device.code(),
                    &*k.release,
                    k.nav.code(),
                    &blob
                ])
            };
            if k.start_ms >= hours_until && k.start_ms < merged {
                let hour = Resolution::Hour.floor(k.start_ms);
                partial
                    .entry((k.site.clone(), metric, hour, k.page.clone()))
                    .or_default()
                    .merge(h);
            }
            for (res, until) in [
                (Resolution::Hour, hours_until),
                (Resolution::Day, days_until),
            ] {
                if k.start_ms < until {
                    put(res)?;
                    let key = (
                        res,
                        k.site.clone(),
                        metric,
                        res.floor(k.start_ms),
                        k.page.clone(),
                    );
                    late.entry(key).or_default().merge(h);
                }
            }
        }
        let mut upsert_page = tx.prepare_cached(UPSERT_PAGE)?;
        for ((site, metric, hour, page), h) in &partial {
            upsert_page.execute(params![
                PARTIAL_HOUR_RES,
                &**site,
                metric.code(),
                hour,
                &**page,
                h.encode()
            ])?;
        }
        let mut upsert_span = tx.prepare_cached(spans::UPSERT_SPAN)?;
        let (cuts, next_suffix) = if late.is_empty() {
            ((i64::MIN, i64::MIN), None)
        } else {
            (
                (
                    pruned_before(&tx, Resolution::Hour)?,
                    pruned_before(&tx, Resolution::Day)?,
                ),
                spans::suffix_next(&tx)?,
            )
        };
        for ((res, site, metric, start_ms, page), h) in &late {
            let blob = h.encode();
            upsert_page.execute(params![
                *res as i64,
                &**site,
                metric.code(),
                start_ms,
                &**page,
                &blob
            ])?;
            let (until, cut) = match res {
                Resolution::Hour => (hours_until, cuts.0),
                _ => (days_until, cuts.1),
            };
            spans::add_late(
                &mut upsert_span,
                (site, metric.code() as i64, *start_ms, page),
                &blob,
                *res,
                (until, cut, next_suffix),
            )?;
        }
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        params![STORED_THROUGH_KEY, deltas.max_id() as i64],
    )?;
    tx.commit()
}

/// The (site, metric) pairs `table` (`hist`, `hist_page` or `hist_span`, all keyed by site and metric first) holds,
/// found by skipping along its key: one index seek per pair, where `SELECT DISTINCT` would read every row.
///
/// Why: a roll-up or prune that names only the resolution and time cannot use the key, and SQLite scanned the whole
/// table for it — 25 s for the 10 M-sample store's `hist` (1.2 GB), once an hour, with the writer (and so every
/// flush) waiting. With site and metric given, each step reads just its time range.
pub(super) fn site_metrics(conn: &Connection, table: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    // Two single-column seeks: SQLite runs a row-value `(site, metric) > (?, ?)` by reading every row of the current
    // pair (0.4 s per step on the 10 M-sample store), while `site = ? AND metric > ?` and `site > ?` jump.
    let mut next_metric = conn.prepare_cached(&format!(
        "SELECT metric FROM {table} WHERE site = ?1 AND metric > ?2 ORDER BY metric LIMIT 1"
    ))?;
    let mut next_site = conn.prepare_cached(&format!(
        "SELECT site, metric FROM {table} WHERE site > ?1 ORDER BY site, metric LIMIT 1"
    ))?;
    let mut out: Vec<(String, i64)> = Vec::new();
    let mut at: Option<(String, i64)> = None;
    loop {
        let next = match &at {
            Some((site, metric)) => match next_metric
                .query_row(params![site, metric], |r| r.get::<_, i64>(0))
                .optional()?
            {
                Some(m) => Some((site.clone(), m)),
                None => next_site
                    .query_row([site], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?,
            },
            None => next_site
                .query_row([""], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
        };
        match next {
            Some(pair) => {
                out.push(pair.clone());
                at = Some(pair);
            }
            None => return Ok(out),
        }
    }
}

/// Rolls one site's (`?4`) `hist_minute` rows in [?2, ?3) up into `hist` rows of metric `?5`, resolution ?1, at ?2.
const ROLL_MINUTES: &str =
    "INSERT INTO hist(res, site, metric, start_ms, page, device, release, nav, hist)
    SELECT ?1, site, ?5, ?2, page, device, release, nav, hist_merge_agg(view_pick(hists, ?5))
    FROM hist_minute WHERE site = ?4 AND start_ms >= ?2 AND start_ms < ?3 AND view_has(hists, ?5)
    GROUP BY page, device, release, nav
    ORDER BY page, device, release, nav
    ON CONFLICT(site, metric, res, start_ms, page, device, release, nav)
    DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

/// The sites `table` (keyed by site first) holds, one index seek each.
pub(super) fn sites(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut next = conn.prepare_cached(&format!(
        "SELECT site FROM {table} WHERE site > ?1 ORDER BY site LIMIT 1"
    ))?;
    let mut out: Vec<String> = Vec::new();
    while let Some(site) = next
        .query_row([out.last().map_or("", String::as_str)], |r| r.get(0))
        .optional()?
    {
        out.push(site);
    }
    Ok(out)
}

/// Rolls one (site, metric)'s `hist` rows of resolution ?3 in [?2, ?4) up into one row of resolution ?1 at ?2.
const ROLL_HIST: &str =
    "INSERT INTO hist(res, site, metric, start_ms, page, device, release, nav, hist)
    SELECT ?1, site, metric, ?2, page, device, release, nav, hist_merge_agg(hist)
    FROM hist WHERE site = ?5 AND metric = ?6 AND res = ?3 AND start_ms >= ?2 AND start_ms < ?4
    GROUP BY page, device, release, nav
    ORDER BY page, device, release, nav
    ON CONFLICT(site, metric, res, start_ms, page, device, release, nav)
    DO UPDATE SET hist = hist_merge(hist, excluded.hist)";

/// [`ROLL_HIST`] into `hist_page`, merged per page, from `source`.
fn roll_page(source: &str) -> String {
    format!(
        "INSERT INTO hist_page(res, site, metric, start_ms, page, hist)
         SELECT ?1, site, metric, ?2, page, hist_merge_agg(hist)
         FROM {source} WHERE site = ?5 AND metric = ?6 AND res = ?3 AND start_ms >= ?2 AND start_ms < ?4
         GROUP BY page
         ORDER BY page
         ON CONFLICT(site, metric, res, start_ms, page) DO UPDATE SET hist = hist_merge(hist, excluded.hist)"
    )
}

/// Deletes one (site, metric)'s rows of resolution ?1 before ?2 from `table`.
fn prune_sql(table: &str) -> String {
    format!("DELETE FROM {table} WHERE site = ?3 AND metric = ?4 AND res = ?1 AND start_ms < ?2")
}

fn roll(
    tx: &Transaction<'_>,
    from: Resolution,
    to: Resolution,
    start: i64,
) -> rusqlite::Result<()> {
    let (to_res, end) = (to as i64, start + to.ms());
    if from == Resolution::Minute {
        let mut stmt = tx.prepare_cached(ROLL_MINUTES)?;
        for site in sites(tx, "hist_minute")? {
            for metric in Metric::ALL {
                stmt.execute(params![to_res, start, end, site, metric.code()])?;
            }
        }
    } else {
        let mut stmt = tx.prepare_cached(ROLL_HIST)?;
        for (site, metric) in site_metrics(tx, "hist")? {
            stmt.execute(params![to_res, start, from as i64, end, site, metric])?;
        }
    }
    // `hist_page`'s hours come from `hist`'s hour rows just written (in `hist`'s key order, so SQLite groups them by
    // page as it reads); its days from its own hours, which hold the same samples as `hist`'s hours and are fewer
    // (2.7× with 10 M benchmark samples).
    let (source, source_res) = if from == Resolution::Minute {
        ("hist", Resolution::Hour)
    } else {
        ("hist_page", from)
    };
    let mut stmt = tx.prepare_cached(&roll_page(source))?;
    for (site, metric) in site_metrics(tx, source)? {
        stmt.execute(params![to_res, start, source_res as i64, end, site, metric])?;
    }
    Ok(())
}

/// Rolls up every closed hour and day not yet rolled, and deletes rows past their resolution's age.
/// Each step is its own transaction, with the watermark moved in it.
pub fn roll_up_and_prune(
    conn: &mut Connection,
    now_ms: i64,
    day_retention_days: u32,
) -> rusqlite::Result<()> {
    loop {
        let (hours_until, days_until) = watermarks(conn)?;
        if hours_until + HOUR_MS + ROLLUP_GRACE_MS <= now_ms {
            let tx = conn.transaction()?;
            roll(&tx, Resolution::Minute, Resolution::Hour, hours_until)?;
            // The hour's rows now hold what its partial rows held, and more.
            let mut drop_partial = tx.prepare_cached(DROP_PARTIAL)?;
            for (site, metric) in site_metrics(&tx, "hist_page")? {
                drop_partial.execute(params![site, metric, PARTIAL_HOUR_RES, hours_until])?;
            }
            drop(drop_partial);
            spans::build_ending_at(&tx, Resolution::Hour, hours_until + HOUR_MS)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = ?2",
                params![hours_until + HOUR_MS, HOURS_KEY],
            )?;
            tx.commit()?;
        } else if days_until + DAY_MS <= hours_until {
            let tx = conn.transaction()?;
            roll(&tx, Resolution::Hour, Resolution::Day, days_until)?;
            spans::build_ending_at(&tx, Resolution::Day, days_until + DAY_MS)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = ?2",
                params![days_until + DAY_MS, DAYS_KEY],
            )?;
            tx.commit()?;
        } else {
            break;
        }
    }
    // A completed block's day suffixes, one per pass (see `spans`).
    if spans::suffix_next(conn)?.is_some() {
        let tx = conn.transaction()?;
        spans::build_next_suffix(&tx)?;
        tx.commit()?;
    }
    merge_closed_minutes(conn, now_ms)?;
    let (hours_until, days_until) = watermarks(conn)?;
    // Finer rows go only once coarser rows hold their data and the snapping policy no longer reaches them.
    // Cuts are floored to whole hours (minute rows) and days (hour and day rows), and a cut is applied only when it
    // has moved: each DELETE scans the table (its key leads with site and metric), and running three of them every
    // second cost an idle collector a steady share of a core once the table held a few million rows.
    let minute_cut = Resolution::Hour
        .floor(hours_until.min(now_ms - Resolution::Minute.kept_for_ms() - HOUR_MS));
    let hour_cut =
        Resolution::Day.floor(days_until.min(now_ms - Resolution::Hour.kept_for_ms() - DAY_MS));
    prune(conn, Resolution::Minute, minute_cut, MINUTES_PRUNED_KEY)?;
    prune(conn, Resolution::Hour, hour_cut, HOURS_PRUNED_KEY)?;
    if day_retention_days > 0 {
        let day_cut = Resolution::Day.floor(now_ms) - day_retention_days as i64 * DAY_MS;
        prune(conn, Resolution::Day, day_cut, DAYS_PRUNED_KEY)?;
    }
    Ok(())
}

/// The cut below which `res` rows were last pruned (`i64::MIN` when never): spans start at or above it.
pub fn pruned_before(conn: &Connection, res: Resolution) -> rusqlite::Result<i64> {
    let key = match res {
        Resolution::Minute => MINUTES_PRUNED_KEY,
        Resolution::Hour => HOURS_PRUNED_KEY,
        Resolution::Day => DAYS_PRUNED_KEY,
    };
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MIN))
}

const MINUTES_PRUNED_KEY: &str = "minutes_pruned_before";
const HOURS_PRUNED_KEY: &str = "hours_pruned_before";
const DAYS_PRUNED_KEY: &str = "days_pruned_before";

/// Deletes rows of `res` before `cut` unless the last prune (recorded under `key`) already went that far.
/// A late row written below an applied cut (a replay) stays until the cut next moves; queries never read it, since
/// they snap to coarser rows at that age.
fn prune(conn: &mut Connection, res: Resolution, cut: i64, key: &str) -> rusqlite::Result<()> {
    let done: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    if done.is_some_and(|d| d >= cut) {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if res == Resolution::Minute {
        let mut stmt =
            tx.prepare_cached("DELETE FROM hist_minute WHERE site = ?1 AND start_ms < ?2")?;
        for site in sites(&tx, "hist_minute")? {
            stmt.execute(params![site, cut])?;
        }
    }
    // Minutes are only in `hist_minute`.
    let tables: &[&str] = match res {
        Resolution::Minute => &[],
        _ => &["hist", "hist_page"],
    };
    for table in tables {
        let mut stmt = tx.prepare_cached(&prune_sql(table))?;
        for (site, metric) in site_metrics(&tx, table)? {
            stmt.execute(params![res as i64, cut, site, metric])?;
        }
    }
    spans::prune(&tx, res, cut)?;
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, cut],
    )?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding the (site, metric) pairs costs a few steps per pair however many rows each pair has (a row-value
    /// comparison here read every row of the pair it started from).
    #[test]
    fn site_metrics_jump_over_the_rows_of_each_pair() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open_writer(&dir.path().join("db")).unwrap();
        let blob = Histogram::new().encode();
        for (site, metric, rows) in [("a", 0, 3000), ("a", 2, 1), ("b", 1, 3000)] {
            for t in 0..rows {
                conn.execute(
                    "INSERT INTO hist(res, site, metric, start_ms, page, device, release, nav, hist)
                     VALUES (0, ?1, ?2, ?3, '/', 0, '', 0, ?4)",
                    params![site, metric, t * 60_000, blob],
                )
                .unwrap();
            }
        }
        let pairs = site_metrics(&conn, "hist").unwrap();
        assert_eq!(
            pairs,
            vec![("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]
        );
        let steps: i32 = [
            "SELECT metric FROM hist WHERE site = ?1 AND metric > ?2 ORDER BY metric LIMIT 1",
            "SELECT site, metric FROM hist WHERE site > ?1 ORDER BY site, metric LIMIT 1",
        ]
        .iter()
        .map(|sql| {
            conn.prepare_cached(sql)
                .unwrap()
                .get_status(rusqlite::StatementStatus::VmStep)
        })
        .sum();
        assert!(steps < 200, "{steps} VM steps for 6,001 rows");
    }

    /// Every roll-up, prune and span statement reads through the tables' keys: none scans a table (on the 10 M-sample
    /// store a scan of `hist` took 25 s, once an hour, with the writer waiting).
    #[test]
    fn roll_ups_and_prunes_search_the_keys_never_scan() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open_writer(&dir.path().join("db")).unwrap();
        let mut statements = vec![
            ROLL_HIST.to_string(),
            ROLL_MINUTES.to_string(),
            MINUTE_BY_PAGE.to_string(),
            "DELETE FROM hist_minute WHERE site = ?1 AND start_ms < ?2".into(),
            "SELECT site FROM hist_minute WHERE site > ?1 ORDER BY site LIMIT 1".into(),
            super::super::schema::MOVE_MINUTES_V5.to_string(),
            roll_page("hist"),
            roll_page("hist_page"),
            prune_sql("hist"),
            prune_sql("hist_page"),
            DROP_PARTIAL.to_string(),
            "DELETE FROM hist_span WHERE site = ?1 AND metric = ?2 AND level = ?3 AND start_ms < ?4".into(),
            "SELECT metric FROM hist WHERE site = ?1 AND metric > ?2 ORDER BY metric LIMIT 1".into(),
            "SELECT site, metric FROM hist WHERE site > ?1 ORDER BY site, metric LIMIT 1".into(),
        ];
        statements.extend(
            super::super::spans::build_statements()
                .iter()
                .map(|s| s.to_string()),
        );
        for sql in statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(std::iter::repeat_n(0, n)), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}\n{plan:?}"
            );
            // The partial-hour merge streams a minute's rows page by page: they must come in key order, unsorted.
            if sql == MINUTE_BY_PAGE {
                assert!(
                    plan.iter().all(|step| !step.contains("TEMP B-TREE")),
                    "{plan:?}"
                );
            }
        }
    }
}
