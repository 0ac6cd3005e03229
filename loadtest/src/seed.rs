//! Benchmark (5) set-up and measurement: seed the same samples into the embedded store (through the store's own
//! writer, as the collector would, but without HTTP) and into a raw ClickHouse table, then time "p75 by page over
//! 28 days" on both and compare each page's answer with the exact value.

use crate::client;
use crate::truth::exact_nearest_rank;
use crate::workload::{mix, PageView, Workload, WorkloadConfig, NAVS, RELEASES, USER_AGENTS};
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use storage::embedded::{EmbeddedOptions, EmbeddedStore};
use storage::{Accepted, DAY_MS, MINUTE_MS};
use vitals::Metric;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    /// Generator seed.
    pub seed: u64,
    /// Samples (all metrics) to seed; beacons are generated until at least this many.
    pub samples: u64,
    /// Pages of the one site.
    pub pages: usize,
    /// Days back from `now_ms` the samples are spread over.
    pub days: i64,
    /// The end of the seeded period, Unix ms (samples stop two minutes before it).
    pub now_ms: i64,
    /// Site prefix (the site is `{prefix}-shop`).
    pub site_prefix: String,
}

impl SeedConfig {
    /// The one-site workload.
    pub fn workload(&self) -> Workload {
        Workload::new(WorkloadConfig {
            seed: self.seed,
            pages: self.pages,
            site_prefix: self.site_prefix.clone(),
            sites: 1,
            // Seeding builds samples directly; attribution is not stored.
            attribution: false,
        })
    }

    /// When beacon `i` was received: uniform over the period (an hour of margin at the old end, so that a query
    /// run a while later still covers everything).
    pub fn received_at_ms(&self, i: u64) -> i64 {
        let span = self.days * DAY_MS - 2 * MINUTE_MS - 3_600_000;
        let start = self.now_ms - self.days * DAY_MS + 3_600_000;
        start + (mix(self.seed.wrapping_mul(0x5851_F42D) ^ i) % span as u64) as i64
    }

    /// The page views to seed, in order, until `samples` are reached.
    pub fn page_views<'a>(&'a self, w: &'a Workload) -> impl Iterator<Item = PageView> + 'a {
        let mut total = 0u64;
        (0u64..).map(|i| w.page_view(i)).take_while(move |v| {
            let more = total < self.samples;
            total += v.values.iter().flatten().count() as u64;
            more
        })
    }
}

/// Writes the seed into an embedded store in `dir` through its writer. Returns (beacons, samples).
pub async fn seed_embedded(dir: &Path, cfg: &SeedConfig) -> anyhow::Result<(u64, u64)> {
    // A bulk load: no connection threads to yield the CPU to.
    let options = EmbeddedOptions {
        pace_flushes: false,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir, options)?;
    let (tx, rx) = tokio::sync::mpsc::channel(65_536);
    let writer = store.spawn_writer(rx)?;
    let w = cfg.workload();
    let (mut beacons, mut samples) = (0u64, 0u64);
    for v in cfg.page_views(&w) {
        let body = w.body(&v);
        let beacon = vitals::decode_beacon(body.as_bytes())
            .map_err(|e| anyhow::anyhow!("generated beacon refused: {e}"))?;
        samples += beacon.metrics.len() as u64;
        beacons += 1;
        tx.send(Accepted {
            id: v.index + 1,
            received_at_ms: cfg.received_at_ms(v.index),
            device: USER_AGENTS[v.ua as usize].1,
            beacon,
        })
        .await
        .map_err(|_| anyhow::anyhow!("embedded writer stopped"))?;
    }
    drop(tx);
    writer.stopped().await;
    Ok((beacons, samples))
}

/// The raw-samples table of the "no collector" design and of the query comparison (ClickHouse 18.16 syntax).
pub fn clickhouse_schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (ts UInt64, site String, page String, device String, release String, \
         nav String, metric String, value Float64) ENGINE = MergeTree() PARTITION BY intDiv(ts, 86400000) \
         ORDER BY (site, metric, page, ts)"
    )
}

/// Bulk-inserts the same samples into a ClickHouse table (TabSeparated, a million rows per insert).
pub async fn seed_clickhouse(
    addr: SocketAddr,
    table: &str,
    auth: &[(&str, &str)],
    cfg: &SeedConfig,
) -> anyhow::Result<u64> {
    let w = cfg.workload();
    let path = format!(
        "/?query={}",
        client::encode_query_value(&format!("INSERT INTO {table} FORMAT TabSeparated"))
    );
    let mut buf = String::with_capacity(64 << 20);
    let (mut rows, mut in_buf) = (0u64, 0u64);
    let site = &w.sites()[0].name;
    for v in cfg.page_views(&w) {
        let ts = cfg.received_at_ms(v.index);
        let page = w.page_key(v.site, v.page);
        let device = USER_AGENTS[v.ua as usize].1.as_str();
        let release = RELEASES[v.release as usize].0.unwrap_or("");
        let nav = NAVS[v.nav as usize].1;
        for (m, value) in Metric::ALL.iter().zip(v.values) {
            if let Some(value) = value {
                buf.push_str(&format!(
                    "{ts}\t{site}\t{page}\t{device}\t{release}\t{nav}\t{}\t{value}\n",
                    m.as_str()
                ));
                in_buf += 1;
            }
        }
        if in_buf >= 1_000_000 {
            insert(addr, &path, auth, std::mem::take(&mut buf)).await?;
            rows += in_buf;
            in_buf = 0;
        }
    }
    if in_buf > 0 {
        insert(addr, &path, auth, buf).await?;
        rows += in_buf;
    }
    Ok(rows)
}

async fn insert(
    addr: SocketAddr,
    path: &str,
    auth: &[(&str, &str)],
    body: String,
) -> anyhow::Result<()> {
    let (status, answer) = client::post(addr, path, auth, Bytes::from(body)).await?;
    anyhow::ensure!(
        status == 200,
        "ClickHouse insert: {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// One side's answer: p75 and n per page, and how long each repetition took.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Per page: (p75, n).
    #[serde(skip)]
    pub pages: BTreeMap<String, (f64, u64)>,
    /// Milliseconds per warm-up query (not in the median).
    pub warmup_ms: Vec<f64>,
    /// Milliseconds per repetition.
    pub times_ms: Vec<f64>,
    /// Median of `times_ms`.
    pub median_ms: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The query comparison's result.
#[derive(Debug, Serialize)]
pub struct QueryBench {
    /// Pages answered by fieldvitals.
    pub pages: usize,
    /// Samples of the metric in the range (truth).
    pub samples: u64,
    /// fieldvitals' timings.
    pub fieldvitals: Side,
    /// ClickHouse's timings.
    pub clickhouse: Side,
    /// ClickHouse median / fieldvitals median.
    pub speedup: f64,
    /// Largest |fieldvitals − exact| / exact over pages.
    pub fieldvitals_max_rel_error: f64,
    /// Largest |quantileExact − exact nearest rank| / exact over pages.
    pub clickhouse_max_rel_error: f64,
    /// Largest |fieldvitals − quantileExact| / quantileExact over pages.
    pub fieldvitals_vs_clickhouse_max_rel_diff: f64,
    /// Pages whose n differs between fieldvitals and the truth.
    pub count_mismatches: usize,
    /// Pages whose n differs between ClickHouse and the truth.
    pub clickhouse_count_mismatches: usize,
}

/// How many times each side's query runs: untimed first, then timed.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    /// Untimed rounds of both.
    pub warmup: usize,
    /// Timed rounds of each (at least one).
    pub repeat: usize,
}

/// Times `p75 by page` for the seeded site on a collector and on ClickHouse, `repeat` times each after `warmup`
/// untimed rounds of both (a just-started collector maps and caches its file over its first few queries, a
/// ClickHouse server its parts), and compares.
pub async fn query_bench(
    collector: SocketAddr,
    clickhouse: SocketAddr,
    table: &str,
    auth: &[(&str, &str)],
    cfg: &SeedConfig,
    metric: Metric,
    rounds: Rounds,
) -> anyhow::Result<QueryBench> {
    let Rounds { warmup, repeat } = rounds;
    let w = cfg.workload();
    let site = w.sites()[0].name.clone();
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(cfg.days);
    let q = format!(
        "/v1/p75?site={}&metric={}&by=page&limit=100000&from={}&to={}",
        client::encode_query_value(&site),
        metric.as_str(),
        client::encode_query_value(&from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        client::encode_query_value(&to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    // The two are timed in turns (fieldvitals, ClickHouse, fieldvitals, ...): this machine's speed drifts by up to
    // 2x over seconds, and timing all of one side first let that drift decide the ratio.
    let mut fv_times = Vec::new();
    let mut fv_json = serde_json::Value::Null;
    let mut ch_times = Vec::new();
    let mut ch_body = Bytes::new();
    let mut sql = String::new();
    let (mut from_ms, mut to_ms) = (0i64, 0i64);
    let mut fv_pages = BTreeMap::new();
    let (mut fv_warm, mut ch_warm) = (Vec::new(), Vec::new());
    for i in 0..warmup + repeat.max(1) {
        if i == warmup {
            // Warm-up over: what follows is timed.
            fv_warm = std::mem::take(&mut fv_times);
            ch_warm = std::mem::take(&mut ch_times);
        }
        let t = Instant::now();
        let (status, body) = client::get(collector, &q).await?;
        fv_times.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            status == 200,
            "fieldvitals query: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        fv_json = serde_json::from_slice(&body)?;
        if i == 0 {
            // Both sides answer over exactly the effective range fieldvitals reports.
            let parse = |k: &str| -> anyhow::Result<i64> {
                Ok(
                    chrono::DateTime::parse_from_rfc3339(fv_json[k].as_str().unwrap_or_default())?
                        .timestamp_millis(),
                )
            };
            (from_ms, to_ms) = (parse("from")?, parse("to")?);
            sql = format!(
                "SELECT page, quantileExact(0.75)(value), count() FROM {table} WHERE site = '{site}' AND metric = '{}' \
                 AND ts >= {from_ms} AND ts < {to_ms} GROUP BY page FORMAT TabSeparated",
                metric.as_str()
            );
        }
        let t = Instant::now();
        let (status, body) = client::post(clickhouse, "/", auth, Bytes::from(sql.clone())).await?;
        ch_times.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            status == 200,
            "ClickHouse query: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        ch_body = body;
    }
    for row in fv_json["rows"].as_array().into_iter().flatten() {
        fv_pages.insert(
            row["page"].as_str().unwrap_or_default().to_string(),
            (
                row["p75"].as_f64().unwrap_or(f64::NAN),
                row["n"].as_u64().unwrap_or(0),
            ),
        );
    }
    let mut ch_pages = BTreeMap::new();
    for line in String::from_utf8_lossy(&ch_body).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 {
            ch_pages.insert(
                f[0].to_string(),
                (f[1].parse::<f64>()?, f[2].parse::<u64>()?),
            );
        }
    }
    // The truth, regenerated.
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let slot = Metric::ALL
        .iter()
        .position(|m| *m == metric)
        .expect("metric is in ALL");
    for v in cfg.page_views(&w) {
        let ts = cfg.received_at_ms(v.index);
        if ts >= from_ms && ts < to_ms {
            if let Some(x) = v.values[slot] {
                raw.entry(w.page_key(v.site, v.page)).or_default().push(x);
            }
        }
    }
    let rel = |a: f64, b: f64| if b == 0.0 { a.abs() } else { (a - b).abs() / b };
    let (mut fv_err, mut ch_err, mut diff) = (0.0f64, 0.0f64, 0.0f64);
    let (mut n_bad, mut ch_n_bad, mut samples) = (0usize, 0usize, 0u64);
    for (page, values) in raw.iter_mut() {
        samples += values.len() as u64;
        let n = values.len() as u64;
        let exact = exact_nearest_rank(values, 750_000).expect("non-empty");
        match fv_pages.get(page) {
            Some(&(p, fv_n)) => {
                fv_err = fv_err.max(rel(p, exact));
                n_bad += usize::from(fv_n != n);
                if let Some(&(c, _)) = ch_pages.get(page) {
                    diff = diff.max(rel(p, c));
                }
            }
            None => n_bad += 1,
        }
        match ch_pages.get(page) {
            Some(&(c, ch_n)) => {
                ch_err = ch_err.max(rel(c, exact));
                ch_n_bad += usize::from(ch_n != n);
            }
            None => ch_n_bad += 1,
        }
    }
    let fv_median = median(&mut fv_times.clone());
    let ch_median = median(&mut ch_times.clone());
    Ok(QueryBench {
        pages: fv_pages.len(),
        samples,
        fieldvitals: Side {
            pages: fv_pages,
            warmup_ms: fv_warm,
            times_ms: fv_times,
            median_ms: fv_median,
        },
        clickhouse: Side {
            pages: ch_pages,
            warmup_ms: ch_warm,
            times_ms: ch_times,
            median_ms: ch_median,
        },
        speedup: ch_median / fv_median.max(1e-9),
        fieldvitals_max_rel_error: fv_err,
        clickhouse_max_rel_error: ch_err,
        fieldvitals_vs_clickhouse_max_rel_diff: diff,
        count_mismatches: n_bad,
        clickhouse_count_mismatches: ch_n_bad,
    })
}

/// How long a seeding step took, for the report.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_is_deterministic_and_bounded() {
        let cfg = SeedConfig {
            seed: 3,
            samples: 10_000,
            pages: 100,
            days: 28,
            now_ms: 1_790_000_000_000,
            site_prefix: "seed".into(),
        };
        let w = cfg.workload();
        let views: Vec<PageView> = cfg.page_views(&w).collect();
        let samples: u64 = views
            .iter()
            .map(|v| v.values.iter().flatten().count() as u64)
            .sum();
        assert!((10_000..10_005).contains(&samples), "{samples}");
        for v in &views {
            let t = cfg.received_at_ms(v.index);
            assert!(t >= cfg.now_ms - 28 * DAY_MS && t < cfg.now_ms - MINUTE_MS);
        }
        assert_eq!(views, cfg.page_views(&w).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_embedded_seed_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SeedConfig {
            seed: 5,
            samples: 20_000,
            pages: 40,
            days: 28,
            now_ms: chrono::Utc::now().timestamp_millis(),
            site_prefix: "seed".into(),
        };
        let (_, samples) = seed_embedded(dir.path(), &cfg).await.unwrap();
        assert!(samples >= 20_000);
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let (from, to) = storage::snap_range(cfg.now_ms - 28 * DAY_MS, cfg.now_ms, cfg.now_ms);
        let q = storage::HistQuery {
            site: "seed-shop".into(),
            metric: Metric::Lcp,
            from_ms: from,
            to_ms: to,
            by: storage::GroupBy {
                page: true,
                ..Default::default()
            },
            filters: Default::default(),
        };
        use storage::HistogramSource;
        let got = store.histograms(&q).await.unwrap();
        let w = cfg.workload();
        let mut want: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for v in cfg.page_views(&w) {
            if let Some(x) = v.values[0] {
                want.entry(w.page_key(0, v.page)).or_default().push(x);
            }
        }
        assert_eq!(got.len(), want.len());
        for (k, h) in got {
            let values = want.get_mut(k.page.as_deref().unwrap()).unwrap();
            assert_eq!(h.count(), values.len() as u64);
            let exact = exact_nearest_rank(values, 750_000).unwrap();
            let p = h.quantile(Metric::Lcp, vitals::Quantile::P75).unwrap();
            assert!((p - exact).abs() <= exact * 0.0005 + 0.5, "{p} vs {exact}");
        }
    }
}
