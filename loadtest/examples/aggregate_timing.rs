//! Times the embedded store's in-memory aggregation alone: `MinuteDeltas::record` over the load generator's
//! beacons (decoded once, up front), a second's worth per batch as the store's flush would take them.
//!
//! `cargo run --release -p loadtest --example aggregate_timing -- [BEACONS_PER_BATCH] [BATCHES]`

use std::time::Instant;
use storage::embedded::aggregator::MinuteDeltas;
use storage::Accepted;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let per_batch = args.first().copied().unwrap_or(30_000);
    let batches = args.get(1).copied().unwrap_or(20);
    let w = loadtest::workload::Workload::new(loadtest::workload::WorkloadConfig::default());
    let beacons: Vec<Accepted> = (0..per_batch as u64)
        .map(|i| Accepted {
            id: i + 1,
            received_at_ms: 1_800_000_000_000 + i as i64,
            device: vitals::DeviceClass::Phone,
            beacon: vitals::decode_beacon(w.body(&w.page_view(i)).as_bytes()).expect("valid"),
        })
        .collect();
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..batches {
        let t = Instant::now();
        let mut d = MinuteDeltas::default();
        for a in &beacons {
            d.record(a);
        }
        rows = d.rows_len();
        drop(d);
        times.push(t.elapsed().as_secs_f64() * 1e9 / per_batch as f64);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{per_batch} beacons, {rows} rows: ns per beacon min {:.0} median {:.0}",
        times[0],
        times[times.len() / 2]
    );
}
