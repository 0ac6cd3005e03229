//! The schema as versioned migrations, rendered for one server or for a cluster.
//!
//! Every statement is idempotent (`IF NOT EXISTS`), so running the migrations twice, or from several collectors at
//! once, converges on the same schema; a version is recorded in `schema_migrations` after its statements succeeded
//! (concurrent runners may record it twice: the table is a ReplacingMergeTree and readers use `DISTINCT`).
//!
//! Only SQL that ClickHouse 18.16 understands is used (no TTL, CODEC, LowCardinality, Map, DateTime64), and it is
//! checked against modern ClickHouse by `.ci/chdb.sh`. Time arithmetic is done on Unix seconds rather than with
//! `toStartOfHour`/`toYYYYMMDD`, which follow the server's time zone: hours and days are UTC whatever the server's
//! zone, exactly like the embedded store and `storage::snap_range`.

use crate::config::ClickHouseConfig;

/// The raw table collectors insert into (schema v5 on): one row per beacon, its samples as parallel arrays. No
/// materialized view reads it: the sink writes the rollup rows itself (its stored rows summed over a window,
/// [`crate::rollup_window`]), through [`ROLLUP_INPUT`].
pub const RAW: &str = "raw_beacons_v5";
/// [`RAW`] as one row per sample, the shape of the older raw tables (a plain view with `ARRAY JOIN`), so that
/// [`RAW_ALL`] reads every version alike.
pub const RAW_V5_SAMPLES: &str = "samples_v5";
/// The raw table of schema v4 collectors (one row per sample, no view): still read, no longer written.
pub const RAW_V4: &str = "raw_samples_v4";
/// The raw table of schema v3 collectors, rolled up by its view: still read, no longer written by this version.
pub const RAW_V3: &str = "raw_samples";
/// The raw table of schema v1–v2 collectors: still read, no longer written by this version.
pub const RAW_V1: &str = "samples";
/// Every raw table as one, one row per sample (a `Merge` table): what raw-edge queries and reconciliation read.
/// Reads of it must set `enable_optimize_predicate_expression = 1` (`read_raw` in lib.rs): without it 18.16 reads
/// all of [`RAW_V5_SAMPLES`] and filters afterwards (modern servers push the filter down by default).
pub const RAW_ALL: &str = "samples_all";
/// The hourly rollup table (what rollup queries name).
pub const ROLLUP: &str = "rollup_hourly";
/// Where the sink writes its rollup window's rows, already summed per hour and group: a `Null` table whose view turns
/// them into the rollup's aggregate states.
pub const ROLLUP_INPUT: &str = "rollup_input";
/// The migrations record.
pub const MIGRATIONS: &str = "schema_migrations";

/// One schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Version number, increasing from 1.
    pub version: u32,
    /// What it does.
    pub name: &'static str,
    /// Its statements, in order, each idempotent.
    pub statements: Vec<String>,
}

/// Names and engines, which differ between one server and a cluster.
struct Layout<'a> {
    db: &'a str,
    cluster: Option<&'a str>,
}

impl Layout<'_> {
    fn on_cluster(&self) -> String {
        self.cluster
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default()
    }

    /// The table that physically holds rows: `<name>_local` on a cluster, `<name>` otherwise.
    fn local(&self, name: &str) -> String {
        match self.cluster {
            Some(_) => format!("{}.{name}_local", self.db),
            None => format!("{}.{name}", self.db),
        }
    }

    fn engine(&self, family: &str, name: &str) -> String {
        match self.cluster {
            // One replication path per shard and table; `{shard}` and `{replica}` are each server's macros.
            Some(_) => format!(
                "Replicated{family}('/clickhouse/tables/{{shard}}/{}/{name}_local', '{{replica}}')",
                self.db
            ),
            None => family.to_string(),
        }
    }

    /// On a cluster, the `Distributed` table that fans inserts and queries out over the shards.
    fn distributed(&self, name: &str) -> Option<String> {
        self.cluster.map(|c| {
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name}{oc} AS {db}.{name}_local \
                 ENGINE = Distributed({c}, {db}, {name}_local, rand())",
                db = self.db,
                oc = self.on_cluster(),
            )
        })
    }
}

/// `CREATE DATABASE`, run before everything else (the only statement that does not name the database's tables).
pub fn create_database(cfg: &ClickHouseConfig) -> String {
    let l = Layout {
        db: &cfg.database,
        cluster: cfg.cluster.as_deref(),
    };
    format!(
        "CREATE DATABASE IF NOT EXISTS {}{}",
        cfg.database,
        l.on_cluster()
    )
}

/// The migrations table.
pub fn create_migrations_table(cfg: &ClickHouseConfig) -> String {
    let l = Layout {
        db: &cfg.database,
        cluster: cfg.cluster.as_deref(),
    };
    let engine = match cfg.cluster {
        // One replicated table over all servers, so any server answers which versions ran.
        Some(_) => format!(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/all/{}/{MIGRATIONS}', '{{replica}}')",
            cfg.database
        ),
        None => "ReplacingMergeTree".into(),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS}{oc} \
         (version UInt32, name String, applied_at DateTime) ENGINE = {engine} ORDER BY version",
        db = cfg.database,
        oc = l.on_cluster(),
    )
}

/// Every migration, in version order.
pub fn migrations(cfg: &ClickHouseConfig) -> Vec<Migration> {
    let l = Layout {
        db: &cfg.database,
        cluster: cfg.cluster.as_deref(),
    };
    let oc = l.on_cluster();
    let db = &cfg.database;

    // v1: raw samples. Day partitions (UTC day number) make retention a DROP PARTITION; the sort key serves
    // "one site, one metric, a time range". Codes: device 0 phone 1 tablet 2 desktop; nav = vitals NavType code;
    // metric = vitals Metric code; rating 0 good 1 needs improvement 2 poor; bucket = vitals::histogram::bucket_of.
    let mut v1 = vec![create_raw(&l, RAW_V1)];
    v1.extend(l.distributed(RAW_V1));

    // v2: hourly rollup, one row per (hour, site, metric, page, device, release, nav), filled by a materialized view
    // on every insert into the raw table. The histogram is a mergeable sumMap of (bucket, count) with the raw
    // table's buckets, so merged rollups give exactly the histogram the raw rows give.
    //
    // The view also writes, in the same block, one marker row per writer source (r_site '', r_source set) holding
    // the largest beacon id it rolled up. Raw insert and view insert are not atomic together (a server stopped
    // between them keeps the raw part only), so after an uncertain insert the sink compares the raw table's and the
    // markers' largest id and rolls up the missing range itself ([`repair_rollup_sql`]). Queries always name a
    // non-empty site, so they never see markers.
    let mut v2 = vec![format!(
        "CREATE TABLE IF NOT EXISTS {rollup}{oc} (\
         hour DateTime, r_site String, r_metric UInt8, r_page String, r_device UInt8, r_release String, \
         r_nav UInt8, r_source String, \
         samples AggregateFunction(count), \
         good AggregateFunction(sum, UInt64), ni AggregateFunction(sum, UInt64), poor AggregateFunction(sum, UInt64), \
         hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64)), \
         max_id AggregateFunction(max, UInt64)\
         ) ENGINE = {engine} PARTITION BY intDiv(toUInt32(hour), 86400) \
         ORDER BY (r_site, r_metric, hour, r_page, r_device, r_release, r_nav, r_source)",
        rollup = l.local(ROLLUP),
        engine = l.engine("AggregatingMergeTree", ROLLUP),
    )];
    v2.extend(l.distributed(ROLLUP));
    v2.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{ROLLUP}_mv{oc} TO {rollup} AS {select}",
        rollup = l.local(ROLLUP),
        select = rollup_select_v2(&l.local(RAW_V1)),
    ));

    // v3: a new raw table with a cheaper view. The v2 view sends every raw row through its GROUP BY twice (as data
    // and as its source's marker); this one keeps the source as a rollup dimension instead, so each row is grouped
    // once and a source's marker is the largest id over its own rollup rows (written in the same block, so still
    // atomic with them). By hand on 18.16, 500,000 rows cost the server 0.54–0.57 s of CPU against 0.79–1.07 s.
    // The view reads a new table rather than replacing the old view: while collectors of both versions run, each
    // row meets exactly one view (replacing a view in place would roll up twice, or not at all, whatever was
    // inserted between the DROP and the CREATE). `samples_all` reads both raw tables.
    let mut v3 = vec![create_raw(&l, RAW_V3)];
    v3.extend(l.distributed(RAW_V3));
    v3.push(create_raw_all(&l, &[RAW_V1, RAW_V3]));
    v3.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{RAW_V3}_rollup_mv{oc} TO {rollup} AS {select}",
        rollup = l.local(ROLLUP),
        select = rollup_select(&l.local(RAW_V3), ""),
    ));

    // v4: the sink sums its stored rows per hour and group over a window of batches and writes those rows itself,
    // into a Null table whose view only turns them into aggregate states; the raw rows go to a new table with no
    // view. Why: the v3 view grouped every raw row, ~7.5 of the server's ~10.5 µs of CPU per beacon at the maximum
    // rate (measured by hand with the view dropped: 2.8–3.0 µs), and the rollup rows a window's sums make are far
    // fewer than the raw rows. The raw insert and the rollup insert are separate statements, so a failure between
    // them, or a crash with a window held, is what the v2/v3 repair already handles: the sink compares the raw
    // table's and the rollup's largest id and rolls the missing ids up from raw rows. `samples` keeps its
    // meaning (a count state built from each row's count), so older collectors read these rollups correctly; the
    // `Merge` table is recreated to take in the new raw table (it holds no data; while it is being recreated, a
    // read through it fails and is retried).
    let mut v4 = vec![create_raw(&l, RAW_V4)];
    v4.extend(l.distributed(RAW_V4));
    v4.push(format!("DROP TABLE IF EXISTS {db}.{RAW_ALL}{oc}"));
    v4.push(create_raw_all(&l, &[RAW_V1, RAW_V3, RAW_V4]));
    v4.push(format!(
        "CREATE TABLE IF NOT EXISTS {input}{oc} ({ROLLUP_INPUT_COLUMNS}) ENGINE = Null",
        input = l.local(ROLLUP_INPUT),
    ));
    v4.extend(l.distributed(ROLLUP_INPUT));
    v4.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{ROLLUP_INPUT}_mv{oc} TO {rollup} AS {select}",
        rollup = l.local(ROLLUP),
        select = rollup_input_select(&l.local(ROLLUP_INPUT)),
    ));

    // v5: one raw row per beacon, its samples in parallel arrays. Why: a beacon's ~4.6 samples each repeated its six
    // strings and ids, and the server's cost of a raw insert goes with rows and bytes: by hand on 18.16, 650,000
    // beacons shaped like the load test's, in 65,000-beacon blocks sorted by key, cost 1.44 s of server CPU as
    // per-sample rows and 0.55 s as per-beacon rows (65 MB against 46 MB on disk). The sort key drops `metric`
    // (a site's time range reads all its metrics' arrays), which only raw-edge queries feel: whole hours come from
    // the rollup. `samples_v5` turns the rows back into samples with `ARRAY JOIN`, and `samples_all` takes it in
    // (a `Merge` table reads views too), so every reader of raw samples is unchanged.
    let mut v5 = vec![format!(
        "CREATE TABLE IF NOT EXISTS {raw}{oc} ({BEACON_COLUMNS}) ENGINE = {engine} \
         PARTITION BY intDiv(toUInt32(time), 86400) ORDER BY (site, time)",
        raw = l.local(RAW),
        engine = l.engine("MergeTree", RAW),
    )];
    v5.extend(l.distributed(RAW));
    v5.push(format!(
        "CREATE VIEW IF NOT EXISTS {db}.{RAW_V5_SAMPLES}{oc} AS SELECT {RAW_COLUMN_NAMES} FROM {db}.{RAW} \
         ARRAY JOIN s_metric AS metric, s_value AS value, s_rating AS rating, s_bucket AS bucket"
    ));
    v5.push(format!("DROP TABLE IF EXISTS {db}.{RAW_ALL}{oc}"));
    v5.push(create_raw_all(
        &l,
        &[RAW_V1, RAW_V3, RAW_V4, RAW_V5_SAMPLES],
    ));

    vec![
        Migration {
            version: 1,
            name: "raw samples",
            statements: v1,
        },
        Migration {
            version: 2,
            name: "hourly rollup with sumMap histograms",
            statements: v2,
        },
        Migration {
            version: 3,
            name: "raw_samples, rolled up per source without marker rows",
            statements: v3,
        },
        Migration {
            version: 4,
            name: "raw_samples_v4 and rollup rows summed by the sink",
            statements: v4,
        },
        Migration {
            version: 5,
            name: "raw_beacons_v5: one raw row per beacon",
            statements: v5,
        },
    ]
}

/// The per-sample raw tables' columns (v1, v3, v4, and `samples_v5` over v5).
const RAW_COLUMNS: &str = "time DateTime, site String, page String, host String, path String, \
     device UInt8, release String, nav UInt8, metric UInt8, value Float64, rating UInt8, bucket UInt64, \
     source String, beacon_id UInt64";

/// [`RAW_COLUMNS`]' names.
const RAW_COLUMN_NAMES: &str =
    "time, site, page, host, path, device, release, nav, metric, value, rating, bucket, \
     source, beacon_id";

/// The v5 raw table's columns: a beacon, then its samples as parallel arrays.
pub const BEACON_COLUMNS: &str =
    "time DateTime, site String, page String, host String, path String, \
     device UInt8, release String, nav UInt8, source String, beacon_id UInt64, \
     s_metric Array(UInt8), s_value Array(Float64), s_rating Array(UInt8), s_bucket Array(UInt64)";

/// A per-sample raw table: day partitions (UTC day number) make retention a DROP PARTITION; the sort key serves "one site,
/// one metric, a time range".
fn create_raw(l: &Layout, name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {raw}{oc} ({RAW_COLUMNS}) ENGINE = {engine} \
         PARTITION BY intDiv(toUInt32(time), 86400) ORDER BY (site, metric, time)",
        raw = l.local(name),
        oc = l.on_cluster(),
        engine = l.engine("MergeTree", name),
    )
}

/// `samples_all`: a `Merge` table reading the given raw tables as one.
fn create_raw_all(l: &Layout, tables: &[&str]) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{RAW_ALL}{oc} ({RAW_COLUMNS}) ENGINE = Merge('{db}', '^({})$')",
        tables.join("|"),
        db = l.db,
        oc = l.on_cluster(),
    )
}

/// The rollup input's columns: the rollup's dimensions, then one group's sums over a batch (`i_*`, so that no alias
/// in the view shadows an input column: 18.16 rejects that).
pub const ROLLUP_INPUT_COLUMNS: &str = "hour DateTime, r_site String, r_metric UInt8, r_page String, \
     r_device UInt8, r_release String, r_nav UInt8, r_source String, i_samples UInt64, i_good UInt64, i_ni UInt64, \
     i_poor UInt64, i_buckets Array(UInt64), i_counts Array(UInt64), i_max_id UInt64";

/// The v4 view: the sink's summed rows into aggregate states. `samples` is a count state, so each row's count
/// becomes one: `arrayReduce('countStateIf', …)` over n ones is a state counting n, of type
/// `AggregateFunction(count)` on 18.16 and 26.x alike (`countState` over an array would be typed by its argument).
fn rollup_input_select(input: &str) -> String {
    format!(
        "SELECT hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source, \
         countMergeState(arrayReduce('countStateIf', arrayMap(x -> toUInt8(1), range(i_samples)))) AS samples, sumState(i_good) AS good, \
         sumState(i_ni) AS ni, sumState(i_poor) AS poor, sumMapState(i_buckets, i_counts) AS hist, \
         maxState(i_max_id) AS max_id \
         FROM {input} \
         GROUP BY hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source"
    )
}

/// The columns the rollup is written with, in order.
pub const ROLLUP_COLUMNS: &str =
    "hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source, \
     samples, good, ni, poor, hist, max_id";

/// The rollup of raw rows, as the v3 view and the repair compute it: one row per hour, dimensions and source, each
/// holding the largest beacon id it covers, so that a source's marker is the largest id over its rows. The rollup's
/// dimension columns are named `r_*` so that no alias shadows a raw column of the same name (old servers reject
/// that), and there is no subquery (18.16 cannot push blocks through a view over a subquery).
fn rollup_select(raw: &str, filter: &str) -> String {
    format!(
        "SELECT toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour, \
         site AS r_site, metric AS r_metric, page AS r_page, device AS r_device, release AS r_release, \
         nav AS r_nav, source AS r_source, \
         countState() AS samples, sumState(toUInt64(rating = 0)) AS good, sumState(toUInt64(rating = 1)) AS ni, \
         sumState(toUInt64(rating = 2)) AS poor, sumMapState([bucket], [toUInt64(1)]) AS hist, \
         maxState(beacon_id) AS max_id \
         FROM {raw}{filter} \
         GROUP BY hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source"
    )
}

/// The v2 view's rollup, kept for databases that a v2 collector may still insert into: data rows without a source,
/// plus one marker row per source (`r_site` empty) holding the largest beacon id, every raw row read twice through
/// `ARRAY JOIN [0, 1]`.
fn rollup_select_v2(raw: &str) -> String {
    format!(
        "SELECT toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour, \
         if(mark = 1, '', site) AS r_site, if(mark = 1, toUInt8(0), metric) AS r_metric, \
         if(mark = 1, '', page) AS r_page, if(mark = 1, toUInt8(0), device) AS r_device, \
         if(mark = 1, '', release) AS r_release, if(mark = 1, toUInt8(0), nav) AS r_nav, \
         if(mark = 1, source, '') AS r_source, \
         countState() AS samples, sumState(toUInt64(rating = 0)) AS good, sumState(toUInt64(rating = 1)) AS ni, \
         sumState(toUInt64(rating = 2)) AS poor, sumMapState([bucket], [toUInt64(1)]) AS hist, \
         maxState(beacon_id) AS max_id \
         FROM {raw} ARRAY JOIN [0, 1] AS mark \
         GROUP BY hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source"
    )
}

/// Rolls up the raw rows of one source with ids in `(after, through]` (two binds, after the source) that a view
/// missed, from either raw table, as the v3 view would have.
pub fn repair_rollup_sql(cfg: &ClickHouseConfig) -> String {
    repair_sql(
        cfg,
        " WHERE source = ? AND beacon_id > ? AND beacon_id <= ?",
    )
}

fn repair_sql(cfg: &ClickHouseConfig, filter: &str) -> String {
    format!(
        "INSERT INTO {db}.{ROLLUP} ({ROLLUP_COLUMNS}) {select}",
        db = cfg.database,
        select = rollup_select(&format!("{}.{RAW_ALL}", cfg.database), filter),
    )
}

/// The largest id the rollup holds for one source (one bind: the source): over the v3 view's rows of the source and
/// the v2 view's marker rows, which both carry it in `r_source` (the v2 view's data rows have it empty).
pub fn rollup_marker_sql(cfg: &ClickHouseConfig) -> String {
    format!(
        "SELECT toUInt64(maxMerge(max_id)) FROM {}.{ROLLUP} WHERE r_source = ?",
        cfg.database
    )
}

/// [`repair_rollup_sql`] for rows received at or after a time (a fourth bind, Unix seconds): the repair after a failed
/// insert, which knows that every row it has to roll up was received since then, reads the raw partitions of that
/// day on instead of every one.
pub fn repair_rollup_since_sql(cfg: &ClickHouseConfig) -> String {
    repair_sql(
        cfg,
        " WHERE source = ? AND beacon_id > ? AND beacon_id <= ? AND time >= toDateTime(?)",
    )
}

/// [`rollup_marker_sql`] over the hours from one on (a second bind, Unix seconds): the largest id among the rollup
/// rows of those hours, which is the rollup's largest id when every id above what is known to be rolled up was
/// received in or after that hour.
pub fn rollup_marker_since_sql(cfg: &ClickHouseConfig) -> String {
    format!(
        "SELECT toUInt64(maxMerge(max_id)) FROM {}.{ROLLUP} WHERE r_source = ? AND hour >= toDateTime(?)",
        cfg.database
    )
}

/// The physical tables whose partitions retention drops, with their retention in days (0 = forever).
pub fn retained_tables(cfg: &ClickHouseConfig) -> Vec<(String, u32)> {
    let l = Layout {
        db: &cfg.database,
        cluster: cfg.cluster.as_deref(),
    };
    vec![
        (l.local(RAW_V1), cfg.raw_retention_days),
        (l.local(RAW_V3), cfg.raw_retention_days),
        (l.local(RAW_V4), cfg.raw_retention_days),
        (l.local(RAW), cfg.raw_retention_days),
        (l.local(ROLLUP), cfg.rollup_retention_days),
    ]
}

/// `ON CLUSTER …` or nothing, for statements other modules build.
pub fn on_cluster(cfg: &ClickHouseConfig) -> String {
    Layout {
        db: &cfg.database,
        cluster: cfg.cluster.as_deref(),
    }
    .on_cluster()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_variant_uses_replicated_local_tables_behind_distributed_ones() {
        let single = ClickHouseConfig::default();
        let all: Vec<String> = migrations(&single)
            .into_iter()
            .flat_map(|m| m.statements)
            .collect();
        assert!(all.iter().all(|s| (s.contains("IF NOT EXISTS")
            || s.starts_with("DROP TABLE IF EXISTS "))
            && !s.contains("ON CLUSTER")));
        assert!(!all
            .iter()
            .any(|s| s.contains("Replicated") || s.contains("Distributed")));
        for banned in [
            "TTL",
            "CODEC",
            "LowCardinality",
            "Map(",
            "DateTime64",
            "toStartOf",
            "?",
        ] {
            // `arrayMap(` is a function of every version; the banned `Map(` is the type.
            assert!(
                !all.iter()
                    .any(|s| s.replace("arrayMap(", "").contains(banned)),
                "{banned}"
            );
        }

        let cl = ClickHouseConfig {
            cluster: Some("fv".into()),
            ..Default::default()
        };
        let all: Vec<String> = migrations(&cl)
            .into_iter()
            .flat_map(|m| m.statements)
            .collect();
        assert!(all
            .iter()
            .all(|s| s.contains(" ON CLUSTER fv ") || s.ends_with(" ON CLUSTER fv")));
        assert!(all
            .iter()
            .any(|s| s.contains("ENGINE = Distributed(fv, fieldvitals, samples_local, rand())")));
        assert!(all.iter().any(|s| s.contains(
            "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/fieldvitals/rollup_hourly_local', '{replica}')"
        )));
        assert!(all
            .iter()
            .any(|s| s.contains("TO fieldvitals.rollup_hourly_local")
                && s.contains("FROM fieldvitals.samples_local")));
        assert!(create_migrations_table(&cl).contains("ReplicatedReplacingMergeTree"));
    }
}
