//! Measures the spool's append rate and acknowledgement latency with many concurrent appenders, as the ingest
//! handlers use it. Results go to docs/architecture.md.
//!
//! `cargo run --release -p spool --example append_throughput -- [appenders] [seconds] [fsync_ms] [dir]`

use spool::{Spool, SpoolOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let appenders: usize = args.get(1).map_or(64, |a| a.parse().expect("appenders"));
    let seconds: u64 = args.get(2).map_or(5, |a| a.parse().expect("seconds"));
    let fsync_ms: u64 = args.get(3).map_or(5, |a| a.parse().expect("fsync ms"));
    let base = args
        .get(4)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let (spool, _) = Spool::open(
        dir.path(),
        SpoolOptions {
            fsync_interval: Duration::from_millis(fsync_ms),
            ..SpoolOptions::default()
        },
        1,
    )
    .expect("spool opens");
    // A reader and checkpoints, as in the collector, so segments are deleted as they would be.
    let mut reader = spool.reader(0);
    let cp = spool.clone();
    tokio::spawn(async move {
        while let Some(Ok((seq, _))) = reader.next().await {
            if seq % 1024 == 0 {
                cp.checkpoint(seq);
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (spool, stop) = (spool.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // A typical encoded beacon: five samples, a page and a release, about 120 bytes.
            let payload = vec![7u8; 120];
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                spool.append(&payload).await.expect("written");
                // An append completes without suspending (the write happens in the caller); a request task then
                // awaits its socket. Yield likewise, or the appenders would starve the reader.
                tokio::task::yield_now().await;
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    println!(
        "appenders={appenders} fsync_ms={fsync_ms} appends={} rate={:.0}/s ack_us p50={} p99={} p99.9={} max={}",
        all.len(),
        all.len() as f64 / elapsed,
        q(0.5),
        q(0.99),
        q(0.999),
        all.last().copied().unwrap_or(0)
    );
    spool.close();
}
