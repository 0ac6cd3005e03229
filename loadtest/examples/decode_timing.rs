//! Times the ingest handler's beacon decoding alone: `vitals::decode_beacon` (JSON parse, validation, page
//! normalisation) over the load generator's bodies, generated up front.
//!
//! `cargo run --release -p loadtest --example decode_timing -- [BODIES] [ROUNDS] [attribution]`
//!
//! With `attribution`, LCP, INP and CLS carry attribution objects shaped like `beacon/js/beacon.js`'s (the load
//! generator's bodies have none).
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
    let w = loadtest::workload::Workload::new(loadtest::workload::WorkloadConfig::default());
    let with_attribution = std::env::args().nth(3).as_deref() == Some("attribution");
    let bodies: Vec<Vec<u8>> = (0..bodies_n as u64)
        .map(|i| {
            let body = w.body(&w.page_view(i));
            if with_attribution {
                add_attribution(&body, i).into_bytes()
            } else {
                body.into_bytes()
            }
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let mut times = Vec::new();
    let mut samples = 0;
    for _ in 0..rounds {
        samples = 0;
        let t = Instant::now();
        for b in &bodies {
            let beacon = vitals::decode_beacon(b).expect("the load generator sends valid beacons");
            samples += beacon.metrics.len();
        }
        times.push(t.elapsed().as_secs_f64() * 1e9 / bodies_n as f64);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{bodies_n} bodies ({} bytes on average, {samples} samples): ns per beacon min {:.0} median {:.0}",
        bytes / bodies_n.max(1),
        times[0],
        times[times.len() / 2]
    );
}

/// beacon.js's attribution for LCP, INP and CLS, with browser-like float noise.
fn add_attribution(body: &str, i: u64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
    for m in v["metrics"].as_array_mut().expect("metrics") {
        let noise = (i % 97) as f64 * 0.100000001;
        let a = match m["name"].as_str() {
            Some("LCP") => {
                serde_json::json!({"target": "main>div.hero>img", "url": "https://cdn.example/img/hero.jpg",
                "ttfb": 120.0 + noise, "loadDelay": 30.5, "loadTime": 800.2 + noise, "renderDelay": 310.0})
            }
            Some("INP") => serde_json::json!({"target": "button#add-to-cart", "type": "pointerup",
                "inputDelay": 2.5 + noise, "processing": 40.0, "presentation": 53.5}),
            Some("CLS") => {
                serde_json::json!({"target": "div.ad-slot", "value": 0.02, "time": 1234.5 + noise})
            }
            _ => continue,
        };
        m["attribution"] = a;
    }
    v.to_string()
}
