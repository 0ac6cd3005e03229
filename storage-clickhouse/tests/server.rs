//! Integration tests against a real ClickHouse server (`bash .ci/clickhouse-tests.sh` starts one and sets
//! FV_CLICKHOUSE_URL). Each test uses a fresh database. Without the URL the tests skip, except under CI=true, where
//! a missing server is a failure.

use std::time::Duration;
use storage::embedded::{EmbeddedOptions, EmbeddedStore};
use storage::{
    snap_range, Accepted, Filters, GroupBy, GroupKey, HistQuery, HistogramSource, DAY_MS, HOUR_MS,
    MINUTE_MS,
};
use storage_clickhouse::error::{classify, ErrorClass};
use storage_clickhouse::testing::{fresh_db, server_url, PrivateServer};
use storage_clickhouse::{schema, spawn_sink, ClickHouseConfig, ClickHouseStore, Secret};
use tokio::sync::mpsc;
use vitals::wire::{Release, Sample};
use vitals::{Beacon, DeviceClass, Histogram, Metric, NavType, PageUrl};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

struct Users {
    admin: ClickHouseConfig,
    writer: ClickHouseConfig,
    reader: ClickHouseConfig,
}

fn users(url: &str, db: &str) -> Users {
    let base = ClickHouseConfig {
        url: url.to_string(),
        database: db.to_string(),
        batch_rows: 500,
        batch_max_age: Duration::from_millis(200),
        max_backlog_rows: 2_000,
        insert_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..Default::default()
    };
    let with = |user: String, pw: String| ClickHouseConfig {
        user,
        password: Secret::new(pw),
        ..base.clone()
    };
    Users {
        admin: with(
            env_or("FV_CLICKHOUSE_ADMIN_USER", "default"),
            env_or("FV_CLICKHOUSE_ADMIN_PASSWORD", ""),
        ),
        writer: with(
            env_or("FV_CLICKHOUSE_WRITER_USER", "fv_writer"),
            env_or("FV_CLICKHOUSE_WRITER_PASSWORD", "fv-writer"),
        ),
        reader: with(
            env_or("FV_CLICKHOUSE_READER_USER", "fv_reader"),
            env_or("FV_CLICKHOUSE_READER_PASSWORD", "fv-reader"),
        ),
    }
}

/// Users on a fresh database with the schema in place.
async fn migrated(url: &str, test: &str) -> Users {
    let u = users(url, &fresh_db(test));
    ClickHouseStore::new(u.admin.clone())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    u
}

async fn drop_db(admin: &ClickHouseConfig) {
    let store = ClickHouseStore::new(admin.clone()).unwrap();
    let _ = store
        .client()
        .query(&format!("DROP DATABASE IF EXISTS {}", admin.database))
        .execute()
        .await;
}

async fn count(store: &ClickHouseStore, sql: &str) -> u64 {
    store.client().query(sql).fetch_one::<u64>().await.unwrap()
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// `n` beacons over `[start, start + span)`, ids `first_id..`, lognormal-ish values for every metric.
fn beacons(seed: u64, n: usize, first_id: u64, start_ms: i64, span_ms: i64) -> Vec<Accepted> {
    let mut r = Rng(seed | 1);
    let pages = [
        "/",
        "/checkout",
        "/products/123",
        "/products/456",
        "/it's/\"odd\"",
    ];
    let releases = [None, Some("2026.11.1"), Some("2026.11.2")];
    (0..n)
        .map(|i| {
            let mut metrics = Vec::new();
            for m in Metric::ALL {
                if r.unit() < 0.15 {
                    continue; // not every beacon has every metric
                }
                let median = match m {
                    Metric::Cls => 0.08,
                    Metric::Lcp => 2300.0,
                    Metric::Inp => 180.0,
                    Metric::Fcp => 1200.0,
                    Metric::Ttfb => 400.0,
                };
                let z = (r.unit() + r.unit() + r.unit() - 1.5) * 2.0;
                let v = (median * (0.7 * z).exp()).min(m.max_value());
                let v = if m == Metric::Cls {
                    (v * 10_000.0).round() / 10_000.0
                } else {
                    v.round()
                };
                metrics.push(Sample {
                    metric: m,
                    value: v,
                    id: None,
                    attribution: None,
                });
            }
            if metrics.is_empty() {
                metrics.push(Sample {
                    metric: Metric::Lcp,
                    value: 1000.0,
                    id: None,
                    attribution: None,
                });
            }
            let page = r.pick(&pages);
            Accepted {
                id: first_id + i as u64 * 2, // gaps, like a spool's sequence numbers
                received_at_ms: start_ms + (i as i64 * span_ms) / n as i64,
                device: r.pick(&DeviceClass::ALL),
                beacon: Beacon {
                    site: vitals::SiteId::parse(if i % 7 == 0 { "other" } else { "demo" }).unwrap(),
                    url: PageUrl::parse(&format!("https://shop.example{page}?q=1")).unwrap(),
                    release: r.pick(&releases).and_then(Release::parse),
                    nav: r.pick(&NavType::ALL),
                    metrics,
                },
            }
        })
        .collect()
}

fn samples(bs: &[Accepted]) -> u64 {
    bs.iter().map(|a| a.beacon.metrics.len() as u64).sum()
}

/// Sends everything through a sink and waits until it is stored.
async fn store_all(cfg: &ClickHouseConfig, bs: &[Accepted]) -> storage_clickhouse::SinkHealth {
    let store = ClickHouseStore::new(cfg.clone()).unwrap();
    let (tx, rx) = mpsc::channel(256);
    let sink = spawn_sink(&store, rx);
    let monitor = sink.monitor();
    for a in bs {
        tx.send(a.clone()).await.unwrap();
    }
    drop(tx);
    sink.flush_and_stop(Duration::from_secs(30)).await.unwrap();
    monitor.health()
}

fn sorted(mut v: Vec<(GroupKey, Histogram)>) -> Vec<(GroupKey, Histogram)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_concurrently_and_need_ddl_rights() {
    let Some(url) = server_url() else { return };
    let u = users(&url, &fresh_db("migrate"));
    // The insert-only user may not create the schema…
    let writer = ClickHouseStore::new(u.writer.clone()).unwrap();
    assert!(
        writer.migrate().await.is_err(),
        "a user without DDL rights cannot migrate"
    );
    assert!(writer.check_schema().await.is_err());

    let runs = (0..4).map(|_| {
        let s = ClickHouseStore::new(u.admin.clone()).unwrap();
        tokio::spawn(async move { s.migrate().await })
    });
    for r in futures_join(runs).await {
        r.expect("concurrent migration succeeds");
    }
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    assert_eq!(
        admin.migrate().await.unwrap(),
        Vec::<u32>::new(),
        "second run applies nothing"
    );
    assert_eq!(admin.applied_versions().await.unwrap(), vec![1, 2, 3, 4, 5]);
    let tables = count(
        &admin,
        &format!(
            "SELECT toUInt64(count()) FROM system.tables WHERE database = '{}'",
            u.admin.database
        ),
    )
    .await;
    assert_eq!(
        tables, 12,
        "samples, rollup_hourly, its view, raw_samples, its view, raw_samples_v4, rollup_input, its view, \
         raw_beacons_v5, samples_v5, samples_all, schema_migrations"
    );
    // …but once it exists, the writer and the reader find it current.
    writer.check_schema().await.unwrap();
    ClickHouseStore::new(u.reader.clone())
        .unwrap()
        .check_schema()
        .await
        .unwrap();
    drop_db(&u.admin).await;
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_the_embedded_store_for_the_same_beacons() {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "same").await;

    let now = chrono::Utc::now().timestamp_millis();
    // Four days of data up to a minute ago: recent minute edges, hour edges and day edges all get exercised.
    let bs = beacons(42, 6_000, 1_000, now - 4 * DAY_MS, 4 * DAY_MS - MINUTE_MS);
    let health = store_all(&u.writer, &bs).await;
    assert_eq!(health.stored_through, bs.last().unwrap().id);
    assert_eq!(health.data_error_rows, 0);
    assert_eq!(health.retries, 0, "{health:?}");
    assert_eq!(
        health.rollup_repairs, 0,
        "the view rolls up every insert by itself"
    );
    assert!(!health.degraded);

    let reader = ClickHouseStore::new(u.reader.clone()).unwrap();
    let rows = count(
        &reader,
        &format!("SELECT count() FROM {}.samples_all", u.admin.database),
    )
    .await;
    assert_eq!(
        rows,
        samples(&bs),
        "one raw row per sample, no loss, no duplicates"
    );

    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let writer = embedded.spawn_writer(rx).unwrap();
    for a in &bs {
        tx.send(a.clone()).await.unwrap();
    }
    drop(tx);
    writer.stopped().await;

    let bys = [
        GroupBy::default(),
        GroupBy {
            page: true,
            device: true,
            ..Default::default()
        },
        GroupBy {
            release: true,
            nav: true,
            ..Default::default()
        },
        GroupBy {
            page: true,
            device: true,
            release: true,
            nav: true,
        },
    ];
    let filters = [
        Filters::default(),
        Filters {
            device: Some(DeviceClass::Phone),
            ..Default::default()
        },
        Filters {
            page: Some("/products/:id".into()),
            release: Some(String::new()),
            ..Default::default()
        },
        Filters {
            page: Some("/it's/\"odd\"".into()),
            nav: Some(NavType::Reload),
            ..Default::default()
        },
    ];
    let ranges = [
        (now - 28 * DAY_MS, now),
        (now - 90 * MINUTE_MS - 17_000, now - 3 * MINUTE_MS),
        (
            now - 3 * DAY_MS - 5 * HOUR_MS - 123,
            now - 20 * HOUR_MS - 7 * MINUTE_MS,
        ),
        (now - 47 * HOUR_MS, now - 46 * HOUR_MS - 59 * MINUTE_MS),
    ];
    let mut compared = 0;
    let mut nonempty = 0;
    for (from, to) in ranges {
        let (from_ms, to_ms) = snap_range(from, to, now);
        for metric in Metric::ALL {
            for by in bys {
                for f in &filters {
                    let q = HistQuery {
                        site: "demo".into(),
                        metric,
                        from_ms,
                        to_ms,
                        by,
                        filters: f.clone(),
                    };
                    let want = sorted(embedded.histograms(&q).await.unwrap());
                    let got = sorted(reader.histograms(&q).await.unwrap());
                    assert_eq!(got, want, "{q:?}");
                    compared += 1;
                    nonempty += usize::from(!want.is_empty());
                }
            }
        }
    }
    assert!(
        nonempty > compared / 2,
        "the comparison covers real data ({nonempty} of {compared} non-empty)"
    );
    drop_db(&u.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_stored_exactly_once() {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "replay").await;
    let now = chrono::Utc::now().timestamp_millis();
    let bs = beacons(7, 3_000, 1, now - HOUR_MS, HOUR_MS);
    // A first process stores the first 2,000 beacons, then "crashes"; the next one replays from the start
    // (its spool checkpoint lagged) and continues to the end.
    store_all(&u.writer, &bs[..2_000]).await;
    let h = store_all(&u.writer, &bs).await;
    assert_eq!(h.stored_through, bs.last().unwrap().id);
    let reader = ClickHouseStore::new(u.reader.clone()).unwrap();
    let db = &u.admin.database;
    assert_eq!(
        count(&reader, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples(&bs)
    );
    assert_eq!(
        count(
            &reader,
            &format!("SELECT toUInt64(uniqExact(beacon_id, metric)) FROM {db}.samples_all")
        )
        .await,
        samples(&bs)
    );
    // A second source with overlapping ids is a different id sequence: nothing of it is skipped.
    let other = ClickHouseConfig {
        source: "collector-b".into(),
        ..u.writer.clone()
    };
    store_all(&other, &bs[..100]).await;
    assert_eq!(
        count(&reader, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples(&bs) + samples(&bs[..100])
    );
    drop_db(&u.admin).await;
}

/// The rollup per group and hour as a string, from the rollup and from the raw rows: equal when the rollup holds
/// exactly the raw rows (every group's count and histogram; nothing missing, nothing twice).
async fn rollup_and_raw(store: &ClickHouseStore) -> (String, String) {
    let db = &store.config().database;
    let rollup = format!(
        "SELECT toString(groupArray((h, st, p, d, rl, n, m, c, hh))) FROM (SELECT toUInt32(hour) AS h, \
         r_site AS st, r_page AS p, r_device AS d, r_release AS rl, r_nav AS n, r_metric AS m, \
         toUInt64(countMerge(samples)) AS c, sumMapMerge(hist) AS hh FROM {db}.rollup_hourly WHERE r_site != '' \
         GROUP BY h, st, p, d, rl, n, m ORDER BY h, st, p, d, rl, n, m)"
    );
    let raw = format!(
        "SELECT toString(groupArray((h, st, p, d, rl, n, m, c, hh))) FROM (SELECT \
         intDiv(toUInt32(time), 3600) * 3600 AS h, site AS st, page AS p, device AS d, release AS rl, nav AS n, \
         metric AS m, count() AS c, sumMap([bucket], [toUInt64(1)]) AS hh FROM {db}.samples_all \
         GROUP BY h, st, p, d, rl, n, m ORDER BY h, st, p, d, rl, n, m)"
    );
    let get = |sql: String| async move {
        store
            .client()
            .query(&sql)
            .fetch_one::<String>()
            .await
            .unwrap()
    };
    (get(rollup).await, get(raw).await)
}

/// The raw tables hold `samples` samples and the rollup holds each of them exactly once.
async fn assert_stored_and_rolled_up_once(store: &ClickHouseStore, samples: u64) {
    let db = &store.config().database;
    assert_eq!(
        count(store, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples
    );
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''"
            )
        )
        .await,
        samples
    );
    let (r, w) = rollup_and_raw(store).await;
    assert_eq!(r, w);
}

/// A running sink of `cfg` that was sent `bs`; the sender stays open.
async fn sink_with(
    cfg: &ClickHouseConfig,
    bs: &[Accepted],
) -> (mpsc::Sender<Accepted>, storage_clickhouse::SinkHandle) {
    let store = ClickHouseStore::new(cfg.clone()).unwrap();
    let (tx, rx) = mpsc::channel(256);
    let sink = spawn_sink(&store, rx);
    for a in bs {
        tx.send(a.clone()).await.unwrap();
    }
    (tx, sink)
}

/// Waits until `f` holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// The sink sums stored rows in memory and inserts the sums into the rollup when the hour turns (at once, whatever
/// its interval), when its interval passes, and when it stops; a crash loses only those sums, which the next
/// start rolls up from the raw rows, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_window_closes_when_the_hour_turns_or_its_interval_passes_and_a_crash_loses_nothing(
) {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "rollupwindow").await;
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    let db = u.admin.database.clone();
    let rolled =
        format!("SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''");
    let hour = (chrono::Utc::now().timestamp_millis() / HOUR_MS - 5) * HOUR_MS;
    // Four sets: within one hour, the next hour, within that hour again, and after a crash.
    let first = beacons(21, 600, 1, hour, HOUR_MS / 2);
    let turn = beacons(22, 50, 10_001, hour + HOUR_MS, 1_000);
    let late = beacons(23, 300, 20_001, hour + HOUR_MS + 60_000, 60_000);
    let after = beacons(24, 300, 30_001, hour + HOUR_MS + 120_000, 60_000);

    // Held: stored in raw rows, not yet in the rollup (a minute's interval, one hour).
    let cfg = ClickHouseConfig {
        rollup_interval: Duration::from_secs(60),
        ..u.writer.clone()
    };
    let (tx, sink) = sink_with(&cfg, &first).await;
    let monitor = sink.monitor();
    let through = first.last().unwrap().id;
    assert!(eventually(20, async || monitor.stored_through() == through).await);
    assert_eq!(
        count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples(&first)
    );
    assert_eq!(count(&admin, &rolled).await, 0);
    assert!(
        monitor.health().rollup_rows_held > 0,
        "{:?}",
        monitor.health()
    );
    // The hour turns: everything held goes in, long before the interval.
    for a in &turn {
        tx.send(a.clone()).await.unwrap();
    }
    let want = samples(&first) + samples(&turn);
    assert!(eventually(20, async || count(&admin, &rolled).await == want).await);
    assert_eq!(monitor.health().rollup_rows_held, 0);
    drop(tx);
    sink.flush_and_stop(Duration::from_secs(30)).await.unwrap();

    // Its interval passes (one second here), within one hour.
    let short = ClickHouseConfig {
        rollup_interval: Duration::from_secs(1),
        ..cfg.clone()
    };
    let (tx, sink) = sink_with(&short, &late).await;
    let want = want + samples(&late);
    assert!(eventually(20, async || count(&admin, &rolled).await == want).await);
    let (r, w) = rollup_and_raw(&admin).await;
    assert_eq!(r, w);
    drop(tx);
    sink.flush_and_stop(Duration::from_secs(30)).await.unwrap();

    // A crash: the runtime that runs the sink goes away with the sums held (a minute's interval, one hour).
    let (held_cfg, held) = (cfg.clone(), after[..150].to_vec());
    let crashed = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (tx, sink) = sink_with(&held_cfg, &held).await;
            let monitor = sink.monitor();
            let through = held.last().unwrap().id;
            assert!(eventually(20, async || monitor.stored_through() == through).await);
            assert!(monitor.health().rollup_rows_held > 0);
            std::mem::forget((tx, sink));
        });
        drop(rt);
    });
    crashed.join().unwrap();
    assert_eq!(count(&admin, &rolled).await, want);
    // The restart replays the spool from the store's checkpoint: some of the crashed run's beacons again, and more.
    let h = store_all(&cfg, &after[100..]).await;
    assert_eq!(h.rollup_repairs, 1, "{h:?}");
    assert_eq!(h.rows_inserted, samples(&after[150..]), "{h:?}");
    let all = samples(&first) + samples(&turn) + samples(&late) + samples(&after);
    assert_stored_and_rolled_up_once(&admin, all).await;
    drop_db(&u.admin).await;
}

/// The rollup rows go in their own insert, after the raw rows they sum. When it fails (here: the rollup input is
/// gone), the retry's reconciliation finds the rollup behind the raw table and rolls the stored raw rows up itself,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollup_insert_is_rolled_up_from_the_raw_rows() {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "rollupfail").await;
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    let db = u.admin.database.clone();
    for t in ["rollup_input_mv", "rollup_input"] {
        admin
            .client()
            .query(&format!("DROP TABLE {db}.{t}"))
            .execute()
            .await
            .unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let bs = beacons(5, 2_000, 1, now - 3 * HOUR_MS, 2 * HOUR_MS);
    let h = store_all(&u.writer, &bs).await;
    assert_eq!(h.stored_through, bs.last().unwrap().id);
    assert!(h.retries > 0 && h.rollup_repairs > 0, "{h:?}");
    assert_eq!(h.data_error_rows, 0);
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("rollup insert after the raw rows were stored")),
        "{h:?}"
    );
    assert_eq!(
        count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples(&bs)
    );
    for sum in [
        "countMerge(samples)",
        "sumMerge(good) + sumMerge(ni) + sumMerge(poor)",
    ] {
        assert_eq!(
            count(
                &admin,
                &format!("SELECT toUInt64({sum}) FROM {db}.rollup_hourly WHERE r_site != ''")
            )
            .await,
            samples(&bs),
            "{sum}"
        );
    }
    drop_db(&u.admin).await;
}

/// After the start's check, the checks that follow a failed insert read only the partitions that can hold their
/// answer. Planted here, days in the past: a raw row and a rollup marker with an id far above anything stored, which
/// no sink writes. A whole-table check would take that id as stored, drop every later beacon as a duplicate and find
/// the rollup level, so it would repair nothing; the bounded checks do not read those partitions, so every beacon is
/// stored and rolled up exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_after_a_failed_insert_read_only_the_partitions_that_can_hold_their_answer() {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "bounded").await;
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    let db = u.admin.database.clone();
    let source = u.writer.source.clone();
    let now = chrono::Utc::now().timestamp_millis();
    // Each group spans two hours, so its rollup window is due at once.
    let first = beacons(11, 300, 1, now - 3 * HOUR_MS, 2 * HOUR_MS);
    // Ids step by two (as a spool's may): 1..=599, 601..=1199, 1201..=1799.
    let second = beacons(12, 300, 601, now - 2 * HOUR_MS, 2 * HOUR_MS);
    let third = beacons(13, 300, 1201, now - 2 * HOUR_MS, 2 * HOUR_MS);
    let rolled =
        format!("SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''");
    let (tx, sink) = sink_with(&u.writer, &first).await;
    let monitor = sink.monitor();
    let want = samples(&first);
    assert!(eventually(20, async || count(&admin, &rolled).await == want).await);

    let old = (now / 1000 - 3 * 86_400) as u32;
    for sql in [
        format!(
            "INSERT INTO {db}.raw_beacons_v5 (time, site, page, host, path, device, release, nav, source, beacon_id, \
             s_metric, s_value, s_rating, s_bucket) SELECT toDateTime({old}), 'planted', '/', 'planted.example', '/', \
             toUInt8(0), '', toUInt8(0), '{source}', toUInt64(1000000000000), emptyArrayUInt8(), \
             emptyArrayFloat64(), emptyArrayUInt8(), emptyArrayUInt64()"
        ),
        format!(
            "INSERT INTO {db}.rollup_hourly (hour, r_site, r_metric, r_page, r_device, r_release, r_nav, r_source, \
             samples, good, ni, poor, hist, max_id) SELECT toDateTime({hour}), '', toUInt8(0), '', toUInt8(0), '', \
             toUInt8(0), '{source}', countState(), sumState(toUInt64(0)), sumState(toUInt64(0)), \
             sumState(toUInt64(0)), sumMapState([toUInt64(0)], [toUInt64(0)]), maxState(toUInt64(1000000000000))",
            hour = old / 3600 * 3600
        ),
        // From here on every rollup insert fails, and each failure is followed by a check.
        format!("DROP TABLE {db}.rollup_input_mv"),
        format!("DROP TABLE {db}.rollup_input"),
    ] {
        admin.client().query(&sql).execute().await.unwrap();
    }
    for a in &second {
        tx.send(a.clone()).await.unwrap();
    }
    assert!(eventually(20, async || monitor.health().retries > 0).await);
    for a in &third {
        tx.send(a.clone()).await.unwrap();
    }
    drop(tx);
    sink.flush_and_stop(Duration::from_secs(30)).await.unwrap();
    let h = monitor.health();
    assert_eq!(h.stored_through, 1799, "{h:?}");
    assert_eq!(h.duplicate_beacons, 0, "{h:?}");
    assert!(h.rollup_repairs > 0, "{h:?}");
    let all = samples(&first) + samples(&second) + samples(&third);
    assert_stored_and_rolled_up_once(&admin, all).await;
    drop_db(&u.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_dropped_and_counted_without_blocking_the_queue() {
    let Some(url) = server_url() else { return };
    let u = users(&url, &fresh_db("bad"));
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    admin.migrate().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let mut bs = beacons(9, 400, 1, now - MINUTE_MS, MINUTE_MS / 2);
    // Absurd values that slipped past validation.
    bs[10].beacon.metrics[0].value = f64::NAN;
    bs[200].beacon.metrics[0].value = 1e300;
    bs[300].beacon.metrics[0].value = -5.0;
    let h = store_all(&u.writer, &bs).await;
    assert_eq!(h.data_error_rows, 3);
    assert_eq!(
        h.stored_through,
        bs.last().unwrap().id,
        "the queue moved past them"
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count() FROM {}.samples_all", u.admin.database)
        )
        .await,
        samples(&bs) - 3
    );

    // Server-side refusals are classified from the real server's answers.
    #[derive(clickhouse::Row, serde::Serialize)]
    struct Short {
        time: u16, // the column is a 4-byte DateTime: the server runs out of bytes
    }
    let client = admin.client().clone();
    let mut ins = client
        .insert_unescaped::<Short>(&format!("{}.{}", u.admin.database, schema::RAW))
        .await
        .unwrap();
    ins.write(&Short { time: 1 }).await.unwrap();
    let e = ins
        .end()
        .await
        .expect_err("a row of the wrong shape is refused");
    assert_eq!(classify(&e), ErrorClass::Data, "{e}");

    let reader = ClickHouseStore::new(u.reader.clone()).unwrap();
    let e = reader
        .client()
        .query(&format!(
            "INSERT INTO {}.{} (time) VALUES (1)",
            u.admin.database,
            schema::RAW
        ))
        .execute()
        .await
        .expect_err("the read-only user cannot write");
    assert_eq!(
        classify(&e),
        ErrorClass::Retry,
        "a permission problem is not the data's fault: {e}"
    );

    let nowhere = ClickHouseStore::new(ClickHouseConfig {
        url: "http://127.0.0.1:1".into(),
        ..u.writer.clone()
    })
    .unwrap();
    let e = nowhere
        .client()
        .query("SELECT 1")
        .fetch_one::<u8>()
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(classify(&e), ErrorClass::Retry, "{e}");
    drop_db(&u.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_old_day_partitions() {
    let Some(url) = server_url() else { return };
    let u = users(&url, &fresh_db("retention"));
    let cfg = ClickHouseConfig {
        raw_retention_days: 7,
        rollup_retention_days: 30,
        ..u.admin.clone()
    };
    let admin = ClickHouseStore::new(cfg.clone()).unwrap();
    admin.migrate().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let day = |d: i64| now - d * DAY_MS;
    let mut bs = beacons(3, 100, 1, day(40), HOUR_MS); // older than both retentions
    bs.extend(beacons(4, 100, 1_000, day(10), HOUR_MS)); // raw gone, rollup kept
    bs.extend(beacons(5, 100, 2_000, day(1), HOUR_MS)); // all kept
    store_all(&u.writer, &bs).await;
    let db = &cfg.database;
    let before = count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await;
    assert_eq!(before, samples(&bs));

    // The writer may not drop partitions; an admin (or `collector migrate`) runs retention.
    assert!(ClickHouseStore::new(ClickHouseConfig {
        raw_retention_days: 7,
        ..u.writer.clone()
    })
    .unwrap()
    .enforce_retention(now)
    .await
    .is_err());
    let dropped = admin.enforce_retention(now).await.unwrap();
    assert!(dropped >= 3, "dropped {dropped}");
    let raw_left = count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await;
    assert_eq!(raw_left, samples(&bs[200..]));
    let rollup_left = count(
        &admin,
        &format!("SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''"),
    )
    .await;
    assert_eq!(rollup_left, samples(&bs[100..]));
    assert_eq!(admin.enforce_retention(now).await.unwrap(), 0, "idempotent");
    drop_db(&u.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_duplicates_nothing() {
    let Some(_) = server_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateServer::new(dir.path());
    let u = users(&server.url(), "fv_outage");
    let now = chrono::Utc::now().timestamp_millis();
    let bs = beacons(11, 4_000, 1, now - 10 * MINUTE_MS, 10 * MINUTE_MS);

    // The sink starts while the server is down and keeps receiving.
    let store = ClickHouseStore::new(u.writer.clone()).unwrap();
    let (tx, rx) = mpsc::channel(64);
    let sink = spawn_sink(&store, rx);
    let monitor = sink.monitor();
    // The feeder sends a quarter of the beacons per phase: server down, up, down again, up again.
    let (phase_tx, mut phase_rx) = tokio::sync::watch::channel(0usize);
    let feeder = {
        let bs = bs.clone();
        tokio::spawn(async move {
            for (phase, chunk) in bs.chunks(1_000).enumerate() {
                phase_rx.wait_for(|p| *p >= phase).await.unwrap();
                for a in chunk {
                    tx.send(a.clone()).await.unwrap();
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(monitor.is_degraded(), "{:?}", monitor.health());
    assert_eq!(monitor.stored_through(), 0);

    server.start().await;
    ClickHouseStore::new(u.admin.clone())
        .unwrap()
        .migrate()
        .await
        .unwrap();
    phase_tx.send(1).unwrap();
    let t0 = std::time::Instant::now();
    while monitor.stored_through() < bs[1_500].id && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mid = monitor.stored_through();
    assert!(mid >= bs[1_500].id, "{:?}", monitor.health());
    // Stop the server in the middle of ingestion.
    server.stop().await;
    phase_tx.send(2).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(monitor.is_degraded(), "{:?}", monitor.health());
    server.start().await;
    phase_tx.send(3).unwrap();

    feeder.await.unwrap();
    sink.flush_and_stop(Duration::from_secs(60)).await.unwrap();
    let h = monitor.health();
    assert_eq!(h.stored_through, bs.last().unwrap().id);
    assert!(h.retries > 0 && mid < h.stored_through, "{h:?}");
    assert!(!h.degraded);
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    assert_eq!(
        count(&admin, "SELECT count() FROM fv_outage.samples_all").await,
        samples(&bs)
    );
    assert_eq!(
        count(
            &admin,
            "SELECT toUInt64(uniqExact(beacon_id, metric)) FROM fv_outage.samples_all"
        )
        .await,
        samples(&bs)
    );
    assert_eq!(
        count(
            &admin,
            "SELECT toUInt64(countMerge(samples)) FROM fv_outage.rollup_hourly WHERE r_site != ''"
        )
        .await,
        samples(&bs),
        "the rollup saw every row once too"
    );
}

/// `scripts/clickhouse-backup.sh`: a FREEZE backup of a live database, restored into a fresh database on the same
/// server, answers every query exactly as the original does, and takes new inserts through its view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_backup_restores_into_a_fresh_database_with_identical_answers() {
    let Some(_) = server_url() else { return };
    // A private server, because the script works on the server's files (`--clickhouse-path`).
    let server_dir = tempfile::tempdir().unwrap();
    let server = PrivateServer::new(server_dir.path());
    server.start().await;
    let url = server.url();
    let src = migrated(&url, "backup_src").await;
    let now = chrono::Utc::now().timestamp_millis();
    let bs = beacons(7, 3_000, 1, now - 3 * DAY_MS, 3 * DAY_MS - MINUTE_MS);
    store_all(&src.writer, &bs).await;

    let backup = tempfile::tempdir().unwrap();
    let dst_db = fresh_db("backup_dst");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/clickhouse-backup.sh"
    );
    let ch_path = server_dir.path().join("data");
    for (verb, db, dir_flag) in [
        ("backup", src.admin.database.as_str(), "--to"),
        ("restore", dst_db.as_str(), "--from"),
    ] {
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(verb)
            .args(["--url", &url, "--database", db, dir_flag])
            .arg(backup.path().join("b"))
            .arg("--clickhouse-path")
            .arg(&ch_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let dst = users(&url, &dst_db);
    let (a, b) = (
        ClickHouseStore::new(src.reader.clone()).unwrap(),
        ClickHouseStore::new(dst.reader.clone()).unwrap(),
    );
    assert_eq!(
        count(&b, &format!("SELECT count() FROM {dst_db}.samples_all")).await,
        samples(&bs)
    );
    let bys = [
        GroupBy::default(),
        GroupBy {
            page: true,
            device: true,
            release: true,
            nav: true,
        },
    ];
    let mut nonempty = 0;
    for (from, to) in [
        (now - 28 * DAY_MS, now),
        (now - DAY_MS - 7 * MINUTE_MS, now),
    ] {
        let (from_ms, to_ms) = snap_range(from, to, now);
        for metric in Metric::ALL {
            for by in bys {
                let q = HistQuery {
                    site: "demo".into(),
                    metric,
                    from_ms,
                    to_ms,
                    by,
                    filters: Filters::default(),
                };
                let want = sorted(a.histograms(&q).await.unwrap());
                assert_eq!(sorted(b.histograms(&q).await.unwrap()), want, "{q:?}");
                nonempty += usize::from(!want.is_empty());
            }
        }
    }
    assert!(nonempty >= 10, "the comparison covers real data");

    // The restored view is live: new beacons reach the restored rollup.
    let more = beacons(8, 50, 10_000, now - HOUR_MS, HOUR_MS - MINUTE_MS);
    store_all(&dst.writer, &more).await;
    assert_eq!(
        count(
            &b,
            &format!("SELECT toUInt64(countMerge(samples)) FROM {dst_db}.rollup_hourly WHERE r_site != ''")
        )
        .await,
        samples(&bs) + samples(&more)
    );
    // And its raw rows are read from the restored database's tables, not the source's.
    assert_eq!(
        count(&b, &format!("SELECT count() FROM {dst_db}.samples_all")).await,
        samples(&bs) + samples(&more)
    );
    assert_eq!(
        count(
            &a,
            &format!("SELECT count() FROM {}.samples_all", src.admin.database)
        )
        .await,
        samples(&bs)
    );
}

/// What a view missed (a server stopped between the raw part and the view's block) is rolled up once by the repair
/// the sink runs after an uncertain insert, from either raw table, and the source's marker moves with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_repair_rolls_up_once_what_a_view_missed() {
    let Some(url) = server_url() else { return };
    let u = migrated(&url, "repair").await;
    let admin = ClickHouseStore::new(u.admin.clone()).unwrap();
    let db = u.admin.database.clone();
    let c = admin.client();
    let insert = |table: &str, ids: std::ops::Range<u64>| {
        let rows: Vec<String> = ids
            .map(|id| {
                format!(
                    "(toDateTime({}), 'demo', '/', 'h', '/', 0, '', 0, 0, 1000.0, 0, 500, 'a', {id})",
                    1_795_600_000 + id
                )
            })
            .collect();
        format!("INSERT INTO {db}.{table} VALUES {}", rows.join(", "))
    };
    let run = |sql: String| async move { c.query(&sql).execute().await.unwrap() };
    let marker = || async {
        c.query(&schema::rollup_marker_sql(&u.admin))
            .bind("a")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    let rolled_sql =
        format!("SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''");
    let rolled = || count(&admin, &rolled_sql);
    let repair_sql = schema::repair_rollup_sql(&u.admin);
    let repair = |after: u64, through: u64| {
        c.query(&repair_sql)
            .bind("a")
            .bind(after)
            .bind(through)
            .execute()
    };

    // 40 rows through the view, then 60 while the view is away: the raw table has them, the rollup does not.
    run(insert("raw_samples", 1..41)).await;
    // Then the same for rows that a collector of an earlier version put in `samples`, which the v2 view missed.
    for (table, view, missed) in [
        ("raw_samples", "raw_samples_rollup_mv", 41..101),
        ("samples", "rollup_hourly_mv", 101..111),
    ] {
        let (before, through) = (missed.start - 1, missed.end - 1);
        run(format!("DETACH TABLE {db}.{view}")).await;
        run(insert(table, missed)).await;
        run(format!("ATTACH TABLE {db}.{view}")).await;
        assert_eq!((marker().await, rolled().await), (before, before));
        repair(before, through).await.unwrap();
        assert_eq!((marker().await, rolled().await), (through, through));
    }
    assert_eq!(
        count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await,
        110
    );
    drop_db(&u.admin).await;
}
