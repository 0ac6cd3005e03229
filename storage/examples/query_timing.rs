//! Times one "p75 by page" query against an existing embedded store, in process (no HTTP): the store's own path,
//! which reads on two threads for ranges of a day or more.
//!
//! `cargo run --release -p storage --example query_timing -- DATA_DIR SITE DAYS [NOW_MS] [REPEAT]`; with `SERIAL=1`
//! in the environment, on one thread; with `GAP_MS=70`, after an idle pause before each query.

use std::time::Instant;
use storage::embedded::{EmbeddedOptions, EmbeddedStore};
use storage::{snap_range, Filters, GroupBy, HistQuery, HistogramSource};
use vitals::{Metric, Quantile};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, site, days, rest @ ..] = args.as_slice() else {
        return Err("usage: query_timing DATA_DIR SITE DAYS [NOW_MS] [REPEAT]".into());
    };
    let now: i64 = match rest.first() {
        Some(n) => n.parse()?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let repeat: usize = rest.get(1).map_or(Ok(15), |r| r.parse())?;
    let days: i64 = days.parse()?;
    let options = EmbeddedOptions {
        parallel_queries: std::env::var_os("SERIAL").is_none(),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(std::path::Path::new(dir), options)?;
    let (from_ms, to_ms) = snap_range(now - days * 86_400_000, now, now);
    let q = HistQuery {
        site: site.clone(),
        metric: Metric::Lcp,
        from_ms,
        to_ms,
        by: GroupBy {
            page: true,
            ..GroupBy::default()
        },
        filters: Filters::default(),
    };
    let mut times = Vec::new();
    let mut groups = 0;
    let cpu_before = cpu_ms();
    // GAP_MS: an idle pause before each query (as between the benchmark's turns), so caches and idle CPUs go cold.
    let gap = std::env::var("GAP_MS")
        .ok()
        .and_then(|g| g.parse().ok())
        .map(std::time::Duration::from_millis);
    for _ in 0..repeat {
        if let Some(g) = gap {
            std::thread::sleep(g);
        }
        let t = Instant::now();
        groups = store.summaries(&q, &[Quantile::P75]).await?.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = (cpu_ms() - cpu_before) / repeat as f64;
    times.sort_by(f64::total_cmp);
    println!(
        "{groups} groups; ms: min {:.2} median {:.2} max {:.2}; CPU per query {cpu:.2} ms",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

/// The process's user and system CPU time so far, in ms (Linux; 10 ms resolution, so time many queries).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}
