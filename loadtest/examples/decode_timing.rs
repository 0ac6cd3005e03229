//! Times the ingest handler's beacon decoding alone (JSON parse, validation, page normalisation) over the load
//! generator's bodies, generated up front: as the ingest path decodes them (ids and attribution checked, not
//! kept), and in full (`vitals::decode_beacon`, what `/v1/recent` reads).
//!
//! `cargo run --release -p loadtest --example decode_timing -- [BODIES] [ROUNDS] [no-attribution]`
//!
//! The bodies carry attribution on LCP, INP and CLS as beacon.js sends it, unless `no-attribution` is given.
//!
//! Under `valgrind --tool=callgrind` (one round) it gives instructions per beacon, which this noisy machine cannot
//! blur.

use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .take(2)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let bodies_n = args.first().copied().unwrap_or(20_000);
    let rounds = args.get(1).copied().unwrap_or(20);
    let w = loadtest::workload::Workload::new(loadtest::workload::WorkloadConfig {
        attribution: std::env::args().nth(3).as_deref() != Some("no-attribution"),
        ..Default::default()
    });
    let bodies: Vec<Vec<u8>> = (0..bodies_n as u64)
        .map(|i| w.body(&w.page_view(i)).into_bytes())
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    for detail in [vitals::SampleDetail::ValuesOnly, vitals::SampleDetail::Full] {
        let mut times = Vec::new();
        let mut samples = 0;
        for _ in 0..rounds {
            samples = 0;
            let t = Instant::now();
            for b in &bodies {
                let beacon = vitals::wire::decode_beacon_detail(b, &vitals::page::NoRules, detail)
                    .expect("the load generator sends valid beacons");
                samples += beacon.metrics.len();
            }
            times.push(t.elapsed().as_secs_f64() * 1e9 / bodies_n as f64);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{detail:?}: {bodies_n} bodies ({} bytes on average, {samples} samples): ns per beacon min {:.0} median {:.0}",
            bytes / bodies_n.max(1),
            times[0],
            times[times.len() / 2]
        );
    }
}
