//! fieldvitals ClickHouse store: raw samples and hourly rollups on a ClickHouse server, for sites that outgrow
//! one machine.
//!
//! Data path: the collector hands [`storage::Accepted`] beacons (id = its spool's sequence number) to the
//! [`sink`] through a bounded channel. The sink turns every beacon into one raw row (its samples as parallel arrays,
//! each with the `vitals` histogram bucket of its value), batches rows by samples and by age (≤ 1 s), and inserts
//! each batch as RowBinary over HTTP with the official `clickhouse` crate into `raw_beacons_v5`; the stored rows are
//! summed per hour and group across batches ([`rollup_window`], closed when the hour turns or after ≤ 10 s) and
//! those sums inserted into `rollup_input`, whose materialized view turns them into the hourly rollup's states
//! (`sumMap` of (bucket, count) plus rating counts, one row per source and group, whose largest beacon id is the
//! source's marker). Reads go through `samples_all`, one row per sample, which also holds the raw rows of
//! collectors of earlier schema versions ([`schema`]). Failed inserts are retried with exponential backoff
//! (the sink stops reading its channel meanwhile, so backpressure reaches the caller); rows ClickHouse refuses as
//! data are dropped and counted. The sink publishes `stored_through()`, the id up to which everything is stored,
//! from which the spool checkpoints; replays after a crash are deduplicated by reading the largest stored id of
//! this writer's `source` (inserts are atomic per batch and in id order, so what is stored is always a prefix).
//!
//! Query path: [`ClickHouseStore`] implements [`storage::HistogramSource`] ([`query`]): rollups for whole hours,
//! raw rows for the edges, rebuilt into `vitals::Histogram`s, so answers equal the embedded store's.
//!
//! Schema ([`schema`]) is created by idempotent versioned migrations ([`ClickHouseStore::migrate`]); retention
//! drops whole day partitions ([`ClickHouseStore::enforce_retention`]). Everything runs on ClickHouse 18.16 and on
//! modern ClickHouse (checked with chdb by `.ci/chdb.sh` on the statements [`generated_sql`] lists).

pub mod config;
pub mod error;
pub mod query;
pub mod rollup_window;
pub mod schema;
pub mod sink;
pub mod testing;

pub use config::{ClickHouseConfig, ConfigError, Secret, WireCompression};
pub use sink::{spawn_sink, SinkHandle, SinkHealth, SinkMonitor};

use clickhouse::Client;
use std::time::Duration;
use storage::{GroupKey, HistQuery, HistogramSource, StoreError};
use vitals::Histogram;

/// A ClickHouse-backed store: the query side, migrations, retention, and the factory of the sink.
#[derive(Clone)]
pub struct ClickHouseStore {
    cfg: ClickHouseConfig,
    client: Client,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// The HTTP client for a configuration. Validation is off: the crate's validation uses
/// `RowBinaryWithNamesAndTypes` and a `DESCRIBE` setting that ClickHouse 18.16 lacks.
pub fn client(cfg: &ClickHouseConfig) -> Client {
    let mut c = Client::default()
        .with_url(cfg.url.clone())
        .with_user(cfg.user.clone())
        .with_validation(false)
        .with_compression(if cfg.lz4_on_the_wire() {
            clickhouse::Compression::Lz4
        } else {
            clickhouse::Compression::None
        });
    if !cfg.password.is_empty() {
        c = c.with_password(cfg.password.expose().to_string());
    }
    if cfg.cluster.is_some() {
        // Inserts into a Distributed table must reach the shards before they succeed, or the id check after an
        // uncertain insert would not see rows still queued on this server.
        c = c.with_setting("insert_distributed_sync", "1");
    }
    c
}

#[derive(Debug, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct MigrationRecord {
    version: u32,
    name: String,
    applied_at: u32,
}

impl ClickHouseStore {
    /// A store for a validated configuration (nothing is contacted yet).
    pub fn new(cfg: ClickHouseConfig) -> Result<ClickHouseStore, ConfigError> {
        cfg.validate()?;
        let client = client(&cfg);
        Ok(ClickHouseStore { cfg, client })
    }

    /// The configuration.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.cfg
    }

    /// The client (shared connection pool).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.cfg.query_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("clickhouse {what}: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "clickhouse {what}: timed out"
            ))),
        }
    }

    /// Versions recorded in the migrations table (empty when the database or table does not exist yet).
    pub async fn applied_versions(&self) -> Result<Vec<u32>, StoreError> {
        let exists = self
            .timed(
                "checking the migrations table",
                migrations_exist_query(&self.client, &self.cfg).fetch_one::<u64>(),
            )
            .await?;
        if exists == 0 {
            return Ok(vec![]);
        }
        self.timed(
            "reading migrations",
            self.client
                .query(&format!(
                    "SELECT DISTINCT version FROM {}.{} ORDER BY version",
                    self.cfg.database,
                    schema::MIGRATIONS
                ))
                .fetch_all::<u32>(),
        )
        .await
    }

    /// The latest schema version this code knows.
    pub fn latest_version(&self) -> u32 {
        schema::migrations(&self.cfg)
            .last()
            .map_or(0, |m| m.version)
    }

    /// Creates or upgrades the schema. Safe to run twice and concurrently. Returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let applied = self.applied_versions().await?;
        let pending: Vec<_> = schema::migrations(&self.cfg)
            .into_iter()
            .filter(|m| !applied.contains(&m.version))
            .collect();
        if pending.is_empty() {
            return Ok(vec![]);
        }
        self.ddl(&schema::create_database(&self.cfg)).await?;
        self.ddl(&schema::create_migrations_table(&self.cfg))
            .await?;
        let mut done = Vec::new();
        for m in pending {
            for s in &m.statements {
                self.ddl(s).await?;
            }
            let mut insert = self
                .client
                .insert_unescaped::<MigrationRecord>(&format!(
                    "{}.{}",
                    self.cfg.database,
                    schema::MIGRATIONS
                ))
                .await
                .map_err(|e| StoreError::Unavailable(format!("recording migration: {e}")))?;
            let record = MigrationRecord {
                version: m.version,
                name: m.name.to_string(),
                applied_at: chrono::Utc::now().timestamp().clamp(0, u32::MAX as i64) as u32,
            };
            insert
                .write(&record)
                .await
                .map_err(|e| StoreError::Unavailable(format!("recording migration: {e}")))?;
            self.timed("recording migration", insert.end()).await?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "clickhouse migration applied"
            );
            done.push(m.version);
        }
        Ok(done)
    }

    /// Fails unless the schema is at the latest version (for writers without DDL rights).
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let applied = self.applied_versions().await?;
        let latest = self.latest_version();
        if applied.last().copied().unwrap_or(0) < latest {
            return Err(StoreError::Other(format!(
                "clickhouse database {} is at schema version {} but this collector needs {latest}: run `collector migrate` with a user allowed to create tables",
                self.cfg.database,
                applied.last().copied().unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// Runs one idempotent DDL statement. A concurrent runner creating the same object first is success.
    async fn ddl(&self, sql: &str) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match self.timed("migration", self.client.query(sql).execute()).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Unavailable(m))
                    // 57 TABLE_ALREADY_EXISTS, 82 DATABASE_ALREADY_EXISTS: `IF NOT EXISTS` lost a race.
                    if matches!(error::exception_code(&m), Some(57) | Some(82)) =>
                {
                    return Ok(());
                }
                Err(e) if attempt < 2 => {
                    // A concurrent creation can also surface as a transient error on old servers: retry briefly.
                    tracing::warn!(error = %e, "clickhouse migration statement failed, retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The largest beacon id stored for this configuration's source (0 when none).
    pub async fn stored_max_id(&self) -> Result<u64, StoreError> {
        self.timed(
            "reading the stored beacon ids",
            max_id_query(&self.client, &self.cfg).fetch_one::<u64>(),
        )
        .await
    }

    /// Drops the day partitions older than the configured retention (raw rows and rollups separately). Returns how
    /// many partitions were dropped. Needs the right to ALTER the tables (an admin or maintenance user).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StoreError> {
        let today = now_ms.div_euclid(storage::DAY_MS);
        let mut dropped = 0;
        for (table, days) in schema::retained_tables(&self.cfg) {
            if days == 0 {
                continue;
            }
            // Partition ids are UTC day numbers; keep today and the `days - 1` before it in full.
            let keep_from = today - i64::from(days) + 1;
            let (db, name) = table.split_once('.').expect("qualified table name");
            let parts: Vec<String> = self
                .timed(
                    "listing partitions",
                    partitions_query(&self.client, db, name).fetch_all::<String>(),
                )
                .await?;
            for p in parts {
                let Ok(day) = p.parse::<u32>() else {
                    continue;
                };
                if i64::from(day) < keep_from {
                    self.timed(
                        "dropping a partition",
                        drop_partition_query(&self.client, &self.cfg, &table, day).execute(),
                    )
                    .await?;
                    tracing::info!(table, day, "clickhouse retention dropped a day partition");
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Runs [`ClickHouseStore::enforce_retention`] every `every` until the returned task is aborted.
    pub fn spawn_retention(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            // The first run waits a period: start-up is busy enough, and a writer without ALTER rights would
            // only warn.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = store
                    .enforce_retention(chrono::Utc::now().timestamp_millis())
                    .await
                {
                    tracing::warn!(error = %e, "clickhouse retention failed");
                }
            }
        })
    }
}

fn migrations_exist_query(client: &Client, cfg: &ClickHouseConfig) -> clickhouse::query::Query {
    client
        .query("SELECT toUInt64(count()) FROM system.tables WHERE database = ? AND name = ?")
        .bind(cfg.database.as_str())
        .bind(schema::MIGRATIONS)
}

/// The largest beacon id stored for this collector's source, over every raw table (start-up and reconciliation). The
/// v5 table is read directly rather than through `samples_v5`, whose `ARRAY JOIN` the id does not need: by hand on
/// 18.16 with 650,000 beacons, ~7 ms against ~48 ms through the view.
pub(crate) fn max_id_query(client: &Client, cfg: &ClickHouseConfig) -> clickhouse::query::Query {
    read_raw(client.query(&format!(
        "SELECT toUInt64(max(m)) FROM (\
         SELECT max(beacon_id) AS m FROM {db}.{all} WHERE source = ? AND _table != '{view}' \
         UNION ALL SELECT max(beacon_id) AS m FROM {db}.{raw} WHERE source = ?)",
        db = cfg.database,
        all = schema::RAW_ALL,
        view = schema::RAW_V5_SAMPLES,
        raw = schema::RAW,
    )))
    .bind(cfg.source.as_str())
    .bind(cfg.source.as_str())
}

/// The largest id stored for the source above `stored` among rows received at or after `since` (Unix seconds), or 0:
/// the check after a failed insert. Everything at or below `stored` is known to be stored, and since the start's
/// check every row goes to [`schema::RAW`]; a row stored above `stored` belongs to the batches in doubt, whose rows
/// were received at or after `since` (their own receive times, so a clock that stepped back changes nothing). It
/// reads the partitions of `since`'s day on, not the whole table.
pub(crate) fn max_id_since_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    stored: u64,
    since: u32,
) -> clickhouse::query::Query {
    client
        .query(&format!(
            "SELECT toUInt64(max(beacon_id)) FROM {}.{} WHERE source = ? AND beacon_id > ? AND time >= toDateTime(?)",
            cfg.database,
            schema::RAW,
        ))
        .bind(cfg.source.as_str())
        .bind(stored)
        .bind(since)
}

/// The largest id the rollup holds for the source; with `since` (Unix seconds), among the rows of that hour on only.
pub(crate) fn rollup_marker_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    since: Option<u32>,
) -> clickhouse::query::Query {
    match since {
        None => client
            .query(&schema::rollup_marker_sql(cfg))
            .bind(cfg.source.as_str()),
        Some(s) => client
            .query(&schema::rollup_marker_since_sql(cfg))
            .bind(cfg.source.as_str())
            .bind(s / 3600 * 3600),
    }
}

/// Rolls up the source's raw rows with ids in `(rolled, through]`; with `since` (Unix seconds), from the raw
/// partitions of that day on only (every such row was received since then).
pub(crate) fn repair_rollup_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    rolled: u64,
    through: u64,
    since: Option<u32>,
) -> clickhouse::query::Query {
    let sql = match since {
        None => schema::repair_rollup_sql(cfg),
        Some(_) => schema::repair_rollup_since_sql(cfg),
    };
    let q = read_raw(client.query(&sql))
        .bind(cfg.source.as_str())
        .bind(rolled)
        .bind(through);
    match since {
        None => q,
        Some(s) => q.bind(s),
    }
}

/// A query reading [`schema::RAW_ALL`]: with the filter pushed into its views (`samples_v5`), which 18.16 does only
/// when asked (it would read the whole v5 raw table and filter the rows afterwards).
pub(crate) fn read_raw(q: clickhouse::query::Query) -> clickhouse::query::Query {
    q.with_setting("enable_optimize_predicate_expression", "1")
}

fn partitions_query(client: &Client, db: &str, table: &str) -> clickhouse::query::Query {
    client
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
        .bind(db)
        .bind(table)
}

fn drop_partition_query(
    client: &Client,
    cfg: &ClickHouseConfig,
    table: &str,
    day: u32,
) -> clickhouse::query::Query {
    client
        .query(&format!(
            "ALTER TABLE {table}{} DROP PARTITION ?",
            schema::on_cluster(cfg)
        ))
        .bind(day)
}

#[async_trait::async_trait]
impl HistogramSource for ClickHouseStore {
    async fn histograms(&self, q: &HistQuery) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
        query::histograms(&self.client, &self.cfg, q).await
    }
}

/// Every statement the code sends, with sample values bound, in the order a fresh start runs them: the schema, and
/// then every query shape (for the modern-ClickHouse check in `.ci/chdb.sh`). Inserts are RowBinary and appear as
/// their `INSERT … FORMAT RowBinary` header only in comments.
pub fn generated_sql(cfg: &ClickHouseConfig) -> Vec<String> {
    use storage::{Filters, GroupBy, HOUR_MS, MINUTE_MS};
    let client = client(cfg);
    let mut out = vec![
        migrations_exist_query(&client, cfg)
            .sql_display()
            .to_string(),
        schema::create_database(cfg),
        schema::create_migrations_table(cfg),
    ];
    out.extend(
        schema::migrations(cfg)
            .into_iter()
            .flat_map(|m| m.statements),
    );
    out.push(format!(
        "SELECT DISTINCT version FROM {}.{} ORDER BY version",
        cfg.database,
        schema::MIGRATIONS
    ));
    out.push(max_id_query(&client, cfg).sql_display().to_string());
    // The checks' bounded forms with a bound after every sample row `.ci/chdb.sh` inserts (it checks their answers).
    for since in [None, Some(1_800_000_000)] {
        out.push(
            rollup_marker_query(&client, cfg, since)
                .sql_display()
                .to_string(),
        );
        out.push(
            repair_rollup_query(&client, cfg, 10, 20, since)
                .sql_display()
                .to_string(),
        );
    }
    out.push(
        max_id_since_query(&client, cfg, 10, 1_800_000_000)
            .sql_display()
            .to_string(),
    );
    let (db, raw) = schema::retained_tables(cfg)[0]
        .0
        .split_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("qualified");
    out.push(
        partitions_query(&client, &db, &raw)
            .sql_display()
            .to_string(),
    );
    let h = 493_000 * HOUR_MS; // an hour in 2026
    let bys = [
        GroupBy::default(),
        GroupBy {
            page: true,
            device: true,
            release: true,
            nav: true,
        },
        GroupBy {
            page: true,
            device: false,
            release: false,
            nav: false,
        },
    ];
    let filters = [
        Filters::default(),
        Filters {
            page: Some("/it's \"quoted\"\\?".into()),
            device: Some(vitals::DeviceClass::Phone),
            release: Some(String::new()),
            nav: Some(vitals::NavType::BackForwardCache),
        },
    ];
    for by in bys {
        for f in &filters {
            let q = HistQuery {
                site: "demo's?site".into(),
                metric: vitals::Metric::Cls,
                from_ms: h - 7 * MINUTE_MS,
                to_ms: h + 3 * HOUR_MS + 2 * MINUTE_MS,
                by,
                filters: f.clone(),
            };
            for query in query::queries(&client, cfg, &q) {
                out.push(query.sql_display().to_string());
            }
        }
    }
    out.push(
        drop_partition_query(
            &client,
            cfg,
            &format!("{}.{}", cfg.database, schema::RAW),
            20_000,
        )
        .sql_display()
        .to_string(),
    );
    out
}
