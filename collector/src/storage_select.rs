//! Storage selection: the embedded SQLite store (default) or ClickHouse (`--clickhouse-url`).
//!
//! Either way the rest of the collector sees the same three things: the id through which the store holds everything
//! (where the spool replay starts), a writer fed by the replayer's channel, and a [`WriterHealth`] that `/readyz`,
//! the metrics and the spool checkpointer read. In ClickHouse mode a small bridge task copies the sink's monitor
//! into that `WriterHealth` every 100 ms, so readiness ("degraded" while inserts fail, "failing" and 503 after
//! [`crate::routes::health::STORE_FAILING_GRACE_MS`]) and checkpoints work unchanged. The password comes only from
//! `FIELDVITALS_CLICKHOUSE_PASSWORD` or `--clickhouse-password-file`, never from a flag value, and is never logged.

use crate::config::Config;
use crate::store_priority::StorePriority;
use crate::telemetry::metrics::Metrics;
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use storage::embedded::{EmbeddedOptions, EmbeddedStore, WriterHandle, WriterHealth};
use storage::{Accepted, HistogramSource};
use storage_clickhouse::{
    ClickHouseConfig, ClickHouseStore, Secret, SinkHandle, SinkMonitor, WireCompression,
};
use tokio::sync::mpsc;

/// The environment variable holding the ClickHouse password.
pub const PASSWORD_ENV: &str = "FIELDVITALS_CLICKHOUSE_PASSWORD";
/// The environment variable holding the ClickHouse read user's password.
pub const READ_PASSWORD_ENV: &str = "FIELDVITALS_CLICKHOUSE_READ_PASSWORD";
/// The file in the data directory holding this collector's ClickHouse source id (its id sequence's name).
pub const SOURCE_FILE: &str = "clickhouse-source";

/// ClickHouse flags.
#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL (like http://127.0.0.1:8123): store beacons in ClickHouse instead of the embedded store.
    #[arg(long = "clickhouse-url", env = "FIELDVITALS_CLICKHOUSE_URL")]
    pub url: Option<String>,
    /// ClickHouse database.
    #[arg(
        long = "clickhouse-database",
        env = "FIELDVITALS_CLICKHOUSE_DATABASE",
        default_value = "fieldvitals"
    )]
    pub database: String,
    /// ClickHouse user.
    #[arg(
        long = "clickhouse-user",
        env = "FIELDVITALS_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    /// File holding the ClickHouse password (otherwise it is read from FIELDVITALS_CLICKHOUSE_PASSWORD; it is
    /// never accepted as a flag value).
    #[arg(
        long = "clickhouse-password-file",
        env = "FIELDVITALS_CLICKHOUSE_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// ClickHouse user for the query API (a read-only user); by default --clickhouse-user.
    #[arg(
        long = "clickhouse-read-user",
        env = "FIELDVITALS_CLICKHOUSE_READ_USER"
    )]
    pub read_user: Option<String>,
    /// File holding the read user's password (otherwise FIELDVITALS_CLICKHOUSE_READ_PASSWORD).
    #[arg(
        long = "clickhouse-read-password-file",
        env = "FIELDVITALS_CLICKHOUSE_READ_PASSWORD_FILE"
    )]
    pub read_password_file: Option<PathBuf>,
    /// Use the ReplicatedMergeTree + Distributed schema on this ClickHouse cluster.
    #[arg(long = "clickhouse-cluster", env = "FIELDVITALS_CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
    /// Days of raw ClickHouse rows kept (at least 3).
    #[arg(
        long = "clickhouse-raw-retention-days",
        env = "FIELDVITALS_CLICKHOUSE_RAW_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub raw_retention_days: u32,
    /// Days of hourly ClickHouse rollups kept (0 keeps them forever).
    #[arg(
        long = "clickhouse-rollup-retention-days",
        env = "FIELDVITALS_CLICKHOUSE_ROLLUP_RETENTION_DAYS",
        default_value_t = 400
    )]
    pub rollup_retention_days: u32,
    /// Samples per ClickHouse insert at most (one row per beacon holds them), up to 500,000 (one block, so that an
    /// insert is atomic); a batch is also sent when its oldest row is --clickhouse-batch-max-age-ms old.
    #[arg(
        long = "clickhouse-batch-rows",
        env = "FIELDVITALS_CLICKHOUSE_BATCH_ROWS",
        default_value_t = ClickHouseConfig::default().batch_rows
    )]
    pub batch_rows: usize,
    /// Milliseconds a row waits at most before its batch is inserted (1 to 1000): fewer, larger inserts cost
    /// ClickHouse less merging; shorter ones make beacons queryable sooner.
    #[arg(
        long = "clickhouse-batch-max-age-ms",
        env = "FIELDVITALS_CLICKHOUSE_BATCH_MAX_AGE_MS",
        default_value_t = ClickHouseConfig::default().batch_max_age.as_millis() as u64
    )]
    pub batch_max_age_ms: u64,
    /// Longest time, in ms (1 to 60,000), that stored rows are summed in memory before their sums are inserted into
    /// the hourly rollup: longer means fewer rollup rows for ClickHouse to insert and merge. A closed hour's sums go
    /// at once (queries read the current hour from raw rows), so this only delays late rows of a closed hour.
    #[arg(
        long = "clickhouse-rollup-interval-ms",
        env = "FIELDVITALS_CLICKHOUSE_ROLLUP_INTERVAL_MS",
        default_value_t = ClickHouseConfig::default().rollup_interval.as_millis() as u64
    )]
    pub rollup_interval_ms: u64,
    /// Compression between the collector and ClickHouse: auto (LZ4 unless the URL's host is loopback, where it
    /// costs both sides CPU for nothing), lz4 or none.
    #[arg(
        long = "clickhouse-compression",
        env = "FIELDVITALS_CLICKHOUSE_COMPRESSION",
        default_value = "auto",
        value_parser = parse_compression
    )]
    pub compression: WireCompression,
}

fn parse_compression(s: &str) -> Result<WireCompression, String> {
    WireCompression::parse(s).map_err(|e| e.to_string())
}

impl Default for ClickHouseArgs {
    fn default() -> Self {
        ClickHouseArgs {
            url: None,
            database: "fieldvitals".into(),
            user: "default".into(),
            password_file: None,
            read_user: None,
            read_password_file: None,
            cluster: None,
            raw_retention_days: 30,
            rollup_retention_days: 400,
            batch_rows: ClickHouseConfig::default().batch_rows,
            batch_max_age_ms: ClickHouseConfig::default().batch_max_age.as_millis() as u64,
            rollup_interval_ms: ClickHouseConfig::default().rollup_interval.as_millis() as u64,
            compression: WireCompression::Auto,
        }
    }
}

impl ClickHouseArgs {
    /// The store configuration, when ClickHouse is selected. Reads the password and this collector's source id
    /// (created on first use in `data_dir`).
    pub fn store_config(&self, data_dir: &Path) -> anyhow::Result<Option<ClickHouseConfig>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let password = read_password(self.password_file.as_deref(), PASSWORD_ENV)?;
        let cfg = ClickHouseConfig {
            url: url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: Secret::new(password),
            source: source_id(data_dir)?,
            cluster: self.cluster.clone(),
            raw_retention_days: self.raw_retention_days,
            rollup_retention_days: self.rollup_retention_days,
            batch_rows: self.batch_rows,
            batch_max_age: Duration::from_millis(self.batch_max_age_ms),
            rollup_interval: Duration::from_millis(self.rollup_interval_ms),
            compression: self.compression,
            // Room for the batch being filled, one being inserted and one sealed behind it.
            max_backlog_rows: ClickHouseConfig::default()
                .max_backlog_rows
                .max(self.batch_rows.saturating_mul(3)),
            ..ClickHouseConfig::default()
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// The configuration the query API uses: `write` with the read user, when one is set.
    pub fn read_config(&self, write: &ClickHouseConfig) -> anyhow::Result<ClickHouseConfig> {
        let Some(user) = &self.read_user else {
            return Ok(write.clone());
        };
        Ok(ClickHouseConfig {
            user: user.clone(),
            password: Secret::new(read_password(
                self.read_password_file.as_deref(),
                READ_PASSWORD_ENV,
            )?),
            ..write.clone()
        })
    }

    /// Lines for `config show` (the password only as set/unset).
    pub fn show(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "clickhouse_url = {}\n",
            self.url
                .as_ref()
                .map_or("none (embedded store)".to_string(), |u| format!("\"{u}\""))
        );
        out += &format!("clickhouse_database = \"{}\"\n", self.database);
        out += &format!("clickhouse_user = \"{}\"\n", self.user);
        out += &format!(
            "clickhouse_password = \"{}\"\n",
            redacted(self.password_file.as_deref(), PASSWORD_ENV)
        );
        if let Some(u) = &self.read_user {
            out += &format!("clickhouse_read_user = \"{u}\"\n");
            out += &format!(
                "clickhouse_read_password = \"{}\"\n",
                redacted(self.read_password_file.as_deref(), READ_PASSWORD_ENV)
            );
        }
        if let Some(c) = &self.cluster {
            out += &format!("clickhouse_cluster = \"{c}\"\n");
        }
        out += &format!(
            "clickhouse_raw_retention_days = {}\nclickhouse_rollup_retention_days = {}\n",
            self.raw_retention_days, self.rollup_retention_days
        );
        out += &format!(
            "clickhouse_batch_rows = {}\nclickhouse_batch_max_age_ms = {}\n",
            self.batch_rows, self.batch_max_age_ms
        );
        out += &format!(
            "clickhouse_rollup_interval_ms = {}\n",
            self.rollup_interval_ms
        );
        out += &format!(
            "clickhouse_compression = \"{}\"\n",
            self.compression.as_str()
        );
        out
    }
}

/// A password from its file, or else from its environment variable (empty when neither is set). Both set is an
/// error rather than a silent choice.
fn read_password(file: Option<&Path>, env: &str) -> anyhow::Result<String> {
    match (file, std::env::var(env)) {
        (Some(_), Ok(_)) => {
            anyhow::bail!("both a ClickHouse password file and {env} are set: use one")
        }
        (Some(f), Err(_)) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the ClickHouse password file {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string()),
        (None, Ok(p)) => Ok(p),
        (None, Err(_)) => Ok(String::new()),
    }
}

/// How `config show` names a password: never its value, only where it comes from.
fn redacted(file: Option<&Path>, env: &str) -> String {
    if let Some(f) = file {
        format!("<redacted> (from file {})", f.display())
    } else if std::env::var(env).is_ok() {
        format!("<redacted> (from {env})")
    } else {
        "<unset>".to_string()
    }
}

/// This collector's source id: kept in the data directory next to the spool whose sequence numbers it names. A
/// spool that does not exist yet (a new data directory, or a spool deleted by hand) starts its sequence again at 1,
/// so it gets a new source id: its ids can never be mistaken for ones already stored (and skipped as replays).
fn source_id(data_dir: &Path) -> anyhow::Result<String> {
    use std::hash::{BuildHasher, Hasher};
    let path = data_dir.join(SOURCE_FILE);
    let spool_exists =
        std::fs::read_dir(data_dir.join("spool")).is_ok_and(|mut d| d.next().is_some());
    if spool_exists {
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim();
            if !s.is_empty() {
                return Ok(s.to_string());
            }
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    // RandomState is seeded from the OS's randomness: two collectors never pick the same id.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let id = format!(
        "{}{:016x}",
        if host.is_empty() {
            String::new()
        } else {
            format!("{host}-")
        },
        h.finish()
    );
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// The opened store, before its writer starts.
pub struct SelectedStore {
    /// Every accepted beacon with an id at or below this is stored: the spool replays what follows.
    pub stored_through: u64,
    /// The writer's health, read by readiness, metrics and the checkpointer.
    pub health: Arc<WriterHealth>,
    /// What the query engine reads.
    pub source: Arc<dyn HistogramSource>,
    kind: Kind,
}

enum Kind {
    Embedded(Arc<EmbeddedStore>),
    ClickHouse(Box<ClickHouseStore>),
}

/// A running writer.
pub enum StoreWriter {
    /// The embedded store's writer.
    Embedded(WriterHandle),
    /// The ClickHouse sink, the task mirroring its monitor into the health, and the retention task.
    ClickHouse {
        /// The sink.
        sink: SinkHandle,
        /// Mirrors the sink's monitor into the health.
        bridge: tokio::task::JoinHandle<()>,
        /// Drops old partitions hourly.
        retention: tokio::task::JoinHandle<()>,
        /// The sink's monitor.
        monitor: Arc<SinkMonitor>,
        /// The health it mirrors into.
        health: Arc<WriterHealth>,
    },
}

impl StoreWriter {
    /// Waits until everything received is stored and the writer has stopped (close its channel first), for at
    /// most `deadline` in ClickHouse mode (the spool replays the rest on the next start).
    pub async fn stopped(self, deadline: Duration) {
        match self {
            StoreWriter::Embedded(w) => w.stopped().await,
            StoreWriter::ClickHouse {
                sink,
                bridge,
                retention,
                monitor,
                health,
            } => {
                retention.abort();
                if let Err(e) = sink.flush_and_stop(deadline).await {
                    tracing::warn!(error = %e, "clickhouse sink stopped before storing everything");
                }
                bridge.abort();
                mirror(&monitor, &health);
            }
        }
    }
}

fn mirror(m: &SinkMonitor, h: &WriterHealth) {
    let s = m.health();
    h.stored_through
        .fetch_max(s.stored_through, Ordering::Relaxed);
    h.failing_since_ms
        .store(s.failing_since_ms, Ordering::Relaxed);
    h.last_ok_ms.store(s.last_ok_ms, Ordering::Relaxed);
    h.samples_written.store(s.rows_inserted, Ordering::Relaxed);
    h.failed_flushes.store(s.retries, Ordering::Relaxed);
    // Keep the last error visible only while failing: after recovery readiness says "ok" with no stale error.
    *h.last_error.lock().expect("health lock") = if s.failing_since_ms != 0 {
        s.last_error
    } else {
        None
    };
}

impl SelectedStore {
    /// Opens the store the configuration selects.
    /// The embedded store's writer thread registers with `lane` for its CPU priority.
    pub async fn open(
        config: &Config,
        metrics: &Arc<Metrics>,
        lane: &Arc<StorePriority>,
    ) -> anyhow::Result<SelectedStore> {
        match config.clickhouse.store_config(&config.data_dir)? {
            None => {
                let observed = metrics.clone();
                let lane = lane.clone();
                let store = EmbeddedStore::open(
                    &config.data_dir,
                    EmbeddedOptions {
                        day_retention_days: config.retention_days,
                        observe_write: Some(Arc::new(move |d| observed.store_write.observe(d))),
                        // At idle priority the kernel yields the writer's CPU to the request path at once; pausing
                        // as well would only stretch each flush (and its beacons' wait) past the governor's limit.
                        pace_flushes: !lane.lowering(),
                        writer_thread_hook: Some(Arc::new(move || {
                            Box::new(lane.register_current()) as Box<dyn std::any::Any>
                        })),
                        ..EmbeddedOptions::default()
                    },
                )
                .with_context(|| {
                    format!(
                        "cannot open the embedded store in {}",
                        config.data_dir.display()
                    )
                })?;
                let store = Arc::new(store);
                Ok(SelectedStore {
                    stored_through: store.stored_through(),
                    health: store.health(),
                    source: store.clone(),
                    kind: Kind::Embedded(store),
                })
            }
            Some(cfg) => {
                let reader = ClickHouseStore::new(config.clickhouse.read_config(&cfg)?)?;
                let store = ClickHouseStore::new(cfg)?;
                let stored_through = prepare_clickhouse(&store).await?;
                let health = Arc::new(WriterHealth::default());
                health
                    .stored_through
                    .store(stored_through, Ordering::Relaxed);
                Ok(SelectedStore {
                    stored_through,
                    health,
                    source: Arc::new(reader),
                    kind: Kind::ClickHouse(Box::new(store)),
                })
            }
        }
    }

    /// Whether this is the embedded store (whose replay and aggregation run on the store-feed thread).
    pub fn is_embedded(&self) -> bool {
        matches!(self.kind, Kind::Embedded(_))
    }

    /// The embedded store's flush interval (the yardstick of its lag); `None` for ClickHouse, whose sink flushes on
    /// its own terms.
    pub fn flush_interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Embedded(store) => Some(store.flush_interval()),
            Kind::ClickHouse(_) => None,
        }
    }

    /// Starts the writer reading `rx`.
    pub fn spawn_writer(&self, rx: mpsc::Receiver<Accepted>) -> anyhow::Result<StoreWriter> {
        match &self.kind {
            Kind::Embedded(store) => Ok(StoreWriter::Embedded(
                store
                    .spawn_writer(rx)
                    .context("cannot start the store writer")?,
            )),
            Kind::ClickHouse(store) => {
                let sink = storage_clickhouse::spawn_sink(store, rx);
                let monitor = sink.monitor();
                let health = self.health.clone();
                let bridge = {
                    let (monitor, health) = (monitor.clone(), health.clone());
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_millis(100));
                        loop {
                            tick.tick().await;
                            mirror(&monitor, &health);
                        }
                    })
                };
                let retention = store.spawn_retention(Duration::from_secs(3600));
                Ok(StoreWriter::ClickHouse {
                    sink,
                    bridge,
                    retention,
                    monitor,
                    health,
                })
            }
        }
    }
}

/// Brings the schema up to date when the server answers, and reads where the spool replay starts. An unreachable
/// server is not fatal: the collector accepts beacons into its spool and the sink retries; the replay then starts
/// at the spool's beginning and the sink skips what ClickHouse already holds.
async fn prepare_clickhouse(store: &ClickHouseStore) -> anyhow::Result<u64> {
    let cfg = store.config();
    match tokio::time::timeout(Duration::from_secs(10), store.applied_versions()).await {
        Ok(Ok(applied)) => {
            if applied.last().copied().unwrap_or(0) < store.latest_version() {
                let done = store.migrate().await.with_context(|| {
                    format!(
                        "ClickHouse database {} needs migrating and user {} could not: run `collector migrate` with a user allowed to create tables",
                        cfg.database, cfg.user
                    )
                })?;
                tracing::info!(versions = ?done, "clickhouse schema migrated");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, url = %cfg.url, "clickhouse unreachable at start; accepting into the spool and retrying");
            return Ok(0);
        }
        Err(_) => {
            tracing::warn!(url = %cfg.url, "clickhouse did not answer at start; accepting into the spool and retrying");
            return Ok(0);
        }
    }
    match store.stored_max_id().await {
        Ok(m) => {
            tracing::info!(source = %cfg.source, stored_through = m, database = %cfg.database, "clickhouse store ready");
            Ok(m)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored ids; replaying the whole spool (the sink skips what is stored)");
            Ok(0)
        }
    }
}

/// `collector migrate`: creates or upgrades the ClickHouse schema, then enforces retention.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    let Some(cfg) = config.clickhouse.store_config(&config.data_dir)? else {
        anyhow::bail!(
            "migrate applies to ClickHouse (--clickhouse-url); the embedded store creates its schema by itself"
        );
    };
    let store = ClickHouseStore::new(cfg)?;
    let done = store.migrate().await?;
    let dropped = store
        .enforce_retention(chrono::Utc::now().timestamp_millis())
        .await?;
    let cfg = store.config();
    Ok(format!(
        "database {} at schema version {} (applied now: {:?}); retention dropped {} day partitions\n",
        cfg.database,
        store.latest_version(),
        done,
        dropped
    ))
}
