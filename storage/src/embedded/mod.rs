//! The embedded store: one SQLite database (WAL mode) in the data directory, zero set-up.
//!
//! Data path: [`EmbeddedStore::spawn_writer`] starts the aggregator task, which records each [`Accepted`] beacon's
//! samples into per-minute sparse histograms held in memory ([`aggregator::MinuteDeltas`]) and, every second, hands
//! the deltas to a dedicated writer thread. The writer merges them into the `hist` table with the `hist_merge` SQL
//! function ([`sql_functions`]) and rolls closed hours up from minutes and closed days up from hours
//! ([`rollup`]), so a 28-day query reads a few day rows per group instead of 40,000 minute rows. The same roll-ups
//! (and late deltas below their watermarks) also keep `hist_page`, the hour and day rows merged over device, release
//! and nav, which queries by page or by nothing read instead of `hist`'s many times as many rows (`query.rs`), and
//! `hist_span`, those rows merged again over aligned runs of hours and days and into every prefix and suffix of days
//! within aligned 32-day blocks ([`spans`]), so a month is a few rows per page. Queries ([`HistogramSource`]) run on their own read connections against WAL snapshots, on two of them at
//! once for ranges of a day or more; summaries read each row's section counts and only the sections that hold the
//! quantiles (`vitals::histogram::Merger::summarize_encoded`).

pub mod aggregator;
pub mod backup;
pub mod pacer;
mod query;
pub mod rollup;
mod schema;
pub mod spans;
pub mod sql_functions;
pub mod view_blob;

use crate::{Accepted, GroupKey, HistQuery, HistogramSource, StoreError};
use aggregator::MinuteDeltas;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vitals::histogram::Summary;
use vitals::{Histogram, Quantile};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "fieldvitals.sqlite3";

/// Most beacons the aggregating task takes from its channel at once.
const RECV_RUN: usize = 16;

/// Called with the duration of every successful store write (for the collector's latency histogram).
pub type WriteObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Called first thing on the writer thread; what it returns is dropped as the thread ends (the collector registers
/// the thread for its CPU priority this way).
pub type ThreadHook = Arc<dyn Fn() -> Box<dyn std::any::Any> + Send + Sync>;

/// Tunables of the embedded store.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// How often in-memory minute deltas are written (the freshness of query answers).
    pub flush_interval: Duration,
    /// Day rows older than this many days are deleted; 0 keeps them forever.
    pub day_retention_days: u32,
    /// Observer of write latencies.
    pub observe_write: Option<WriteObserver>,
    /// Whether queries over a day or more read and merge on two threads.
    pub parallel_queries: bool,
    /// Whether each flush pauses between slices of its work while it is young ([`pacer`]): on for a collector,
    /// whose connection threads share the CPUs (unless the writer runs at idle CPU priority, which yields at once);
    /// off for a bulk load with no one to yield to.
    pub pace_flushes: bool,
    /// Run on the writer thread as it starts.
    pub writer_thread_hook: Option<ThreadHook>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            flush_interval: Duration::from_secs(1),
            day_retention_days: 400,
            observe_write: None,
            parallel_queries: true,
            pace_flushes: true,
            writer_thread_hook: None,
        }
    }
}

/// Health of the writer, shared with `/readyz` and metrics.
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Unix ms of the last successful flush (0 before the first).
    pub last_ok_ms: AtomicI64,
    /// Unix ms since which flushes have been failing (0 when the last one succeeded).
    pub failing_since_ms: AtomicI64,
    /// Flushes that failed.
    pub failed_flushes: AtomicU64,
    /// Samples written.
    pub samples_written: AtomicU64,
    /// Last error, for operators.
    pub last_error: Mutex<Option<String>>,
    /// The largest accepted-beacon id durably stored (the spool may forget everything up to it).
    pub stored_through: AtomicU64,
}

/// The embedded SQLite store.
pub struct EmbeddedStore {
    path: PathBuf,
    options: EmbeddedOptions,
    readers: Mutex<Vec<(Connection, query::Scratch)>>,
    health: Arc<WriterHealth>,
}

/// A running writer: dropping every sender of its channel makes it flush everything and stop.
pub struct WriterHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WriterHandle {
    /// Waits until the writer has flushed everything it received and stopped. Close the channel first.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "embedded writer task failed");
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, and checks it is writable.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Other(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let conn = schema::open_writer(&path)?;
        // The checkpoint the spool replays after: it moved in the same transactions as the data.
        let through = rollup::stored_through(&conn)?;
        drop(conn);
        let health = Arc::new(WriterHealth::default());
        health.stored_through.store(through, Ordering::Relaxed);
        Ok(EmbeddedStore {
            path,
            options,
            readers: Mutex::new(Vec::new()),
            health,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The largest accepted-beacon id whose samples are durably stored: replay a spool after it.
    pub fn stored_through(&self) -> u64 {
        self.health.stored_through.load(Ordering::Relaxed)
    }

    /// How often minute deltas are written.
    pub fn flush_interval(&self) -> Duration {
        self.options.flush_interval
    }

    /// Writer health, for readiness and metrics.
    pub fn health(&self) -> Arc<WriterHealth> {
        self.health.clone()
    }

    /// Starts aggregating what arrives on `rx` and writing it. Returns when the task is running.
    pub fn spawn_writer(
        &self,
        mut rx: mpsc::Receiver<Accepted>,
    ) -> Result<WriterHandle, StoreError> {
        let conn = schema::open_writer(&self.path)?;
        let (batches_tx, batches_rx) = std::sync::mpsc::sync_channel::<MinuteDeltas>(4);
        let health = self.health.clone();
        let options = self.options.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-writer".into())
            .spawn(move || {
                let _registered = options.writer_thread_hook.as_ref().map(|hook| hook());
                writer_thread(conn, batches_rx, health, options)
            })
            .map_err(|e| StoreError::Other(format!("cannot start writer thread: {e}")))?;
        let interval = self.options.flush_interval;
        let task = tokio::spawn(async move {
            let mut deltas = MinuteDeltas::default();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Beacons are taken from the channel in runs, not one `select!` round per beacon.
            let mut got = Vec::with_capacity(RECV_RUN);
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut got, RECV_RUN) => {
                        if n == 0 {
                            break;
                        }
                        for a in got.drain(..) {
                            deltas.record(&a);
                        }
                    }
                    _ = tick.tick() => {
                        if !deltas.is_empty() {
                            // The next second's rows start at this one's size instead of growing (and rehashing)
                            // from empty again.
                            let room = deltas.views_len();
                            let batch = std::mem::replace(&mut deltas, MinuteDeltas::with_capacity(room));
                            let tx = batches_tx.clone();
                            // A full writer queue blocks here, which stops us reading `rx`, which fills the ingest
                            // channel: backpressure reaches the HTTP layer as 503 instead of growing memory.
                            if tokio::task::spawn_blocking(move || tx.send(batch)).await.map_or(true, |r| r.is_err()) {
                                tracing::error!("embedded writer thread is gone");
                                return;
                            }
                        }
                    }
                }
            }
            if !deltas.is_empty() {
                let tx = batches_tx.clone();
                let _ = tokio::task::spawn_blocking(move || tx.send(deltas)).await;
            }
            drop(batches_tx);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
        Ok(WriterHandle { task })
    }

    fn take_reader(&self) -> Result<(Connection, query::Scratch), StoreError> {
        let reader = self.readers.lock().expect("reader pool lock").pop();
        match reader {
            Some(r) => Ok(r),
            None => Ok((schema::open_reader(&self.path)?, query::Scratch::default())),
        }
    }

    fn return_reader(&self, reader: (Connection, query::Scratch)) {
        let mut pool = self.readers.lock().expect("reader pool lock");
        if pool.len() < 8 {
            pool.push(reader);
        }
    }

    /// Runs `f` on one pooled reader, or on two when `q` spans a day or more (see `query::merged_via`).
    fn with_readers<T>(
        &self,
        q: &HistQuery,
        one: impl FnOnce(&Connection, &mut query::Scratch) -> Result<T, StoreError>,
        two: impl FnOnce(
            (&Connection, &mut query::Scratch),
            (&mut Connection, &mut query::Scratch),
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut a = self.take_reader()?;
        let out = if self.options.parallel_queries && q.to_ms - q.from_ms >= PARALLEL_FROM_MS {
            let mut b = match self.take_reader() {
                Ok(b) => b,
                Err(e) => {
                    self.return_reader(a);
                    return Err(e);
                }
            };
            let out = two((&a.0, &mut a.1), (&mut b.0, &mut b.1));
            self.return_reader(b);
            out
        } else {
            one(&a.0, &mut a.1)
        };
        self.return_reader(a);
        out
    }
}

/// Queries over at least this long a range read on two threads: below it, a second thread costs more than it saves.
const PARALLEL_FROM_MS: i64 = crate::time_range::DAY_MS;

#[async_trait::async_trait]
impl HistogramSource for EmbeddedStore {
    async fn histograms(&self, q: &HistQuery) -> Result<Vec<(GroupKey, Histogram)>, StoreError> {
        // SQLite calls block; a query is short, so block_in_place keeps the reader pool simple.
        tokio::task::block_in_place(|| {
            self.with_readers(
                q,
                |conn, scratch| query::histograms_reusing(conn, q, scratch),
                |a, b| query::histograms_parallel(a, b, q),
            )
        })
    }

    async fn summaries(
        &self,
        q: &HistQuery,
        quantiles: &[Quantile],
    ) -> Result<Vec<(GroupKey, Summary)>, StoreError> {
        tokio::task::block_in_place(|| {
            self.with_readers(
                q,
                |conn, scratch| query::summaries_reusing(conn, q, quantiles, scratch),
                |a, b| query::summaries_parallel(a, b, q, quantiles),
            )
        })
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn writer_thread(
    mut conn: Connection,
    batches: std::sync::mpsc::Receiver<MinuteDeltas>,
    health: Arc<WriterHealth>,
    options: EmbeddedOptions,
) {
    let mut pending: Option<MinuteDeltas> = None;
    loop {
        let batch = match pending.take() {
            Some(b) => Some(b),
            None => match batches.recv_timeout(Duration::from_secs(1)) {
                Ok(b) => Some(b),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some(mut batch) = batch {
            // Fold in whatever else is queued, so a slow disk writes fewer, larger transactions.
            while let Ok(more) = batches.try_recv() {
                batch.merge(more);
            }
            let samples = batch.samples();
            let started = std::time::Instant::now();
            // Paced while the writer keeps up (see `pacer`): a flush's burst would otherwise queue the beacons
            // arriving meanwhile.
            let mut pace = if options.pace_flushes {
                pacer::Pacer::start(options.flush_interval * 2 / 5)
            } else {
                pacer::Pacer::flat_out()
            };
            match rollup::write_deltas_paced(&mut conn, &batch, &mut pace) {
                Ok(()) => {
                    if let Some(observe) = &options.observe_write {
                        observe(started.elapsed());
                    }
                    health
                        .stored_through
                        .fetch_max(batch.max_id(), Ordering::Relaxed);
                    health.samples_written.fetch_add(samples, Ordering::Relaxed);
                    health.last_ok_ms.store(now_ms(), Ordering::Relaxed);
                    health.failing_since_ms.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    health.failed_flushes.fetch_add(1, Ordering::Relaxed);
                    let _ = health.failing_since_ms.compare_exchange(
                        0,
                        now_ms(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tracing::error!(error = %e, "embedded store write failed; keeping the batch and retrying");
                    *health.last_error.lock().expect("health lock") = Some(e.to_string());
                    pending = Some(batch);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        if let Err(e) = rollup::roll_up_and_prune(&mut conn, now_ms(), options.day_retention_days) {
            tracing::error!(error = %e, "embedded store roll-up failed; will retry");
        }
    }
    // The channel closed: everything received was written above. Checkpoint so the WAL does not linger.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "final WAL checkpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time_range::{Resolution, DAY_MS, HOUR_MS, MINUTE_MS};
    use crate::{Filters, GroupBy};
    use std::collections::BTreeMap;
    use vitals::{DeviceClass, Metric, NavType};

    fn beacon(site: &str, page: &str, value: f64) -> vitals::Beacon {
        let body = format!(
            r#"{{"v":1,"site":"{site}","url":"https://x.example{page}","metrics":[{{"name":"LCP","value":{value}}}]}}"#
        );
        vitals::decode_beacon(body.as_bytes()).unwrap()
    }

    /// The checkpoint a spool replays after must survive a restart: a reopened store that forgot it would replay,
    /// and count twice, everything the spool still holds.
    #[tokio::test]
    async fn stored_through_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        assert_eq!(store.stored_through(), 0);
        let (tx, rx) = mpsc::channel(16);
        let writer = store.spawn_writer(rx).unwrap();
        for id in [3, 4, 9] {
            let a = Accepted {
                id,
                received_at_ms: now_ms(),
                device: DeviceClass::Phone,
                beacon: beacon("s", "/p", 100.0),
            };
            tx.send(a).await.unwrap();
        }
        drop(tx);
        writer.stopped().await;
        assert_eq!(store.stored_through(), 9);
        drop(store);
        let reopened = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        assert_eq!(reopened.stored_through(), 9);
    }

    /// Rows of one resolution: views in `hist_minute` for minutes, (view, metric) rows in `hist` otherwise.
    fn rows(conn: &Connection, res: Resolution) -> i64 {
        let sql = match res {
            Resolution::Minute => "SELECT count(*) FROM hist_minute WHERE ?1 = 0",
            _ => "SELECT count(*) FROM hist WHERE res = ?1",
        };
        conn.query_row(sql, [res as i64], |r| r.get(0)).unwrap()
    }

    /// Old minute rows are pruned once their hour is rolled up and out of the minute horizon, and the (table-scanning)
    /// DELETE runs again only when the cut has moved by an hour.
    #[test]
    fn prunes_when_the_cut_moves_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_writer(&dir.path().join(DB_FILE)).unwrap();
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
        conn.execute("DELETE FROM meta", []).unwrap();
        let tx = conn.transaction().unwrap();
        rollup::init_watermarks(&tx, t0).unwrap();
        tx.commit().unwrap();
        let write = |conn: &mut Connection, at: i64| {
            let mut d = MinuteDeltas::default();
            d.record(&Accepted {
                id: 1,
                received_at_ms: at,
                device: DeviceClass::Phone,
                beacon: beacon("s", "/p", 100.0),
            });
            rollup::write_deltas(conn, &d).unwrap();
        };
        write(&mut conn, t0 + 5 * MINUTE_MS);
        assert_eq!(rows(&conn, Resolution::Minute), 1);
        // Three days later every hour is rolled up and the minute is far beyond 48 hours: pruned.
        let now = t0 + 3 * DAY_MS;
        rollup::roll_up_and_prune(&mut conn, now, 0).unwrap();
        assert_eq!(rows(&conn, Resolution::Minute), 0);
        assert!(rows(&conn, Resolution::Hour) >= 1);
        // A late minute row below the applied cut stays while the cut has not moved (no scan every second)…
        write(&mut conn, t0 + 6 * MINUTE_MS);
        rollup::roll_up_and_prune(&mut conn, now + 30 * MINUTE_MS, 0).unwrap();
        assert_eq!(rows(&conn, Resolution::Minute), 1);
        // …and goes when it moves by an hour. Its sample reached the hour and day rows all along.
        rollup::roll_up_and_prune(&mut conn, now + 61 * MINUTE_MS, 0).unwrap();
        assert_eq!(rows(&conn, Resolution::Minute), 0);
        let q = HistQuery {
            site: "s".into(),
            metric: Metric::Lcp,
            from_ms: Resolution::Day.floor(t0),
            to_ms: Resolution::Day.floor(t0) + DAY_MS,
            by: GroupBy::default(),
            filters: Filters::default(),
        };
        let got = query::histograms(&conn, &q).unwrap();
        assert_eq!(got[0].1.count(), 2);
    }

    /// One raw sample, as a test records it and as the store must give it back.
    #[derive(Clone)]
    struct Raw {
        t: i64,
        page: &'static str,
        device: DeviceClass,
        release: &'static str,
        nav: NavType,
        metric: Metric,
        value: f64,
    }

    impl Raw {
        fn accepted(&self, id: u64) -> Accepted {
            let release = if self.release.is_empty() {
                String::new()
            } else {
                format!(r#","release":"{}""#, self.release)
            };
            let body = format!(
                r#"{{"v":1,"site":"s","url":"https://x.example{}"{release},"nav":"{}","metrics":[{{"name":"{}","value":{}}}]}}"#,
                self.page,
                self.nav.as_str(),
                self.metric.as_str(),
                self.value
            );
            Accepted {
                id,
                received_at_ms: self.t,
                device: self.device,
                beacon: vitals::decode_beacon(body.as_bytes()).unwrap(),
            }
        }
    }

    /// Random samples at `t`, over a few pages, devices, releases and navigation types.
    fn random_samples(x: &mut u64, t: i64, n: usize) -> Vec<Raw> {
        (0..n)
            .map(|_| {
                *x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = *x >> 33;
                // Mostly LCP, the rest spread over the other metrics: minute rows hold every metric of a view.
                let metric = Metric::ALL[((r / 54 % 8) as usize).saturating_sub(3)];
                let value = ((*x >> 40) % 21_000) as f64 / 7.0;
                Raw {
                    t,
                    page: ["/a", "/b", "/c"][(r % 3) as usize],
                    device: DeviceClass::ALL[(r / 3 % 3) as usize],
                    release: ["", "r1", "r2"][(r / 9 % 3) as usize],
                    nav: [NavType::Navigate, NavType::Reload][(r / 27 % 2) as usize],
                    metric,
                    // Within 3 s, so that day rows hold several values per section (sectioned encoding) while
                    // minute rows stay small (version 1); CLS within 3.
                    value: if metric == Metric::Cls {
                        value / 1000.0
                    } else {
                        value
                    },
                }
            })
            .collect()
    }

    fn write_raw(conn: &mut Connection, samples: &[Raw]) {
        let mut deltas = MinuteDeltas::default();
        for (i, s) in samples.iter().enumerate() {
            deltas.record(&s.accepted(i as u64 + 1));
        }
        rollup::write_deltas(conn, &deltas).unwrap();
    }

    /// Every query shape: by page or nothing (with and without a page filter) can read `hist_page`; the rest cannot.
    fn shapes() -> Vec<(GroupBy, Filters)> {
        let by_page = GroupBy {
            page: true,
            ..GroupBy::default()
        };
        let page_b = Filters {
            page: Some("/b".into()),
            ..Filters::default()
        };
        vec![
            (by_page, Filters::default()),
            (GroupBy::default(), Filters::default()),
            (GroupBy::default(), page_b.clone()),
            (by_page, page_b),
            (
                GroupBy {
                    device: true,
                    ..GroupBy::default()
                },
                Filters::default(),
            ),
            (
                GroupBy {
                    page: true,
                    device: true,
                    release: true,
                    nav: true,
                },
                Filters::default(),
            ),
            (
                by_page,
                Filters {
                    device: Some(DeviceClass::Phone),
                    ..Filters::default()
                },
            ),
            (
                GroupBy::default(),
                Filters {
                    release: Some("r1".into()),
                    ..Filters::default()
                },
            ),
            (
                by_page,
                Filters {
                    nav: Some(NavType::Reload),
                    ..Filters::default()
                },
            ),
        ]
    }

    /// Checks every shape over `[from, to)` (snapped at `now`): the answer through `hist_page` where it applies, and
    /// through `hist` alone, equal the raw samples recorded directly.
    fn assert_exact(conn: &Connection, raw: &[Raw], from: i64, to: i64, now: i64) {
        for metric in Metric::ALL {
            assert_exact_for(conn, raw, from, to, now, metric);
        }
    }

    fn assert_exact_for(
        conn: &Connection,
        raw: &[Raw],
        from: i64,
        to: i64,
        now: i64,
        metric: Metric,
    ) {
        // Ranges reach the store snapped to what is kept at their age (minute rows of old hours are pruned).
        let (from, to) = crate::snap_range(from, to, now);
        // One scratch for every shape, as a pooled reader keeps it: nothing may leak from one query into the next.
        let mut scratch = query::Scratch::default();
        // A second reader, as a query over a day or more uses.
        let mut second = schema::open_reader(Path::new(conn.path().unwrap())).unwrap();
        let mut scratch_b = query::Scratch::default();
        for (by, filters) in shapes() {
            let mut want: BTreeMap<GroupKey, Histogram> = BTreeMap::new();
            let f = &filters;
            for r in raw.iter().filter(|r| {
                r.metric == metric
                    && r.t >= from
                    && r.t < to
                    && f.page.as_deref().is_none_or(|p| p == r.page)
                    && f.device.is_none_or(|d| d == r.device)
                    && f.release.as_deref().is_none_or(|x| x == r.release)
                    && f.nav.is_none_or(|n| n == r.nav)
            }) {
                let key = GroupKey::project(by, r.page, r.device, r.release, r.nav);
                want.entry(key).or_default().record(metric, r.value);
            }
            let q = HistQuery {
                site: "s".into(),
                metric,
                from_ms: from,
                to_ms: to,
                by,
                filters: filters.clone(),
            };
            let read = |page_rows| -> BTreeMap<GroupKey, Histogram> {
                query::histograms_via(conn, &q, page_rows, &mut query::Scratch::default())
                    .unwrap()
                    .into_iter()
                    .collect()
            };
            assert_eq!(read(false), want, "hist, range {from}..{to}, {by:?} {f:?}");
            assert_eq!(
                query::histograms_reusing(conn, &q, &mut scratch)
                    .unwrap()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                want,
                "as served, range {from}..{to}, {by:?} {f:?}"
            );
            if query::page_level(&q) {
                assert_eq!(
                    read(true),
                    want,
                    "hist_page, range {from}..{to}, {by:?} {f:?}"
                );
            }
            assert_eq!(
                query::histograms_parallel((conn, &mut scratch), (&mut second, &mut scratch_b), &q)
                    .unwrap()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                want,
                "on two readers, range {from}..{to}, {by:?} {f:?}"
            );
            // Summaries (what the stats answers read) through every path: the histograms' own, exactly.
            let qs = [0.75, 0.5, 0.01, 0.99, 1.0]
                .map(|x| vitals::Quantile::parse(&x.to_string()).unwrap());
            let want: BTreeMap<GroupKey, Summary> = want
                .iter()
                .map(|(k, h)| (k.clone(), h.summary(metric, &qs)))
                .collect();
            let summaries =
                |page_rows, scratch: &mut query::Scratch| -> BTreeMap<GroupKey, Summary> {
                    query::summaries_via(conn, &q, &qs, page_rows, scratch)
                        .unwrap()
                        .into_iter()
                        .collect()
                };
            assert_eq!(
                summaries(false, &mut scratch),
                want,
                "summaries from hist, {from}..{to}, {by:?} {f:?}"
            );
            if query::page_level(&q) {
                assert_eq!(
                    summaries(true, &mut scratch),
                    want,
                    "summaries from hist_page, {from}..{to}, {by:?} {f:?}"
                );
            }
            // On two readers: as planned (a by-page query splits the pages at the middle one), then split at pages
            // present, absent, below and above all, each of which must split exactly.
            for split in [
                None,
                Some(""),
                Some("/a"),
                Some("/b"),
                Some("/bb"),
                Some("/late"),
                Some("\u{10FFFF}"),
            ] {
                scratch.force_split(&q, split);
                assert_eq!(
                    query::summaries_parallel(
                        (conn, &mut scratch),
                        (&mut second, &mut scratch_b),
                        &q,
                        &qs
                    )
                    .unwrap()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                    want,
                    "summaries on two readers split at {split:?}, range {from}..{to}, {by:?} {f:?}"
                );
            }
            assert_eq!(
                query::summaries_reusing(conn, &q, &qs, &mut scratch)
                    .unwrap()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                want,
                "summaries as served, range {from}..{to}, {by:?} {f:?}"
            );
        }
    }

    /// `hist_page` holds, row for row, the merge of `hist`'s hour and day rows over device, release and nav.
    fn assert_projection_matches_hist(conn: &Connection) {
        let rows = |sql: &str| -> Vec<(String, i64, i64, i64, String, Vec<u8>)> {
            let mut stmt = conn.prepare(sql).unwrap();
            let got = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap();
            got
        };
        let merged = rows(
            "SELECT site, metric, res, start_ms, page, hist_merge_agg(hist) FROM hist WHERE res IN (1, 2)
             GROUP BY site, metric, res, start_ms, page ORDER BY site, metric, res, start_ms, page",
        );
        let projected = rows(
            "SELECT site, metric, res, start_ms, page, hist FROM hist_page WHERE res IN (1, 2)
             ORDER BY site, metric, res, start_ms, page",
        );
        assert!(!projected.is_empty());
        assert_eq!(projected, merged);
        // Partial hour rows: per page, the merge of the hour's minutes before the merge watermark; none for an hour
        // rolled up.
        let (hours_until, _) = rollup::watermarks(conn).unwrap();
        let merged_until = rollup::merged_until(conn).unwrap();
        let partial = rows(&format!(
            "SELECT site, metric, res, start_ms, page, hist FROM hist_page WHERE res = {}
             ORDER BY site, metric, res, start_ms, page",
            rollup::PARTIAL_HOUR_RES
        ));
        let from_minutes = rows(&format!(
            "WITH m(metric) AS (VALUES (0), (1), (2), (3), (4))
             SELECT site, metric, {}, start_ms / {HOUR_MS} * {HOUR_MS} AS h, page,
                    hist_merge_agg(view_pick(hists, metric))
             FROM hist_minute, m
             WHERE view_has(hists, metric) AND start_ms >= {hours_until} AND start_ms < {merged_until}
             GROUP BY site, metric, h, page ORDER BY site, metric, h, page",
            rollup::PARTIAL_HOUR_RES
        ));
        assert_eq!(partial, from_minutes);
    }

    /// Every `hist_span` row is the merge of the `hist_page` rows it spans, and spans of several lengths over hours
    /// and days exist.
    fn assert_spans_match_rows(conn: &Connection) {
        let mut stmt = conn
            .prepare("SELECT site, metric, level, start_ms, page, hist FROM hist_span")
            .unwrap();
        let spans = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        let mut levels = std::collections::BTreeSet::new();
        for (site, metric, level, start, page, blob) in spans {
            let base = if level > 20 {
                Resolution::Day
            } else {
                Resolution::Hour
            };
            let (start, end) = spans::Span::from_code(level).unwrap().covers(start);
            let merged: Vec<u8> = conn
                .query_row(
                    "SELECT hist_merge_agg(hist) FROM hist_page
                     WHERE site = ?1 AND metric = ?2 AND res = ?3 AND start_ms >= ?4 AND start_ms < ?5 AND page = ?6",
                    rusqlite::params![site, metric, base as i64, start, end, page],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                Histogram::decode(&blob).unwrap(),
                Histogram::decode(&merged).unwrap(),
                "span {level} at {start} of {page}"
            );
            levels.insert(level);
        }
        assert!(
            levels.iter().any(|&l| l < 20) && levels.iter().any(|&l| (21..28).contains(&l)),
            "spans over hours and days: {levels:?}"
        );
        assert!(
            levels.contains(&28) && !levels.contains(&18) && !levels.contains(&19),
            "day prefixes, no hour prefixes or suffixes: {levels:?}"
        );
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A writer connection whose watermarks start at `t0` (not at the real now).
    fn writer_at(path: &Path, t0: i64) -> Connection {
        let mut conn = schema::open_writer(path).unwrap();
        conn.execute("DELETE FROM meta", []).unwrap();
        let tx = conn.transaction().unwrap();
        rollup::init_watermarks(&tx, t0).unwrap();
        tx.commit().unwrap();
        conn
    }

    /// Three days of samples written as time passes, with roll-ups, then late deltas (replays) into a rolled-up
    /// hour and a rolled-up day, for pages old and new. Returns the connection, the raw samples and the final now.
    fn three_days(path: &Path, t0: i64) -> (Connection, Vec<Raw>, i64) {
        let mut conn = writer_at(path, t0);
        let mut raw: Vec<Raw> = Vec::new();
        let mut x: u64 = 12345;
        let mut now = t0;
        while now < t0 + 3 * DAY_MS {
            let batch = random_samples(&mut x, now, 4);
            write_raw(&mut conn, &batch);
            raw.extend(batch);
            rollup::roll_up_and_prune(&mut conn, now, 0).unwrap();
            now += 17 * MINUTE_MS;
        }
        let mut late = random_samples(&mut x, t0 + 5 * MINUTE_MS, 5);
        late.extend(random_samples(&mut x, t0 + DAY_MS + 3 * HOUR_MS, 5));
        late.push(Raw {
            page: "/late",
            ..late[0].clone()
        });
        // And into a minute already merged into its hour's partial rows.
        let merged = rollup::merged_until(&conn).unwrap();
        let (hours, _) = rollup::watermarks(&conn).unwrap();
        assert!(merged > hours, "minutes merged: {hours} {merged}");
        late.extend(random_samples(&mut x, merged - MINUTE_MS, 5));
        // And into the first minute not merged, which queries read from minute rows.
        late.extend(random_samples(&mut x, merged, 5));
        write_raw(&mut conn, &late);
        raw.extend(late);
        let (hours, days) = rollup::watermarks(&conn).unwrap();
        assert!(
            hours > t0 + 2 * DAY_MS && days >= Resolution::Day.floor(t0) + 2 * DAY_MS,
            "roll-ups ran: {hours} {days}"
        );
        (conn, raw, now)
    }

    /// Samples over three days, rolled up as time passes, must read back exactly as if recorded directly, for
    /// ranges that cut across minutes, hours and days — including late deltas into already rolled-up hours and days
    /// — in every query shape, through `hist_page` and through `hist` alone.
    #[test]
    fn roll_ups_preserve_every_range_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
        let (conn, raw, now) = three_days(&dir.path().join(DB_FILE), t0);
        assert_projection_matches_hist(&conn);
        assert_spans_match_rows(&conn);
        for version in [1, 2] {
            let rows = count(
                &conn,
                &format!("SELECT count(*) FROM hist_span WHERE unicode(CAST(substr(hist, 1, 1) AS TEXT)) = {version}"),
            );
            assert!(rows > 0, "no span row in encoding version {version}");
        }
        let ranges = [
            (t0, t0 + 3 * DAY_MS),
            (
                t0 + 13 * MINUTE_MS,
                t0 + DAY_MS + 2 * HOUR_MS + 7 * MINUTE_MS,
            ),
            (
                Resolution::Day.floor(t0) + DAY_MS,
                Resolution::Day.floor(t0) + 2 * DAY_MS,
            ),
            (t0 + 3 * HOUR_MS, t0 + 3 * HOUR_MS + MINUTE_MS),
            (t0, t0 + 10 * MINUTE_MS),
            (
                t0 + 2 * DAY_MS + 13 * MINUTE_MS,
                t0 + 2 * DAY_MS + 5 * HOUR_MS + 3 * MINUTE_MS,
            ),
            (now - 3 * HOUR_MS - 13 * MINUTE_MS, now),
            // From the start of the hours not rolled up: their partial rows, then minutes.
            (rollup::watermarks(&conn).unwrap().0, now),
            (rollup::watermarks(&conn).unwrap().0 - HOUR_MS, now),
            (
                rollup::watermarks(&conn).unwrap().0,
                rollup::merged_until(&conn).unwrap(),
            ),
            (
                rollup::watermarks(&conn).unwrap().0,
                rollup::merged_until(&conn).unwrap() - MINUTE_MS,
            ),
        ];
        for (from, to) in ranges {
            assert_exact(&conn, &raw, from, to, now);
        }
    }

    /// Seventy-two days from a block's start, rolled up as time passes: day prefixes and suffixes over two whole
    /// blocks and a third in progress, late deltas into a whole block's day (its suffixes) and the open block's (its
    /// prefixes), then a prune whose cut falls inside the first block. Every row holds what it covers, and ranges
    /// across blocks read back exactly.
    #[test]
    fn day_blocks_keep_exact_prefixes_and_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS; // day 20,000 starts a 32-day block
        let mut conn = writer_at(&dir.path().join(DB_FILE), t0);
        let mut raw: Vec<Raw> = Vec::new();
        let mut x: u64 = 4242;
        let mut now = t0;
        let pass =
            |conn: &mut Connection, raw: &mut Vec<Raw>, x: &mut u64, now: &mut i64, until: i64| {
                while *now < until {
                    let batch = random_samples(x, *now, 2);
                    write_raw(conn, &batch);
                    raw.extend(batch);
                    rollup::roll_up_and_prune(conn, *now, 0).unwrap();
                    *now += 5 * HOUR_MS + 17 * MINUTE_MS;
                }
            };
        let day = |d: i64| Resolution::Day.floor(t0) + d * DAY_MS;
        let ranges = |now: i64| {
            [
                (day(3) + 5 * HOUR_MS, day(60) + 2 * HOUR_MS),
                (day(19), day(47)),
                (day(33), day(63)),
                (day(40), day(65) + 3 * HOUR_MS),
                (t0, now),
            ]
        };
        // Two days after the second block's end: its suffixes are being built, one per roll-up pass.
        pass(&mut conn, &mut raw, &mut x, &mut now, t0 + 66 * DAY_MS);
        let next = spans::suffix_next(&conn)
            .unwrap()
            .expect("suffixes pending");
        assert!(next > day(40) && next < day(62), "{next}");
        let mut late = random_samples(&mut x, t0 + 10 * DAY_MS + 3 * HOUR_MS, 5);
        // Into the block being built: below and above the suffixes built so far.
        late.extend(random_samples(&mut x, day(40) + HOUR_MS, 5));
        late.extend(random_samples(&mut x, day(62), 5));
        late.extend(random_samples(&mut x, t0 + 65 * DAY_MS, 5));
        late.push(Raw {
            page: "/late",
            ..late[0].clone()
        });
        write_raw(&mut conn, &late);
        raw.extend(late);
        assert_spans_match_rows(&conn);
        for (from, to) in ranges(now) {
            assert_exact(&conn, &raw, from, to, now);
        }
        // The rest built.
        pass(&mut conn, &mut raw, &mut x, &mut now, t0 + 72 * DAY_MS);
        assert_eq!(spans::suffix_next(&conn).unwrap(), None);
        assert_eq!(
            count(
                &conn,
                &format!("SELECT count(DISTINCT start_ms) FROM hist_span WHERE level = 29 AND start_ms >= {}", day(32))
            ),
            30
        );
        assert_spans_match_rows(&conn);
        for (from, to) in ranges(now) {
            assert_exact(&conn, &raw, from, to, now);
        }
        // Fifty days of retention: the cut is day 20 or 21, inside the first block.
        rollup::roll_up_and_prune(&mut conn, now, 50).unwrap();
        let cut = rollup::pruned_before(&conn, Resolution::Day).unwrap();
        assert!(cut > day(1) && cut < day(31) && cut % DAY_MS == 0, "{cut}");
        assert_eq!(
            count(
                &conn,
                &format!(
                    "SELECT count(*) FROM hist_span WHERE level = 28 AND start_ms < {}",
                    day(32)
                )
            ),
            0
        );
        assert!(
            count(
                &conn,
                &format!(
                    "SELECT count(*) FROM hist_span WHERE level = 29 AND start_ms < {}",
                    day(32)
                )
            ) > 0
        );
        assert_spans_match_rows(&conn);
        for (from, to) in [
            (cut + 5 * HOUR_MS, day(60)),
            (cut, now),
            (cut + DAY_MS, day(33)),
        ] {
            assert_exact(&conn, &raw, from, to, now);
        }
    }

    /// A version-3 or version-5 store (spans, no prefixes or suffixes) opens as the current version with the spans
    /// it had (a second span backfill would count every sample twice) and prefixes and suffixes built, and answers as
    /// before.
    #[test]
    fn migrates_version_3_and_5_stores_without_rebuilding_spans() {
        for version in [3, 5] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(DB_FILE);
            let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
            let (conn, raw, now) = three_days(&path, t0);
            let spans = count(&conn, "SELECT count(*) FROM hist_span");
            let edges = "SELECT count(*) FROM hist_span WHERE level % 10 IN (8, 9)";
            let edge_rows = count(&conn, edges);
            assert!(edge_rows > 0);
            conn.execute_batch(&format!(
                "DELETE FROM hist_span WHERE level % 10 IN (8, 9); PRAGMA user_version = {version};"
            ))
            .unwrap();
            drop(conn);
            let conn = schema::open_writer(&path).unwrap();
            assert_eq!(count(&conn, "PRAGMA user_version"), 6);
            assert_eq!(count(&conn, "SELECT count(*) FROM hist_span"), spans);
            assert_eq!(count(&conn, edges), edge_rows);
            assert_spans_match_rows(&conn);
            assert_projection_matches_hist(&conn);
            assert_exact(&conn, &raw, t0, now, now);
        }
    }

    /// A corrupt row fails its query, and the reader's scratch (kept for the next query) comes out of it empty: the
    /// next query on it answers exactly.
    #[test]
    fn a_corrupt_row_does_not_leak_into_the_next_query() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
        let mut conn = writer_at(&dir.path().join(DB_FILE), t0);
        let mut x: u64 = 99;
        let raw = random_samples(&mut x, t0 + MINUTE_MS, 50);
        write_raw(&mut conn, &raw);
        let q = HistQuery {
            site: "s".into(),
            metric: Metric::Lcp,
            from_ms: t0,
            to_ms: t0 + HOUR_MS,
            by: GroupBy::default(),
            filters: Filters::default(),
        };
        let mut scratch = query::Scratch::default();
        let want = query::histograms_reusing(&conn, &q, &mut scratch).unwrap();
        // Page "/c" sorts after "/a" and "/b": the group has merged their rows when it meets the corrupt one, whose
        // valid prefix is decoded before the trailing byte is refused. (LCP is code 0; the query reads only LCP.)
        conn.execute(
            "UPDATE hist_minute SET hists = view_of(0, CAST(view_pick(hists, 0) || x'00' AS BLOB))
             WHERE page = '/c' AND view_has(hists, 0)",
            [],
        )
        .unwrap();
        assert!(matches!(
            query::histograms_reusing(&conn, &q, &mut scratch),
            Err(StoreError::Corrupt(_))
        ));
        conn.execute(
            "UPDATE hist_minute SET hists = view_of(0, substr(view_pick(hists, 0), 1, length(view_pick(hists, 0)) - 1))
             WHERE page = '/c' AND view_has(hists, 0)",
            [],
        )
        .unwrap();
        // A view blob that is itself damaged is refused the same way.
        conn.execute(
            "UPDATE hist_minute SET hists = CAST(hists || x'00' AS BLOB) WHERE page = '/c'",
            [],
        )
        .unwrap();
        assert!(matches!(
            query::histograms_reusing(&conn, &q, &mut scratch),
            Err(StoreError::Corrupt(_))
        ));
        conn.execute(
            "UPDATE hist_minute SET hists = substr(hists, 1, length(hists) - 1) WHERE page = '/c'",
            [],
        )
        .unwrap();
        assert_eq!(
            query::histograms_reusing(&conn, &q, &mut scratch).unwrap(),
            want
        );
        let lcp = raw.iter().filter(|r| r.metric == Metric::Lcp).count();
        assert!(lcp > 10 && lcp < 50, "{lcp}");
        assert_eq!(want[0].1.count(), lcp as u64);
    }

    /// A store written by schema version 1 (no `hist_page`) opens, gains `hist_page` from its hour and day rows, and
    /// answers every shape exactly as before.
    #[test]
    fn migrates_a_version_1_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
        let now = t0 + 3 * DAY_MS;
        let (hours_until, days_until) = (Resolution::Hour.floor(now), Resolution::Day.floor(now));
        let mut raw = Vec::new();
        let mut x: u64 = 777;
        for i in 0..400 {
            raw.extend(random_samples(&mut x, t0 + i * 11 * MINUTE_MS, 1));
        }
        // Every third view also reported TTFB: its minute rows (one per metric in version 1) become one view row.
        let more: Vec<Raw> = raw
            .iter()
            .step_by(3)
            .filter(|r| r.metric != Metric::Ttfb)
            .map(|r| Raw {
                metric: Metric::Ttfb,
                ..r.clone()
            })
            .collect();
        raw.extend(more);
        // What version 1 wrote: minute rows, plus hour and day rows below the watermarks.
        // (res, metric, start, page, device, release, nav)
        type V1Key<'a> = (i64, u8, i64, &'a str, u8, &'a str, u8);
        let mut v1_rows: BTreeMap<V1Key<'_>, Histogram> = BTreeMap::new();
        for r in &raw {
            for (res, until) in [
                (Resolution::Minute, i64::MAX),
                (Resolution::Hour, hours_until),
                (Resolution::Day, days_until),
            ] {
                if r.t < until {
                    let key = (
                        res as i64,
                        r.metric.code(),
                        res.floor(r.t),
                        r.page,
                        r.device.code(),
                        r.release,
                        r.nav.code(),
                    );
                    v1_rows.entry(key).or_default().record(r.metric, r.value);
                }
            }
        }
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(schema::SCHEMA_V1).unwrap();
            for ((res, metric, start, page, device, release, nav), h) in &v1_rows {
                conn.execute(
                    "INSERT INTO hist(res, site, metric, start_ms, page, device, release, nav, hist)
                     VALUES (?1, 's', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    rusqlite::params![res, metric, start, page, device, release, nav, h.encode()],
                )
                .unwrap();
            }
            conn.execute_batch(&format!(
                "INSERT INTO meta VALUES ('hours_rolled_until', {hours_until}), ('days_rolled_until', {days_until});
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        // Rows of several metrics of a view become one `hist_minute` row.
        let minute_views = v1_rows
            .keys()
            .filter(|k| k.0 == Resolution::Minute as i64)
            .map(|k| (k.2, k.3, k.4, k.5, k.6))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64;
        assert!(minute_views < v1_rows.keys().filter(|k| k.0 == 0).count() as i64);
        let conn = schema::open_writer(&path).unwrap();
        assert_eq!(count(&conn, "PRAGMA user_version"), 6);
        assert_eq!(rows(&conn, Resolution::Minute), minute_views);
        assert_eq!(count(&conn, "SELECT count(*) FROM hist WHERE res = 0"), 0);
        assert_projection_matches_hist(&conn);
        assert_spans_match_rows(&conn);
        let projected = count(&conn, "SELECT count(*) FROM hist_page");
        for (from, to) in [
            (t0, now),
            (t0 + 13 * MINUTE_MS, t0 + DAY_MS + 2 * HOUR_MS),
            (now - 5 * HOUR_MS - 3 * MINUTE_MS, now),
        ] {
            assert_exact(&conn, &raw, from, to, now);
        }
        drop(conn);
        // Opening again migrates nothing twice.
        let conn = schema::open_writer(&path).unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM hist_page"), projected);
    }

    /// Pruning takes `hist_page`'s hour and day rows with the same cuts as `hist`'s.
    #[test]
    fn pruning_removes_projection_rows() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS;
        let (mut conn, _, now) = three_days(&dir.path().join(DB_FILE), t0);
        let page_rows = |conn: &Connection, res: Resolution| {
            count(
                conn,
                &format!("SELECT count(*) FROM hist_page WHERE res = {}", res as i64),
            )
        };
        let (hours, days) = (
            page_rows(&conn, Resolution::Hour),
            page_rows(&conn, Resolution::Day),
        );
        assert!(hours > 0 && days > 0);
        // Ten days on: minutes go, hours and days stay (the last hours are rolled up now), in both tables.
        rollup::roll_up_and_prune(&mut conn, now + 10 * DAY_MS, 0).unwrap();
        assert_eq!(rows(&conn, Resolution::Minute), 0);
        assert!(page_rows(&conn, Resolution::Hour) >= hours);
        assert_projection_matches_hist(&conn);
        // A hundred days on: every hour is past the 90-day horizon.
        rollup::roll_up_and_prune(&mut conn, now + 100 * DAY_MS, 400).unwrap();
        assert_eq!(page_rows(&conn, Resolution::Hour), 0);
        assert_eq!(rows(&conn, Resolution::Hour), 0);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM hist_span WHERE level < 20"),
            0
        );
        assert!(count(&conn, "SELECT count(*) FROM hist_span WHERE level > 20") > 0);
        assert!(page_rows(&conn, Resolution::Day) >= days);
        assert_projection_matches_hist(&conn);
        // With 30 days of retention every seeded day goes too.
        rollup::roll_up_and_prune(&mut conn, now + 100 * DAY_MS, 30).unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM hist_page"), 0);
        assert_eq!(count(&conn, "SELECT count(*) FROM hist_span"), 0);
        assert_eq!(rows(&conn, Resolution::Day), 0);
    }
}
