//! The collector in ClickHouse mode against a real server (FV_CLICKHOUSE_URL, set by `.ci/run` and
//! `.ci/clickhouse-tests.sh`; without it these tests skip, under CI=true they fail): every posted sample is stored
//! exactly once, `/v1/p75` equals the exact nearest-rank p75 within the histogram's precision and equals the
//! embedded store's answer for the same beacons; and a 60-second ClickHouse outage loses nothing, duplicates nothing
//! and shows as "degraded" in `/readyz` meanwhile.

mod helpers;
use helpers::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use storage_clickhouse::testing::{fresh_db, server_url, PrivateServer};
use storage_clickhouse::{ClickHouseConfig, ClickHouseStore};

const PAGES: [&str; 3] = ["/", "/products/:id", "/checkout"];
const DEVICES: [&str; 3] = ["phone", "tablet", "desktop"];
const METRICS: [&str; 5] = ["LCP", "INP", "CLS", "FCP", "TTFB"];

fn admin(url: &str, db: &str) -> ClickHouseStore {
    ClickHouseStore::new(ClickHouseConfig {
        url: url.into(),
        database: db.into(),
        user: std::env::var("FV_CLICKHOUSE_ADMIN_USER").unwrap_or_else(|_| "default".into()),
        password: storage_clickhouse::Secret::new(
            std::env::var("FV_CLICKHOUSE_ADMIN_PASSWORD").unwrap_or_default(),
        ),
        ..Default::default()
    })
    .unwrap()
}

/// A collector config in ClickHouse mode as the insert-only writer user (password from a file, as in production).
fn clickhouse_config(dir: &Path, url: &str, db: &str) -> collector::Config {
    std::fs::create_dir_all(dir).unwrap();
    let pw = dir.join("clickhouse-password");
    std::fs::write(
        &pw,
        format!(
            "{}\n",
            std::env::var("FV_CLICKHOUSE_WRITER_PASSWORD").unwrap_or_else(|_| "fv-writer".into())
        ),
    )
    .unwrap();
    let mut config = collector::Config::for_tests(dir.join("data"));
    config.clickhouse.url = Some(url.to_string());
    config.clickhouse.database = db.to_string();
    config.clickhouse.user =
        std::env::var("FV_CLICKHOUSE_WRITER_USER").unwrap_or_else(|_| "fv_writer".into());
    config.clickhouse.password_file = Some(pw);
    config
}

async fn count(store: &ClickHouseStore, sql: &str) -> u64 {
    store.client().query(sql).fetch_one::<u64>().await.unwrap()
}

/// `n` beacons (5 samples each) with their exact values per (page, device, metric).
#[allow(clippy::type_complexity)]
fn generate(
    seed: u64,
    n: usize,
) -> (
    Vec<(String, &'static str)>,
    HashMap<(String, String, String), Vec<f64>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut truth: HashMap<(String, String, String), Vec<f64>> = HashMap::new();
    let mut bodies = Vec::new();
    for i in 0..n {
        let p = rng.random_range(0..PAGES.len());
        let d = rng.random_range(0..DEVICES.len());
        let mut metrics = Vec::new();
        for m in METRICS {
            let (median, sigma) = match m {
                "CLS" => (0.05 + 0.03 * p as f64, 1.0),
                "INP" => (120.0 + 50.0 * d as f64, 0.7),
                _ => (900.0 + 500.0 * p as f64 + 400.0 * d as f64, 0.5),
            };
            let max = if m == "CLS" { 100.0 } else { 3_600_000.0 };
            let v: f64 = LogNormal::new(f64::ln(median), sigma)
                .unwrap()
                .sample(&mut rng)
                .min(max);
            truth
                .entry((PAGES[p].into(), DEVICES[d].into(), m.into()))
                .or_default()
                .push(v);
            metrics.push((m, v));
        }
        let url = match PAGES[p] {
            "/products/:id" => format!("https://shop.example/products/{}", 100 + i),
            page => format!("https://shop.example{page}?i={i}"),
        };
        bodies.push((
            beacon_json("demo", &url, Some("r1"), "navigate", &metrics),
            DEVICES[d],
        ));
    }
    (bodies, truth)
}

/// Every row of a `/v1/p75?…&by=page,device` answer for metric `m` counts its group's samples and gives the exact
/// nearest-rank p75 within the histogram's precision.
fn assert_rows_match_truth(
    body: &serde_json::Value,
    m: &str,
    truth: &HashMap<(String, String, String), Vec<f64>>,
) {
    for r in body["rows"].as_array().unwrap() {
        let key = (
            r["page"].as_str().unwrap().to_string(),
            r["device"].as_str().unwrap().to_string(),
            m.to_string(),
        );
        let values = &truth[&key];
        assert_eq!(r["n"].as_u64().unwrap(), values.len() as u64, "{key:?}");
        let exact = exact_quantile(values, 0.75);
        let got = r["p75"].as_f64().unwrap();
        let tol = if m == "CLS" { 0.001 } else { 1.0 };
        assert!(
            (got - exact).abs() <= f64::max(tol, exact * 0.001),
            "{key:?}: p75 {got} vs exact {exact}"
        );
    }
}

async fn post_all(app: &TestApp, bodies: &[(String, &'static str)]) {
    for (body, device) in bodies {
        let r = app.post(body, ua_for(device)).await;
        assert_eq!(r.status().as_u16(), 204, "{body}");
    }
}

/// Drops a test's database (best effort: a failure leaves a database behind, never fails the test).
async fn drop_db(store: &ClickHouseStore, db: &str) {
    let _ = store
        .client()
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await;
}

/// Polls until `sql` counts `want` (at most 60 s).
async fn wait_count(store: &ClickHouseStore, sql: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = store
            .client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if n >= want || tokio::time::Instant::now() > deadline {
            assert_eq!(n, want, "{sql}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_mode_stores_every_sample_once_and_answers_like_the_embedded_store() {
    let Some(url) = server_url() else { return };
    let db = fresh_db("e2e_same");
    let admin = admin(&url, &db);
    admin.migrate().await.unwrap();

    let (_d1, ch_dir) = tempdir();
    // Writes as the insert-only user, queries as the read-only user.
    let mut config = clickhouse_config(&ch_dir, &url, &db);
    let read_pw = ch_dir.join("clickhouse-read-password");
    std::fs::write(
        &read_pw,
        std::env::var("FV_CLICKHOUSE_READER_PASSWORD").unwrap_or_else(|_| "fv-reader".into()),
    )
    .unwrap();
    config.clickhouse.read_user =
        Some(std::env::var("FV_CLICKHOUSE_READER_USER").unwrap_or_else(|_| "fv_reader".into()));
    config.clickhouse.read_password_file = Some(read_pw);
    let ch = TestApp::spawn_with(config).await;
    let (_d2, emb_dir) = tempdir();
    let emb = TestApp::spawn(&emb_dir).await;

    let (bodies, truth) = generate(77, 600);
    post_all(&ch, &bodies).await;
    post_all(&emb, &bodies).await;
    let sent = (bodies.len() * METRICS.len()) as u64;
    wait_count(
        &admin,
        &format!("SELECT count() FROM {db}.samples_all"),
        sent,
    )
    .await;
    assert_eq!(
        count(
            &admin,
            &format!("SELECT toUInt64(uniqExact(beacon_id, metric)) FROM {db}.samples_all")
        )
        .await,
        sent,
        "no duplicates"
    );
    for m in METRICS {
        emb.wait_for_total("demo", m, bodies.len() as u64).await;
        ch.wait_for_total("demo", m, bodies.len() as u64).await;
        for q in [
            format!("/v1/p75?site=demo&metric={m}&by=page,device"),
            format!("/v1/p75?site=demo&metric={m}"),
            format!("/v1/quantiles?site=demo&metric={m}&by=device&q=0.5,0.9,0.99"),
            format!("/v1/p75?site=demo&metric={m}&page=/checkout&device=phone"),
        ] {
            let (s1, from_ch) = ch.get_json(&q).await;
            let (s2, from_emb) = emb.get_json(&q).await;
            assert_eq!((s1, s2), (200, 200), "{q}");
            assert_eq!(
                from_ch, from_emb,
                "{q}: ClickHouse and embedded answers differ"
            );
        }
        // And p75 per group equals the exact nearest-rank p75 within the histogram's precision.
        let (_, body) = ch
            .get_json(&format!("/v1/p75?site=demo&metric={m}&by=page,device"))
            .await;
        assert_eq!(
            body["rows"].as_array().unwrap().len(),
            PAGES.len() * DEVICES.len()
        );
        assert_rows_match_truth(&body, m, &truth);
    }
    // /readyz in ClickHouse mode, all well.
    let (status, body) = ch.get_json("/readyz").await;
    assert_eq!(
        (status, body["store"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    ch.stop().await;
    emb.stop().await;
    drop_db(&admin, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_outage_loses_nothing_and_readyz_says_degraded() {
    let Some(_) = server_url() else { return };
    let server_dir = tempfile::tempdir().unwrap();
    let server = PrivateServer::new(server_dir.path());
    server.start().await;
    let url = server.url();
    let admin = admin(&url, "fv_e2e_outage");
    admin.migrate().await.unwrap();
    let (_d, dir) = tempdir();
    let app = TestApp::spawn_with(clickhouse_config(&dir, &url, "fv_e2e_outage")).await;

    let (bodies, _) = generate(5, 2600);
    let samples = |n: usize| (n * METRICS.len()) as u64;
    post_all(&app, &bodies[..300]).await;
    wait_count(
        &admin,
        "SELECT count() FROM fv_e2e_outage.samples_all",
        samples(300),
    )
    .await;

    // ClickHouse goes away for 60 seconds while beacons keep coming (~33/s): every one is answered 204. Readiness
    // says "degraded" (still 200) for the grace period, then "failing" (503) so a balancer prefers healthy peers.
    server.stop().await;
    let down_at = tokio::time::Instant::now();
    let (mut saw_degraded, mut saw_failing) = (false, false);
    let mut posted = 300;
    for chunk in bodies[300..].chunks(30) {
        if down_at.elapsed() >= Duration::from_secs(60) {
            break;
        }
        post_all(&app, chunk).await;
        posted += chunk.len();
        let (status, body) = app.get_json("/readyz").await;
        if body["store"] == "degraded" {
            assert_eq!(
                status, 200,
                "degraded is still ready within the grace period: {body}"
            );
            saw_degraded = true;
        }
        if body["store"] == "failing" {
            assert_eq!(status, 503, "failing past the grace period: {body}");
            saw_failing = true;
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert!(
        down_at.elapsed() >= Duration::from_secs(60),
        "enough beacons for a 60 s outage"
    );
    let (_, body) = app.get_json("/readyz").await;
    assert!(
        saw_degraded && saw_failing,
        "readyz reported the failing store: {body}"
    );
    assert!(body["spool"]["unstored"].as_u64().unwrap() > 0, "{body}");
    let bodies = &bodies[..posted];

    server.start().await;
    wait_count(
        &admin,
        "SELECT count() FROM fv_e2e_outage.samples_all",
        samples(bodies.len()),
    )
    .await;
    assert_eq!(
        count(
            &admin,
            "SELECT toUInt64(uniqExact(beacon_id, metric)) FROM fv_e2e_outage.samples_all"
        )
        .await,
        samples(bodies.len()),
        "every accepted beacon stored exactly once"
    );
    // Rolled up exactly once. Waited for, not read once: within one INSERT the raw part becomes visible before the
    // view's part, so a poll can see every raw row and not yet their rollup (wait_count fails on any other total).
    wait_count(
        &admin,
        "SELECT toUInt64(countMerge(samples)) FROM fv_e2e_outage.rollup_hourly WHERE r_site != ''",
        samples(bodies.len()),
    )
    .await;
    app.wait_for_total("demo", "LCP", bodies.len() as u64).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get_json("/readyz").await;
        if body["store"] == "ok" {
            assert_eq!(status, 200);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_migrate_runs_twice_and_config_show_redacts_the_password() {
    let Some(url) = server_url() else { return };
    let db = fresh_db("e2e_migrate");
    let (_d, dir) = tempdir();
    let admin_password = std::env::var("FV_CLICKHOUSE_ADMIN_PASSWORD").unwrap_or_default();
    let collector = |args: &[&str], password: &str| {
        std::process::Command::new(bin_path("collector"))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--clickhouse-url", &url, "--clickhouse-database", &db])
            .args(args)
            .env("FIELDVITALS_CLICKHOUSE_PASSWORD", password)
            .output()
            .expect("collector runs")
    };
    for _ in 0..2 {
        let out = collector(&["migrate"], &admin_password);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("at schema version 5"), "{stdout}");
    }
    let store = admin(&url, &db);
    assert_eq!(store.applied_versions().await.unwrap(), vec![1, 2, 3, 4, 5]);

    let out = collector(
        &["--clickhouse-user", "fv_writer", "config", "show"],
        "sekrit-pw-123",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("sekrit-pw-123"), "{stdout}");
    assert!(
        stdout.contains(
            "clickhouse_password = \"<redacted> (from FIELDVITALS_CLICKHOUSE_PASSWORD)\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("clickhouse_url = \"{url}\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "clickhouse_batch_rows = 100000\nclickhouse_batch_max_age_ms = 1000\nclickhouse_rollup_interval_ms = 10000\n\
             clickhouse_compression = \"auto\"\n"
        ),
        "{stdout}"
    );
    let out = collector(
        &[
            "--clickhouse-batch-rows",
            "5000",
            "--clickhouse-batch-max-age-ms",
            "250",
            "--clickhouse-rollup-interval-ms",
            "2000",
            "--clickhouse-compression",
            "lz4",
            "config",
            "show",
        ],
        "",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "clickhouse_batch_rows = 5000\nclickhouse_batch_max_age_ms = 250\nclickhouse_rollup_interval_ms = 2000\n\
             clickhouse_compression = \"lz4\"\n"
        ),
        "{stdout}"
    );
    // An unknown compression is refused, naming the choices.
    let out = collector(&["--clickhouse-compression", "zstd", "config", "show"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auto, lz4 or none"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A rollup window over a minute is refused, with the reason.
    let out = collector(&["--clickhouse-rollup-interval-ms", "60001", "migrate"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("rollup interval must be above 0 and at most 60 s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Batches older than a second are refused, with the reason.
    let out = collector(&["--clickhouse-batch-max-age-ms", "1500", "migrate"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 1 s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // There is no flag that takes the password itself.
    let out = collector(&["--clickhouse-password", "x", "config", "show"], "");
    assert!(!out.status.success());
    drop_db(&store, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_keeps_its_source_and_stores_everything_once() {
    let Some(url) = server_url() else { return };
    let db = fresh_db("e2e_restart");
    let admin = admin(&url, &db);
    admin.migrate().await.unwrap();
    let (_d, dir) = tempdir();
    let (bodies, _) = generate(9, 400);
    let samples = |n: usize| (n * METRICS.len()) as u64;

    let app = TestApp::spawn_with(clickhouse_config(&dir, &url, &db)).await;
    post_all(&app, &bodies[..200]).await;
    app.stop().await; // graceful: the spool is drained into ClickHouse
    let source = std::fs::read_to_string(
        dir.join("data")
            .join(collector::storage_select::SOURCE_FILE),
    )
    .unwrap();
    assert_eq!(
        count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await,
        samples(200)
    );

    let app = TestApp::spawn_with(clickhouse_config(&dir, &url, &db)).await;
    post_all(&app, &bodies[200..]).await;
    wait_count(
        &admin,
        &format!("SELECT count() FROM {db}.samples_all"),
        samples(bodies.len()),
    )
    .await;
    app.stop().await;
    assert_eq!(
        std::fs::read_to_string(
            dir.join("data")
                .join(collector::storage_select::SOURCE_FILE)
        )
        .unwrap(),
        source,
        "same data dir, same spool, same source"
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT toUInt64(uniqExact(source, beacon_id, metric)) FROM {db}.samples_all")
        )
        .await,
        samples(bodies.len())
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT toUInt64(uniqExact(source)) FROM {db}.samples_all")
        )
        .await,
        1
    );
    drop_db(&admin, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingestion_then_restart_stores_every_acknowledged_beacon_once() {
    let Some(url) = server_url() else { return };
    let db = fresh_db("e2e_kill");
    let admin = admin(&url, &db);
    admin.migrate().await.unwrap();
    let (_d, dir) = tempdir();
    let pw = dir.join("clickhouse-password");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &pw,
        std::env::var("FV_CLICKHOUSE_WRITER_PASSWORD").unwrap_or_else(|_| "fv-writer".into()),
    )
    .unwrap();
    let user = std::env::var("FV_CLICKHOUSE_WRITER_USER").unwrap_or_else(|_| "fv_writer".into());
    let args = [
        "--clickhouse-url",
        url.as_str(),
        "--clickhouse-database",
        db.as_str(),
        "--clickhouse-user",
        user.as_str(),
        "--clickhouse-password-file",
        pw.to_str().unwrap(),
    ];
    let (bodies, _) = generate(13, 800);
    let data = dir.join("data");
    let (mut child, base) = spawn_collector_bin(&data, &args).await;
    let client = reqwest::Client::new();
    let mut acknowledged = 0usize;
    for (body, device) in &bodies {
        let r = client
            .post(format!("{base}/v1/beacon"))
            .header("content-type", "text/plain")
            .header("user-agent", ua_for(device))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        acknowledged += 1;
    }
    // kill -9 right after the last 204: some beacons are only in the spool, some batches may be in flight.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before = count(&admin, &format!("SELECT count() FROM {db}.samples_all")).await;
    eprintln!(
        "kill -9 after {acknowledged} acknowledged beacons: {before} of {} rows stored before the restart",
        acknowledged * METRICS.len()
    );

    let (mut child, _base) = spawn_collector_bin(&data, &args).await;
    wait_count(
        &admin,
        &format!("SELECT count() FROM {db}.samples_all"),
        (acknowledged * METRICS.len()) as u64,
    )
    .await;
    assert_eq!(
        count(
            &admin,
            &format!("SELECT toUInt64(uniqExact(beacon_id, metric)) FROM {db}.samples_all")
        )
        .await,
        (acknowledged * METRICS.len()) as u64,
        "stored exactly once ({before} rows were stored before the kill)"
    );
    // Rolled up exactly once (waited for: the raw part of an INSERT is visible before its view's part).
    wait_count(
        &admin,
        &format!("SELECT toUInt64(countMerge(samples)) FROM {db}.rollup_hourly WHERE r_site != ''"),
        (acknowledged * METRICS.len()) as u64,
    )
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    drop_db(&admin, &db).await;
}

/// A collector in ClickHouse mode on `db` that has posted `bodies`, once `count_sql` counts `want`.
async fn collector_posting(
    url: &str,
    db: &str,
    bodies: &[(String, &'static str)],
    admin: &ClickHouseStore,
    count_sql: &str,
    want: u64,
) -> (TestApp, tempfile::TempDir) {
    let (d, dir) = tempdir();
    let app = TestApp::spawn_with(clickhouse_config(&dir, url, db)).await;
    post_all(&app, bodies).await;
    wait_count(admin, count_sql, want).await;
    (app, d)
}

/// A database created before schema v5 keeps its data through the upgrade: at schema v2 (raw rows in `samples`,
/// rolled up by the v2 view with marker rows), v3 (raw rows in `raw_samples`, rolled up by its view) or v4 (raw
/// rows in `raw_samples_v4`, their sums written by the sink). After `migrate`, new beacons go to `raw_beacons_v5`
/// and their sums to the rollup input, and every answer covers old and new rows, each sample counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_schema_v5_is_upgraded_with_its_data_counted_once() {
    let Some(url) = server_url() else { return };
    for (version, old_table, old_source) in [
        (2, "samples", "v2-collector"),
        (3, "raw_samples", "v3-collector"),
        (4, "raw_samples_v4", "v4-collector"),
    ] {
        upgrade_from(&url, version, old_table, old_source).await;
    }
}

async fn upgrade_from(url: &str, version: u32, old_table: &str, old_source: &str) {
    let raw = storage_clickhouse::schema::RAW;
    // The scratch database's rows one per sample, as the old tables hold them.
    let flat = storage_clickhouse::schema::RAW_V5_SAMPLES;
    let (old_db, tmp_db) = (fresh_db("upgrade"), fresh_db("upgrade_rows"));
    let (admin_old, admin_tmp) = (admin(url, &old_db), admin(url, &tmp_db));
    let (bodies, truth) = generate(91, 300);
    let (first, second) = bodies.split_at(120);

    // Rows exactly as a collector's sink writes them, for the first beacons (in a scratch database)...
    admin_tmp.migrate().await.unwrap();
    let first_n = (first.len() * METRICS.len()) as u64;
    let raw_sql = format!("SELECT count() FROM {tmp_db}.{flat}");
    let (tmp, _d0) = collector_posting(url, &tmp_db, first, &admin_tmp, &raw_sql, first_n).await;
    tmp.stop().await;

    // ...copied into a database at the old version, whose view rolls them up.
    let client = admin_old.client();
    let cfg = ClickHouseConfig {
        database: old_db.clone(),
        ..Default::default()
    };
    client
        .query(&storage_clickhouse::schema::create_database(&cfg))
        .execute()
        .await
        .unwrap();
    client
        .query(&storage_clickhouse::schema::create_migrations_table(&cfg))
        .execute()
        .await
        .unwrap();
    for m in storage_clickhouse::schema::migrations(&cfg)
        .into_iter()
        .filter(|m| m.version <= version)
    {
        for s in &m.statements {
            client.query(s).execute().await.unwrap();
        }
        client
            .query(&format!(
                "INSERT INTO {old_db}.schema_migrations (version, name, applied_at) VALUES (?, ?, now())"
            ))
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await
            .unwrap();
    }
    client
        .query(&format!(
            "INSERT INTO {old_db}.{old_table} SELECT time, site, page, host, path, device, release, nav, metric, \
             value, rating, bucket, '{old_source}' AS source, beacon_id FROM {tmp_db}.{flat}"
        ))
        .execute()
        .await
        .unwrap();
    if version == 4 {
        // No view rolls the v4 table up: its sink wrote the sums, as the repair does from raw rows.
        client
            .query(&storage_clickhouse::schema::repair_rollup_sql(&cfg))
            .with_setting("enable_optimize_predicate_expression", "1")
            .bind(old_source)
            .bind(0u64)
            .bind(u64::MAX)
            .execute()
            .await
            .unwrap();
    }
    let old_versions: Vec<u32> = (1..=version).collect();
    assert_eq!(admin_old.applied_versions().await.unwrap(), old_versions);

    // The upgrade, then the rest of the beacons from a collector of this version.
    let new_versions: Vec<u32> = (version + 1..=5).collect();
    assert_eq!(admin_old.migrate().await.unwrap(), new_versions);
    let total = (bodies.len() * METRICS.len()) as u64;
    let all_sql = format!("SELECT count() FROM {old_db}.samples_all");
    let (app, _d1) = collector_posting(url, &old_db, second, &admin_old, &all_sql, total).await;
    assert_eq!(
        count(
            &admin_old,
            &format!("SELECT count() FROM {old_db}.{old_table}")
        )
        .await,
        first_n,
        "the old raw table keeps the old rows and gets no new ones"
    );
    // Each sample rolled up once: the old view's rows for the old ones, the rollup input's for the new.
    wait_count(
        &admin_old,
        &format!(
            "SELECT toUInt64(countMerge(samples)) FROM {old_db}.rollup_hourly WHERE r_site != ''"
        ),
        total,
    )
    .await;
    // The markers: the old view's for the old source, the rollup input's rows for the new one.
    let marker = |source: &str| {
        admin_old
            .client()
            .query(&storage_clickhouse::schema::rollup_marker_sql(&cfg))
            .bind(source.to_string())
            .fetch_one::<u64>()
    };
    let old_max = count(
        &admin_tmp,
        &format!("SELECT toUInt64(max(beacon_id)) FROM {tmp_db}.{raw}"),
    )
    .await;
    assert_eq!(marker(old_source).await.unwrap(), old_max);
    let new_source = admin_old
        .client()
        .query(&format!("SELECT any(source) FROM {old_db}.{raw}"))
        .fetch_one::<String>()
        .await
        .unwrap();
    let new_max = count(
        &admin_old,
        &format!("SELECT toUInt64(max(beacon_id)) FROM {old_db}.{raw}"),
    )
    .await;
    assert_eq!(marker(&new_source).await.unwrap(), new_max);

    // Answers cover both tables: n and the p75 of every group against the exact values of all 300 beacons.
    for m in METRICS {
        app.wait_for_total("demo", m, bodies.len() as u64).await;
        let (_, body) = app
            .get_json(&format!("/v1/p75?site=demo&metric={m}&by=page,device"))
            .await;
        assert_rows_match_truth(&body, m, &truth);
    }
    app.stop().await;
    drop_db(&admin_old, &old_db).await;
    drop_db(&admin_tmp, &tmp_db).await;
}
