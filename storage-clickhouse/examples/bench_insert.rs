//! Measures the sink's insert rate and the stored bytes per row (raw: one per beacon) on a real server, for
//! docs/clickhouse.md.
//! Usage: `bench_insert URL [BEACONS]` (admin user `default` without password; creates and drops `fv_bench`).

use std::time::{Duration, Instant};
use storage::Accepted;
use storage_clickhouse::{spawn_sink, ClickHouseConfig, ClickHouseStore};
use vitals::wire::{Release, Sample};
use vitals::{Beacon, DeviceClass, Metric, NavType, PageUrl, SiteId};

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Parts {
    rows: u64,
    compressed: u64,
    uncompressed: u64,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18123".into());
    let n: usize = args
        .next()
        .map_or(200_000, |s| s.parse().expect("BEACONS is a number"));
    let cfg = ClickHouseConfig {
        url,
        database: "fv_bench".into(),
        ..Default::default()
    };
    let store = ClickHouseStore::new(cfg.clone()).unwrap();
    let _ = store
        .client()
        .query("DROP DATABASE IF EXISTS fv_bench")
        .execute()
        .await;
    store.migrate().await.unwrap();

    // 200 pages, 3 devices, 4 releases, 6 nav types, all five metrics, lognormal-ish values, 1 day of receive times.
    let now = chrono::Utc::now().timestamp_millis();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let beacons: Vec<Accepted> = (0..n)
        .map(|i| {
            let mut u = || (rnd() >> 11) as f64 / (1u64 << 53) as f64;
            let metrics = Metric::ALL
                .iter()
                .map(|&m| {
                    let median = if m == Metric::Cls { 0.08 } else { 1500.0 };
                    let z = (u() + u() + u() - 1.5) * 2.0;
                    let v = (median * (0.7 * z).exp()).min(m.max_value());
                    let v = if m == Metric::Cls {
                        (v * 1e4).round() / 1e4
                    } else {
                        v.round()
                    };
                    Sample {
                        metric: m,
                        value: v,
                        id: None,
                        attribution: None,
                    }
                })
                .collect();
            let r = rnd();
            Accepted {
                id: i as u64 + 1,
                received_at_ms: now - 86_400_000 + (i as i64 * 86_400_000) / n as i64,
                device: DeviceClass::ALL[(r % 3) as usize],
                beacon: Beacon {
                    site: SiteId::parse("demo").unwrap(),
                    url: PageUrl::parse(&format!(
                        "https://shop.example/section{}/item-{}",
                        r % 20,
                        (r >> 8) % 10
                    ))
                    .unwrap(),
                    release: Release::parse(&format!("2026.11.{}", (r >> 16) % 4)),
                    nav: NavType::ALL[((r >> 24) % 6) as usize],
                    metrics,
                },
            }
        })
        .collect();
    let samples: u64 = beacons.iter().map(|a| a.beacon.metrics.len() as u64).sum();

    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let sink = spawn_sink(&store, rx);
    let monitor = sink.monitor();
    let t0 = Instant::now();
    for a in beacons {
        tx.send(a).await.unwrap();
    }
    drop(tx);
    sink.flush_and_stop(Duration::from_secs(600)).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let h = monitor.health();
    println!(
        "inserted {} samples ({n} beacons) in {secs:.2} s: {:.0} samples/s, {:.0} beacons/s, {} batches",
        h.rows_inserted,
        h.rows_inserted as f64 / secs,
        n as f64 / secs,
        h.batches_inserted
    );
    assert_eq!(h.rows_inserted, samples);

    for table in [
        storage_clickhouse::schema::RAW,
        storage_clickhouse::schema::ROLLUP,
    ] {
        store
            .client()
            .query(&format!("OPTIMIZE TABLE fv_bench.{table} FINAL"))
            .execute()
            .await
            .unwrap();
        let p = store
            .client()
            .query(
                "SELECT toUInt64(sum(rows)), toUInt64(sum(data_compressed_bytes)), toUInt64(sum(data_uncompressed_bytes)) \
                 FROM system.parts WHERE database = 'fv_bench' AND table = ? AND active",
            )
            .bind(table)
            .fetch_one::<Parts>()
            .await
            .unwrap();
        println!(
            "{table}: {} rows, {} bytes compressed ({:.1} B/row), {} uncompressed ({:.1} B/row), ratio {:.1}",
            p.rows,
            p.compressed,
            p.compressed as f64 / p.rows.max(1) as f64,
            p.uncompressed,
            p.uncompressed as f64 / p.rows.max(1) as f64,
            p.uncompressed as f64 / p.compressed.max(1) as f64
        );
    }
    let _ = store
        .client()
        .query("DROP DATABASE IF EXISTS fv_bench")
        .execute()
        .await;
}
