//! The embedded store's schema and connection settings.

use crate::time_range::Resolution;
use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Bumped when the schema changes; older files are migrated in [`open_writer`].
const SCHEMA_VERSION: i64 = 6;

/// Version 1: the `hist` table (every dimension) and `meta` (watermarks, checkpoint).
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS hist (
    res      INTEGER NOT NULL,  -- 1 hour, 2 day (0 minute before version 5; now in hist_minute)
    site     TEXT    NOT NULL,
    metric   INTEGER NOT NULL,  -- vitals::Metric::code
    start_ms INTEGER NOT NULL,  -- bucket start, Unix ms, UTC
    page     TEXT    NOT NULL,
    device   INTEGER NOT NULL,  -- vitals::DeviceClass::code
    release  TEXT    NOT NULL,  -- '' when the beacon had none
    nav      INTEGER NOT NULL,  -- vitals::NavType::code
    hist     BLOB    NOT NULL,  -- vitals::Histogram::encode
    PRIMARY KEY (site, metric, res, start_ms, page, device, release, nav)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2 adds `hist_page`: hour and day rows of `hist` merged over device, release and nav. "p75 by page over 28
/// days" reads ~1,000 × 28 of these instead of 5-13× as many `hist` rows; it is kept in the roll-ups and late writes
/// (see [`super::rollup`]), never on the per-second flush of current minutes.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS hist_page (
    site     TEXT    NOT NULL,
    metric   INTEGER NOT NULL,
    res      INTEGER NOT NULL,  -- 1 hour, 2 day (minutes are read from hist)
    start_ms INTEGER NOT NULL,
    page     TEXT    NOT NULL,
    hist     BLOB    NOT NULL,
    PRIMARY KEY (site, metric, res, start_ms, page)
) WITHOUT ROWID;
";

/// Version 5 moves minute rows out of `hist` into `hist_minute`: one row per view (minute, site, page, device, release,
/// nav) holding every metric's histogram ([`super::view_blob`]). The per-second flush then upserts a view once
/// instead of once per metric. `hist` keeps the hour and day rows, per metric.
const SCHEMA_V5: &str = "
CREATE TABLE IF NOT EXISTS hist_minute (
    site     TEXT    NOT NULL,
    start_ms INTEGER NOT NULL,  -- minute start, Unix ms, UTC
    page     TEXT    NOT NULL,
    device   INTEGER NOT NULL,
    release  TEXT    NOT NULL,
    nav      INTEGER NOT NULL,
    hists    BLOB    NOT NULL,  -- view_blob: each metric's vitals::Histogram::encode
    PRIMARY KEY (site, start_ms, page, device, release, nav)
) WITHOUT ROWID;
";

/// Moves one (site, metric)'s minute rows from `hist` into `hist_minute` (version 4 to 5).
pub(super) const MOVE_MINUTES_V5: &str = "
INSERT INTO hist_minute(site, start_ms, page, device, release, nav, hists)
SELECT site, start_ms, page, device, release, nav, view_of(metric, hist) FROM hist
WHERE site = ?1 AND metric = ?2 AND res = 0
ON CONFLICT(site, start_ms, page, device, release, nav) DO UPDATE SET hists = view_merge(hists, excluded.hists)";

/// Fills `hist_page` from the hour and day rows a version-1 store already holds (in `hist`'s key order, so SQLite
/// groups while it scans, without sorting).
const BACKFILL_V2: &str = "
INSERT INTO hist_page(site, metric, res, start_ms, page, hist)
SELECT site, metric, res, start_ms, page, hist_merge_agg(hist) FROM hist WHERE res IN (1, 2)
GROUP BY site, metric, res, start_ms, page
ORDER BY site, metric, res, start_ms, page;
";

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers never block the writer. synchronous=NORMAL: a power loss can cost the last transactions but
    // never corrupts the file (the spool in front of the store is what makes accepted beacons durable).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    )?;
    super::sql_functions::register(conn)
}

/// Writer-only settings. Every flush rewrites the pages of the current minute's rows: with SQLite's defaults (a
/// 2 MiB page cache, a checkpoint every 1,000 WAL pages) it re-read them from the OS and checkpointed them on almost
/// every flush, a third of the writer's CPU at full ingest. A 32 MiB cache and a checkpoint every ~40 MiB of WAL
/// write each hot page back once per several flushes instead.
fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;")
}

/// Opens the writer connection, creating or migrating the schema.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    configure_writer(&conn)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Other(format!(
            "{} has schema version {version}, newer than this collector's {SCHEMA_VERSION}; upgrade the collector",
            path.display()
        )));
    }
    if version < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute_batch(SCHEMA_V2)?;
        tx.execute_batch(super::spans::SCHEMA_V3)?;
        tx.execute_batch(SCHEMA_V5)?;
        if version == 1 {
            tx.execute_batch(BACKFILL_V2)?;
        }
        super::rollup::init_watermarks(&tx, chrono::Utc::now().timestamp_millis())?;
        if (1..3).contains(&version) {
            // Version 3: day rows are rewritten in the sectioned encoding where it applies (hour rows are mostly too
            // small for it), and spans are built over the hours and days already rolled up.
            tx.execute(
                "UPDATE hist_page SET hist = hist_merge(hist, ?1) WHERE res = ?2",
                rusqlite::params![vitals::Histogram::new().encode(), Resolution::Day as i64],
            )?;
            let (hours_until, days_until) = super::rollup::watermarks(&tx)?;
            for (base, until) in [
                (Resolution::Hour, hours_until),
                (Resolution::Day, days_until),
            ] {
                let cut = super::rollup::pruned_before(&tx, base)?;
                super::spans::backfill(&tx, base, cut, until)?;
            }
        }
        if (1..5).contains(&version) {
            // Version 5: minute rows move to `hist_minute`, per (site, metric) so each step seeks (a `res = 0`
            // filter alone would scan all of `hist`). At most two days of minutes are kept, so this is brief.
            let mut copy = tx.prepare(MOVE_MINUTES_V5)?;
            let mut delete =
                tx.prepare("DELETE FROM hist WHERE site = ?1 AND metric = ?2 AND res = 0")?;
            for (site, metric) in super::rollup::site_metrics(&tx, "hist")? {
                copy.execute(rusqlite::params![site, metric])?;
                delete.execute(rusqlite::params![site, metric])?;
            }
        }
        if (1..6).contains(&version) {
            // Version 6: day prefixes and suffixes within 32-day blocks (`spans`), over the days already rolled up.
            let (_, days_until) = super::rollup::watermarks(&tx)?;
            let cut = super::rollup::pruned_before(&tx, Resolution::Day)?;
            super::spans::backfill_edges(&tx, Resolution::Day, cut, days_until)?;
        }
        // Version 4: `hist_page` also holds partial rows for the hours not yet rolled up (`res` 3, see
        // `rollup::PARTIAL_HOUR_RES`). Nothing to fill in: their watermark starts at the hour roll-up's, and the next
        // roll-up merges the open hours' closed minutes. The version moves so that an older collector, which would
        // neither keep them up to date nor delete them, refuses the file.
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Opens a read connection.
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A month by page reads ~2 MiB of rows on each of a query's two readers, just over SQLite's default 2 MiB page
    // cache: each query then read its pages from the OS again. 8 MiB holds them (at most 64 MiB over the pool's 8
    // readers; SQLite fills it only as pages are read). Beyond it, pages are read through a memory map instead of
    // `read(2)`: the copies out of the OS page cache were ~5 % of a month-by-page query (only address space is
    // reserved; the mapped pages are the OS's page cache, shared and reclaimable).
    conn.execute_batch("PRAGMA cache_size = -8192; PRAGMA mmap_size = 4294967296;")?;
    // A by-page query streams with a statement per bucket (up to 32 at once) beside the planner's own.
    conn.set_prepared_statement_cache_capacity(64);
    super::sql_functions::register(&conn)?;
    Ok(conn)
}
