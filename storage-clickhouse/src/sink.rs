//! The batching sink: accepted beacons in, raw rows out to ClickHouse, exactly once.
//!
//! One raw row per beacon. Batches are cut by samples, by age (≤ `batch_max_age`) and at UTC day boundaries, so
//! every insert is one block in one partition — atomic: after any failure the batch is either wholly stored or not
//! at all. Batches are inserted strictly in order and ids grow, so the set of stored ids of this writer's `source`
//! is always a prefix of what it was sent. That makes deduplication one query: before the first insert and before
//! every retry the sink reads the largest stored id and drops rows at or below it (a batch whose insert timed out
//! after the server committed it is then not sent twice; a spool replayed after a crash skips what the previous
//! process stored). Only the first of these reads whole tables; the ones after a failure read from the earliest
//! receive time of the rows in doubt on (`Known` below), so their cost does not grow with the retention.
//!
//! While inserts fail the sink keeps reading its channel until `max_backlog_rows` are held, then stops reading,
//! so the caller's bounded channel fills and its backpressure applies; nothing is dropped while retrying. Rows
//! ClickHouse refuses as data (or that fail client-side checks) are isolated by splitting the batch in halves; a
//! beacon's row that fails alone is dropped, counted and logged, so a bad row never blocks the queue.

use crate::config::ClickHouseConfig;
use crate::error::{classify, ErrorClass};
use crate::rollup_window::{RollupInputRow, RollupWindow, MAX_WINDOW_ROWS};
use crate::schema::{RAW, ROLLUP_INPUT};
use crate::ClickHouseStore;
use clickhouse::Client;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Accepted, DAY_MS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Most samples a beacon holds: one per metric (the wire format refuses repeats).
pub const MAX_SAMPLES: usize = vitals::Metric::ALL.len();

/// A beacon's samples, as the raw table's parallel arrays (`s_metric`, `s_value`, `s_rating`, `s_bucket`). Fixed
/// arrays rather than vectors: a beacon's row allocates nothing for its samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Samples {
    len: u8,
    metric: [u8; MAX_SAMPLES],
    value: [f64; MAX_SAMPLES],
    rating: [u8; MAX_SAMPLES],
    bucket: [u64; MAX_SAMPLES],
}

impl Samples {
    /// Appends a sample (metric code, value, rating code, `vitals` bucket); `false` when already full.
    pub fn push(&mut self, metric: u8, value: f64, rating: u8, bucket: u64) -> bool {
        let i = usize::from(self.len);
        if i == MAX_SAMPLES {
            return false;
        }
        self.metric[i] = metric;
        self.value[i] = value;
        self.rating[i] = rating;
        self.bucket[i] = bucket;
        self.len += 1;
        true
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each sample as (metric code, value, rating code, bucket).
    pub fn iter(&self) -> impl Iterator<Item = (u8, f64, u8, u64)> + '_ {
        (0..self.len()).map(|i| {
            (
                self.metric[i],
                self.value[i],
                self.rating[i],
                self.bucket[i],
            )
        })
    }
}

/// One raw row: a beacon and its samples (the columns of [`crate::schema::RAW`], one row per beacon). Its strings
/// are shared with the rollup window's keys (and `source` by every row).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// Receive time, Unix seconds.
    pub time: u32,
    /// Site.
    pub site: Arc<str>,
    /// Page key.
    pub page: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Path without the query string.
    pub path: Arc<str>,
    /// Device class code.
    pub device: u8,
    /// Release, `""` for none.
    pub release: Arc<str>,
    /// Navigation type code.
    pub nav: u8,
    /// The writer's source.
    pub source: Arc<str>,
    /// The accepted beacon's id.
    pub beacon_id: u64,
    /// Its samples (never empty: a beacon with none stored has no row).
    pub samples: Samples,
}

/// A [`RawRow`] as the insert writes it: borrowed, so that writing a batch allocates nothing.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct RawRowOut<'a> {
    time: u32,
    site: &'a str,
    page: &'a str,
    host: &'a str,
    path: &'a str,
    device: u8,
    release: &'a str,
    nav: u8,
    source: &'a str,
    beacon_id: u64,
    s_metric: &'a [u8],
    s_value: &'a [f64],
    s_rating: &'a [u8],
    s_bucket: &'a [u64],
}

impl RawRow {
    fn out(&self) -> RawRowOut<'_> {
        let n = self.samples.len();
        RawRowOut {
            time: self.time,
            site: &self.site,
            page: &self.page,
            host: &self.host,
            path: &self.path,
            device: self.device,
            release: &self.release,
            nav: self.nav,
            source: &self.source,
            beacon_id: self.beacon_id,
            s_metric: &self.samples.metric[..n],
            s_value: &self.samples.value[..n],
            s_rating: &self.samples.rating[..n],
            s_bucket: &self.samples.bucket[..n],
        }
    }
}

/// A beacon's raw row (`None` when no sample is left), and how many samples were refused: values that are not
/// finite or out of the metric's bounds.
pub fn rows_of(a: &Accepted, source: &Arc<str>) -> (Option<RawRow>, usize) {
    let b = &a.beacon;
    let mut refused = 0;
    let mut samples = Samples::default();
    for s in &b.metrics {
        let ok = s.value.is_finite() && s.value >= 0.0 && s.value <= s.metric.max_value();
        if !ok
            || !samples.push(
                s.metric.code(),
                s.value,
                s.metric.rate(s.value).code(),
                vitals::histogram::bucket_of(s.metric, s.value),
            )
        {
            refused += 1;
        }
    }
    if samples.is_empty() {
        return (None, refused);
    }
    let row = RawRow {
        time: a.received_at_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32,
        site: b.site.as_str().into(),
        page: b.url.page().into(),
        host: b.url.host().into(),
        path: b.url.path().into(),
        device: a.device.code(),
        release: b.release.as_ref().map_or("", |r| r.as_str()).into(),
        nav: b.nav.code(),
        source: source.clone(),
        beacon_id: a.id,
        samples,
    };
    (Some(row), refused)
}

/// What the sink is doing, for `/readyz`, metrics and the spool checkpointer.
#[derive(Debug, Default)]
pub struct SinkMonitor {
    stored_through: AtomicU64,
    failing_since_ms: AtomicI64,
    backlog_rows: AtomicU64,
    backlog_full: AtomicBool,
    retries: AtomicU64,
    rows_inserted: AtomicU64,
    batches_inserted: AtomicU64,
    data_error_rows: AtomicU64,
    duplicate_beacons: AtomicU64,
    rollup_repairs: AtomicU64,
    rollup_rows_inserted: AtomicU64,
    rollup_rows_held: AtomicU64,
    last_ok_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`SinkMonitor`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkHealth {
    /// Inserts are failing or the backlog is full.
    pub degraded: bool,
    /// The id through which every accepted beacon is stored.
    pub stored_through: u64,
    /// Unix ms since which inserts have been failing (0 when the last one succeeded).
    pub failing_since_ms: i64,
    /// Rows held in memory.
    pub backlog_rows: u64,
    /// Insert attempts retried.
    pub retries: u64,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Batches inserted.
    pub batches_inserted: u64,
    /// Rows dropped as bad data.
    pub data_error_rows: u64,
    /// Beacons skipped because they were already stored (replays).
    pub duplicate_beacons: u64,
    /// Times the rollup was found behind the raw table after an uncertain insert and rolled up from raw rows.
    pub rollup_repairs: u64,
    /// Rows inserted into the rollup (each one group's sums over the rollup window).
    pub rollup_rows_inserted: u64,
    /// Rollup rows summed in memory, waiting for the window to close.
    pub rollup_rows_held: u64,
    /// Unix ms of the last successful insert (0 before the first).
    pub last_ok_ms: i64,
    /// The last error.
    pub last_error: Option<String>,
}

impl SinkMonitor {
    /// Inserts are failing (being retried) or the backlog is full.
    pub fn is_degraded(&self) -> bool {
        self.failing_since_ms.load(Ordering::Relaxed) != 0
            || self.backlog_full.load(Ordering::Relaxed)
    }

    /// The highest id such that every accepted beacon with an id at or below it is stored (or was refused as bad
    /// data): the spool may forget everything up to it.
    pub fn stored_through(&self) -> u64 {
        self.stored_through.load(Ordering::Acquire)
    }

    /// A snapshot.
    pub fn health(&self) -> SinkHealth {
        SinkHealth {
            degraded: self.is_degraded(),
            stored_through: self.stored_through(),
            failing_since_ms: self.failing_since_ms.load(Ordering::Relaxed),
            backlog_rows: self.backlog_rows.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rows_inserted: self.rows_inserted.load(Ordering::Relaxed),
            batches_inserted: self.batches_inserted.load(Ordering::Relaxed),
            data_error_rows: self.data_error_rows.load(Ordering::Relaxed),
            duplicate_beacons: self.duplicate_beacons.load(Ordering::Relaxed),
            rollup_repairs: self.rollup_repairs.load(Ordering::Relaxed),
            rollup_rows_inserted: self.rollup_rows_inserted.load(Ordering::Relaxed),
            rollup_rows_held: self.rollup_rows_held.load(Ordering::Relaxed),
            last_ok_ms: self.last_ok_ms.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("monitor lock").clone(),
        }
    }

    fn advance(&self, id: u64) {
        self.stored_through.fetch_max(id, Ordering::AcqRel);
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().expect("monitor lock") = Some(e);
    }
}

/// What was left unsent when the stop deadline passed (the spool replays it on the next start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clickhouse sink stopped with {rows} rows unsent (stored through id {stored_through})")]
pub struct Unflushed {
    /// Rows not stored.
    pub rows: u64,
    /// The id through which everything is stored.
    pub stored_through: u64,
}

/// A running sink.
pub struct SinkHandle {
    monitor: Arc<SinkMonitor>,
    stop: watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<u64>,
}

impl SinkHandle {
    /// The shared monitor.
    pub fn monitor(&self) -> Arc<SinkMonitor> {
        self.monitor.clone()
    }

    /// Stops reading new input once what is already queued in the channel is taken, stores everything held,
    /// retrying until `deadline` from now, and returns. Closing every sender has the same effect without a
    /// deadline.
    pub async fn flush_and_stop(self, deadline: Duration) -> Result<(), Unflushed> {
        let _ = self.stop.send(Some(Instant::now() + deadline));
        let left = match self.task.await {
            Ok(left) => left,
            Err(e) => {
                tracing::error!(error = %e, "clickhouse sink task failed");
                u64::MAX
            }
        };
        if left == 0 {
            Ok(())
        } else {
            Err(Unflushed {
                rows: left,
                stored_through: self.monitor.stored_through(),
            })
        }
    }
}

#[derive(Debug, Default)]
struct Batch {
    /// One per beacon, in id order.
    rows: Vec<RawRow>,
    /// Samples in `rows` (what `batch_rows` and `max_backlog_rows` count).
    samples: usize,
    /// Largest beacon id covered (beacons whose samples were all refused still count).
    max_id: u64,
    day: Option<i64>,
}

impl Batch {
    fn push(&mut self, row: RawRow) {
        self.samples += row.samples.len();
        self.rows.push(row);
    }

    /// Drops the rows of beacons at or below `id` (known to be stored).
    fn drop_through(&mut self, id: u64) {
        self.rows.retain(|r| r.beacon_id > id);
        self.samples = self.rows.iter().map(|r| r.samples.len()).sum();
    }
}

enum Outcome {
    Stored,
    Failed(ErrorClass, String),
}

/// What an attempt gives back: the batch (its rows those it inserted, or tried to), the largest stored id when it
/// verified, the outcome, and whether it was given rollup sums that it did not insert.
type Attempt = Pin<Box<dyn Future<Output = (Batch, Option<u64>, Outcome, bool)> + Send>>;

/// One insert attempt: the batch's raw rows, then `rollup` (sums of earlier, stored batches). When `verify`, first
/// reconciles: drops rows already stored (largest stored id of the source) and rolls up from raw rows whatever the
/// rollup lacks, so the caller passes no rollup rows then.
fn attempt(
    client: Client,
    cfg: ClickHouseConfig,
    mut batch: Batch,
    rollup: RollupWindow,
    verify: Option<Option<Known>>,
    m: Arc<SinkMonitor>,
) -> Attempt {
    Box::pin(async move {
        let mut verified = None;
        if let Some(known) = verify {
            let failed =
                |e: String| Outcome::Failed(ErrorClass::Retry, format!("checking stored ids: {e}"));
            // What may be stored beyond what is known: this batch's rows (a failed attempt may have stored them) and
            // the rows stored since the rollup last caught up.
            let bound = known.map(|k| Bound {
                stored: m.stored_through(),
                rolled: k.rolled,
                since: batch
                    .rows
                    .iter()
                    .map(|r| r.time)
                    .fold(k.unrolled_since, u32::min),
            });
            match tokio::time::timeout(cfg.query_timeout, reconcile(&client, &cfg, &m, bound)).await
            {
                Ok(Ok(m)) => {
                    verified = Some(m);
                    batch.drop_through(m);
                }
                Ok(Err(e)) => return (batch, None, failed(e.to_string()), !rollup.is_empty()),
                Err(_) => return (batch, None, failed("timed out".into()), !rollup.is_empty()),
            }
        }
        if !batch.rows.is_empty() {
            let res =
                tokio::time::timeout(cfg.insert_timeout, insert_raw(&client, &cfg, &batch.rows))
                    .await;
            let failed = match res {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Outcome::Failed(classify(&e), e.to_string())),
                Err(_) => Some(Outcome::Failed(
                    ErrorClass::Retry,
                    "insert timed out".into(),
                )),
            };
            if let Some(failed) = failed {
                return (batch, verified, failed, !rollup.is_empty());
            }
        }
        if !rollup.is_empty() {
            let res =
                tokio::time::timeout(cfg.insert_timeout, insert_rollup(&client, &cfg, &rollup))
                    .await;
            // Never reported as bad data, which would split and resend raw rows already stored: a retry, whose
            // reconciliation finds the rollup behind the raw table and rolls the difference up from raw rows.
            let e = match res {
                Ok(Ok(())) => {
                    m.rollup_rows_inserted
                        .fetch_add(rollup.rows() as u64, Ordering::Relaxed);
                    return (batch, verified, Outcome::Stored, false);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".into(),
            };
            return (
                batch,
                verified,
                Outcome::Failed(
                    ErrorClass::Retry,
                    format!("rollup insert after the raw rows were stored: {e}"),
                ),
                false,
            );
        }
        (batch, verified, Outcome::Stored, false)
    })
}

/// What the sink knows once its first check has run (besides [`SinkMonitor::stored_through`]): later checks (after a
/// failed insert) then read only the partitions that can hold their answer, not whole tables that grow with the
/// retention. The start's check has no such knowledge and reads every raw table and the whole rollup.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Every id at or below it is in the rollup (or was never stored).
    rolled: u64,
    /// The earliest receive time (Unix seconds) of the rows stored above `rolled`; `u32::MAX` when there are none.
    unrolled_since: u32,
}

impl Known {
    /// After a check: everything through `id` is stored and rolled up.
    fn level(id: u64) -> Known {
        Known {
            rolled: id,
            unrolled_since: u32::MAX,
        }
    }
}

/// The bounds of one check: every id through `stored` is stored, every id through `rolled` is rolled up, and every
/// row that may be stored above `rolled` (this attempt's batch included) was received at or after `since`. Receive
/// times are each row's own, so a clock that stepped back between batches cannot hide a row from the check.
#[derive(Debug, Clone, Copy)]
struct Bound {
    stored: u64,
    rolled: u64,
    since: u32,
}

/// After an uncertain insert: the largest id stored for the source, with the rollup brought level with the raw
/// table first (the view may have missed the last block if the server stopped between the two writes). With a
/// [`Bound`], it reads the raw partitions from the bound's day on and the rollup from its hour on.
async fn reconcile(
    client: &Client,
    cfg: &ClickHouseConfig,
    m: &SinkMonitor,
    bound: Option<Bound>,
) -> clickhouse::error::Result<u64> {
    let since = bound.map(|b| b.since);
    let (raw_max, rolled) = match bound {
        None => (
            crate::max_id_query(client, cfg).fetch_one::<u64>().await?,
            crate::rollup_marker_query(client, cfg, None)
                .fetch_one::<u64>()
                .await?,
        ),
        // Nothing stored above what is rolled up, and no row in doubt.
        Some(b) if b.since == u32::MAX => (b.stored, b.stored.max(b.rolled)),
        Some(b) => (
            crate::max_id_since_query(client, cfg, b.stored, b.since)
                .fetch_one::<u64>()
                .await?
                .max(b.stored),
            crate::rollup_marker_query(client, cfg, since)
                .fetch_one::<u64>()
                .await?
                .max(b.rolled),
        ),
    };
    if rolled < raw_max {
        tracing::warn!(source = %cfg.source, rolled, raw_max, "the rollup view missed a block; rolling it up from raw rows");
        crate::repair_rollup_query(client, cfg, rolled, raw_max, since)
            .execute()
            .await?;
        m.rollup_repairs.fetch_add(1, Ordering::Relaxed);
    } else if rolled > raw_max {
        tracing::error!(source = %cfg.source, rolled, raw_max, "the rollup holds ids the raw table lacks; resent rows will be counted twice in hourly rollups");
    }
    Ok(raw_max)
}

/// Inserts raw rows, in the raw table's key order.
async fn insert_raw(
    client: &Client,
    cfg: &ClickHouseConfig,
    rows: &[RawRow],
) -> clickhouse::error::Result<()> {
    let mut ins = client
        .insert_unescaped::<RawRowOut<'static>>(&format!("{}.{RAW}", cfg.database))
        .await?
        .with_timeouts(Some(cfg.insert_timeout), Some(cfg.insert_timeout));
    for i in key_order(rows) {
        ins.write(&rows[i as usize].out()).await?;
    }
    ins.end().await
}

/// Inserts a window's sums as rollup input rows (the view makes them the rollup's states).
async fn insert_rollup(
    client: &Client,
    cfg: &ClickHouseConfig,
    window: &RollupWindow,
) -> clickhouse::error::Result<()> {
    let mut ins = client
        .insert_unescaped::<RollupInputRow<'static>>(&format!("{}.{ROLLUP_INPUT}", cfg.database))
        .await?
        .with_timeouts(Some(cfg.insert_timeout), Some(cfg.insert_timeout));
    for row in window.input_rows(&cfg.source) {
        ins.write(&row).await?;
    }
    ins.end().await
}

/// The rows' indices in the raw table's sort key order (site, time), arrival order within. ClickHouse sorts each
/// inserted block by that key; rows that already come in that order cost the server less (by hand on 18.16, with
/// the per-sample rows of schema v4 sorted by (site, metric, time), about a third less).
///
/// Grouped by site in one pass rather than sorted by comparisons (each comparison would follow two pointers to the
/// site strings). Receive times rise with arrival, so a group is already in time order unless the clock stepped
/// back.
fn key_order(rows: &[RawRow]) -> Vec<u32> {
    let mut groups: std::collections::HashMap<&str, Vec<u32>> = std::collections::HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        groups.entry(&*r.site).or_default().push(i as u32);
    }
    let mut groups: Vec<(&str, Vec<u32>)> = groups.into_iter().collect();
    groups.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut order = Vec::with_capacity(rows.len());
    for (_, mut group) in groups {
        if !group.is_sorted_by_key(|&i| rows[i as usize].time) {
            group.sort_by_key(|&i| rows[i as usize].time);
        }
        order.extend(group);
    }
    order
}

/// Splits a batch of two beacons or more in the middle; `Err` when it holds one (or none).
fn split(mut b: Batch) -> Result<(Batch, Batch), Batch> {
    if b.rows.len() < 2 {
        return Err(b);
    }
    let second = b.rows.split_off(b.rows.len() / 2);
    let first_max = second[0].beacon_id - 1;
    let count = |rows: &[RawRow]| rows.iter().map(|r| r.samples.len()).sum();
    Ok((
        Batch {
            samples: count(&b.rows),
            rows: b.rows,
            max_id: first_max,
            day: b.day,
        },
        Batch {
            samples: count(&second),
            rows: second,
            max_id: b.max_id,
            day: b.day,
        },
    ))
}

/// Seals the current batch, starting the next with a spare row vector if there is one.
fn seal(current: &mut Batch, spare: &mut Vec<Vec<RawRow>>) -> Batch {
    let rows = spare.pop().unwrap_or_default();
    std::mem::replace(
        current,
        Batch {
            rows,
            ..Batch::default()
        },
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Starts the sink reading `rx`. Ids must increase along the channel (the spool's order); an id at or below one
/// already received is a replayed duplicate and is skipped.
pub fn spawn_sink(store: &ClickHouseStore, rx: mpsc::Receiver<Accepted>) -> SinkHandle {
    let monitor = Arc::new(SinkMonitor::default());
    let (stop, stop_rx) = watch::channel(None);
    let task = tokio::spawn(run(
        store.client().clone(),
        store.config().clone(),
        rx,
        stop_rx,
        monitor.clone(),
    ));
    SinkHandle {
        monitor,
        stop,
        task,
    }
}

async fn run(
    client: Client,
    cfg: ClickHouseConfig,
    mut rx: mpsc::Receiver<Accepted>,
    mut stop_rx: watch::Receiver<Option<Instant>>,
    m: Arc<SinkMonitor>,
) -> u64 {
    let mut current = Batch::default();
    // Row vectors of stored batches, emptied, for the next batches: a batch is megabytes of rows, and growing a new
    // one each time copied it into fresh (zeroed) pages at every doubling, ~6 % of the collector's CPU at the
    // maximum rate.
    let mut spare: Vec<Vec<RawRow>> = Vec::new();
    let mut opened_at: Option<Instant> = None;
    let mut sealed: VecDeque<Batch> = VecDeque::new();
    let mut inflight: Option<Attempt> = None;
    let mut inflight_rows = 0usize;
    let mut retry_at: Option<Instant> = None;
    let mut failures: u32 = 0;
    let mut verify = true; // the first insert checks what a previous process already stored
    let mut last_id = 0u64;
    let source: Arc<str> = cfg.source.as_str().into();
    // Everything at or below this id is known to be stored: skipped on intake and removed from held batches.
    let mut skip_through = 0u64;
    let mut input_open = true;
    let mut deadline: Option<Instant> = None;
    // Sums of stored batches not yet in the rollup; and whether sums were dropped or lost since the last
    // reconciliation (which rolls them up from raw rows).
    let mut window = RollupWindow::default();
    let mut rollup_behind = false;
    // Set by the first check; bounds every later one.
    let mut known: Option<Known> = None;
    // The attempt in flight carries the window taken when everything through this id was stored.
    let mut inflight_rolls_through: Option<u64> = None;

    let backlog = |current: &Batch, sealed: &VecDeque<Batch>, inflight_rows: usize| {
        current.samples + sealed.iter().map(|b| b.samples).sum::<usize>() + inflight_rows
    };

    loop {
        if inflight.is_none() && retry_at.is_none_or(|t| Instant::now() >= t) {
            // Stopping (input closed and every batch stored) closes the window too.
            let closing = !input_open && sealed.is_empty() && current.rows.is_empty();
            let due =
                closing || window.is_due(Instant::now(), cfg.rollup_interval, MAX_WINDOW_ROWS);
            if verify && !window.is_empty() {
                // The reconciliation rolls up everything the rollup lacks from raw rows, these sums included.
                window.clear();
                rollup_behind = true;
            }
            let next = match sealed.pop_front() {
                Some(b) => Some(b),
                // A window to close, or sums to roll up from raw rows, with no batch to go before them.
                None if (verify && rollup_behind) || (due && !window.is_empty()) => {
                    Some(Batch::default())
                }
                None => None,
            };
            if let Some(b) = next {
                retry_at = None;
                inflight_rows = b.samples;
                let rollup = if due {
                    std::mem::take(&mut window)
                } else {
                    RollupWindow::default()
                };
                // The window holds the sums of every batch stored since the rollup last caught up.
                inflight_rolls_through = (!rollup.is_empty()).then(|| m.stored_through());
                inflight = Some(attempt(
                    client.clone(),
                    cfg.clone(),
                    b,
                    rollup,
                    verify.then_some(known),
                    m.clone(),
                ));
            }
        }
        m.rollup_rows_held
            .store(window.rows() as u64, Ordering::Relaxed);
        let held = backlog(&current, &sealed, inflight_rows);
        m.backlog_rows.store(held as u64, Ordering::Relaxed);
        let full = held >= cfg.max_backlog_rows;
        m.backlog_full.store(full, Ordering::Relaxed);
        if !input_open
            && current.rows.is_empty()
            && current.max_id == 0
            && sealed.is_empty()
            && inflight.is_none()
            && window.is_empty()
        {
            return 0;
        }
        let seal_at = opened_at.map(|t| t + cfg.batch_max_age);
        let far = Instant::now() + Duration::from_secs(3600);

        tokio::select! {
            biased;
            done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                inflight_rows = 0;
                let (batch, verified, outcome, rollup_unsent) = done;
                let rolls_through = inflight_rolls_through.take();
                if let Some(v) = verified {
                    // The check rolled up everything stored through `v`.
                    known = Some(Known::level(v));
                    rollup_behind = false;
                    m.advance(v);
                    if v > skip_through {
                        skip_through = v;
                        current.drop_through(v);
                        for b in sealed.iter_mut() {
                            b.drop_through(v);
                        }
                    }
                }
                match outcome {
                    Outcome::Stored => {
                        if let Some(k) = known.as_mut() {
                            if let Some(through) = rolls_through {
                                // The window went in: the rollup holds everything stored before this batch.
                                k.rolled = k.rolled.max(through);
                                k.unrolled_since = u32::MAX;
                            }
                            k.unrolled_since = batch.rows.iter().map(|r| r.time).fold(k.unrolled_since, u32::min);
                        }
                        window.add(&batch.rows);
                        if !batch.rows.is_empty() {
                            m.rows_inserted.fetch_add(batch.samples as u64, Ordering::Relaxed);
                            m.batches_inserted.fetch_add(1, Ordering::Relaxed);
                        }
                        m.advance(batch.max_id);
                        if spare.len() < 2 {
                            let mut rows = batch.rows;
                            rows.clear();
                            spare.push(rows);
                        }
                        m.last_ok_ms.store(now_ms(), Ordering::Relaxed);
                        m.failing_since_ms.store(0, Ordering::Relaxed);
                        verify = false;
                        failures = 0;
                    }
                    Outcome::Failed(ErrorClass::Retry, e) => {
                        if failures == 0 {
                            tracing::warn!(error = %e, "clickhouse insert failed, retrying with backoff");
                        }
                        m.set_error(e);
                        m.retries.fetch_add(1, Ordering::Relaxed);
                        let _ = m.failing_since_ms.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
                        // The server may have committed before the failure surfaced: check before resending.
                        verify = true;
                        let delay = cfg.retry_min.saturating_mul(1u32 << failures.min(16)).min(cfg.retry_max);
                        failures = failures.saturating_add(1);
                        retry_at = Some(Instant::now() + delay);
                        sealed.push_front(batch);
                    }
                    Outcome::Failed(ErrorClass::Data, e) => {
                        // Refused as data: nothing of it was stored. Isolate the bad beacon(s) by halving.
                        verify = false;
                        match split(batch) {
                            Ok((a, b)) => {
                                sealed.push_front(b);
                                sealed.push_front(a);
                            }
                            Err(bad) => {
                                tracing::error!(error = %e, beacon_id = bad.rows.first().map_or(0, |r| r.beacon_id), samples = bad.samples, "clickhouse refused a beacon's row as bad data; dropped");
                                m.data_error_rows.fetch_add(bad.samples as u64, Ordering::Relaxed);
                                m.set_error(e);
                                m.advance(bad.max_id);
                            }
                        }
                    }
                }
                if rollup_unsent {
                    // Sums handed to an attempt whose raw insert failed are gone: the next attempt reconciles, which
                    // rolls their ids up from the raw rows.
                    verify = true;
                    rollup_behind = true;
                }
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() && inflight.is_none() => {
                retry_at = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(window.due_at(cfg.rollup_interval).unwrap_or(far)), if inflight.is_none() && retry_at.is_none() && !window.is_empty() => {
                // The loop's top closes it.
            }
            _ = tokio::time::sleep_until(seal_at.unwrap_or(far)), if seal_at.is_some() => {
                sealed.push_back(seal(&mut current, &mut spare));
                opened_at = None;
            }
            got = rx.recv(), if input_open && !full => match got {
                Some(a) => {
                    if a.id <= last_id || a.id <= skip_through {
                        m.duplicate_beacons.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    last_id = a.id;
                    let day = a.received_at_ms.div_euclid(DAY_MS);
                    if current.day.is_some_and(|d| d != day) {
                        // One partition per insert keeps every insert atomic.
                        sealed.push_back(seal(&mut current, &mut spare));
                        opened_at = None;
                    }
                    let (row, refused) = rows_of(&a, &source);
                    if refused > 0 {
                        tracing::warn!(beacon_id = a.id, refused, "samples with impossible values dropped before insert");
                        m.data_error_rows.fetch_add(refused as u64, Ordering::Relaxed);
                    }
                    if let Some(row) = row {
                        current.push(row);
                    }
                    current.max_id = a.id;
                    current.day = Some(day);
                    opened_at.get_or_insert_with(Instant::now);
                    if current.samples >= cfg.batch_rows {
                        sealed.push_back(seal(&mut current, &mut spare));
                        opened_at = None;
                    }
                }
                None => {
                    input_open = false;
                    if current.max_id != 0 {
                        sealed.push_back(seal(&mut current, &mut spare));
                    }
                    opened_at = None;
                }
            },
            _ = stop_rx.changed(), if deadline.is_none() => {
                deadline = *stop_rx.borrow();
                // Take what is already queued, then end (recv returns None once drained).
                rx.close();
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                let left = backlog(&current, &sealed, inflight_rows) as u64;
                if left > 0 {
                    tracing::error!(rows = left, "clickhouse sink stopped before storing everything (the spool replays it)");
                }
                return left;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> RawRow {
        let mut samples = Samples::default();
        samples.push(0, 1.0, 0, 7);
        RawRow {
            time: 0,
            site: "".into(),
            page: "".into(),
            host: "".into(),
            path: "".into(),
            device: 0,
            release: "".into(),
            nav: 0,
            source: "".into(),
            beacon_id: id,
            samples,
        }
    }

    #[test]
    fn samples_hold_one_per_metric_at_most() {
        let mut s = Samples::default();
        for m in 0..MAX_SAMPLES as u8 {
            assert!(s.push(m, f64::from(m), m % 3, u64::from(m) * 10));
        }
        assert!(!s.push(9, 9.0, 0, 90), "full");
        assert_eq!(s.len(), MAX_SAMPLES);
        let out = RawRow {
            samples: s,
            ..row(1)
        };
        let w = out.out();
        assert_eq!(w.s_metric, [0, 1, 2, 3, 4]);
        assert_eq!(w.s_bucket, [0, 10, 20, 30, 40]);
        assert_eq!(w.s_rating, [0, 1, 2, 0, 1]);
        assert_eq!(w.s_value.len(), MAX_SAMPLES);
    }

    #[test]
    fn rows_go_out_in_the_raw_key_order_and_in_arrival_order_within() {
        let r = |id: u64, site: &str, time: u32| RawRow {
            site: site.into(),
            time,
            ..row(id)
        };
        let rows = vec![
            r(1, "b", 10),
            r(2, "a", 10),
            r(3, "b", 10),
            r(4, "a", 9),
            r(5, "b", 11),
            r(6, "a", 11),
        ];
        let sent: Vec<(u64, &str, u32)> = key_order(&rows)
            .into_iter()
            .map(|i| {
                let x = &rows[i as usize];
                (x.beacon_id, &*x.site, x.time)
            })
            .collect();
        assert_eq!(
            sent,
            [
                (4, "a", 9),
                (2, "a", 10),
                (6, "a", 11),
                (1, "b", 10),
                (3, "b", 10),
                (5, "b", 11),
            ]
        );
    }

    #[test]
    fn splits_in_the_middle_keeping_sample_counts_and_ids() {
        let mut b = Batch {
            max_id: 9,
            day: Some(1),
            ..Batch::default()
        };
        for id in [1, 2, 4, 5, 6] {
            b.push(row(id));
        }
        b.rows[0].samples.push(1, 2.0, 0, 3);
        b.samples += 1;
        let (a, b) = split(b).unwrap();
        assert_eq!(
            a.rows.iter().map(|r| r.beacon_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            b.rows.iter().map(|r| r.beacon_id).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(
            (a.max_id, b.max_id),
            (3, 9),
            "id 3 (no row) goes with the first half"
        );
        assert_eq!((a.samples, b.samples), (3, 3));
        assert_eq!((a.day, b.day), (Some(1), Some(1)));
        let mut one = Batch::default();
        one.push(row(7));
        assert!(split(one).is_err());
        assert!(split(Batch::default()).is_err());
    }

    #[test]
    fn dropping_stored_beacons_recounts_samples() {
        let mut b = Batch::default();
        for id in 1..=4 {
            b.push(row(id));
        }
        b.drop_through(2);
        assert_eq!((b.rows.len(), b.samples), (2, 2));
        b.drop_through(9);
        assert_eq!((b.rows.len(), b.samples), (0, 0));
    }
}
