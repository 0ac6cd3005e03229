//! `loadtest run --slow-log` (every beacon at least `--slow-ms` slow, with its intended send time and service time)
//! and `--warmup`, against the real bench sink over loopback; and the flags `run` refuses.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink() -> (Sink, u16) {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["bench-sink", "--listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("bench-sink starts");
    let sink = Sink(child);
    common::wait_for_port(port, Duration::from_secs(10), "the sink");
    (sink, port)
}

/// Runs 2,000 beacons at 4,000/s with `extra` flags; returns the JSON report and the slow log's lines.
fn run(
    port: u16,
    slow_ms: &str,
    extra: &[&str],
    log: &std::path::Path,
) -> (serde_json::Value, Vec<(f64, f64)>) {
    let json = common::json_output(
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args([
                "run",
                "--target",
                &format!("http://127.0.0.1:{port}"),
                "--rate",
                "4000",
                "--count",
                "2000",
                "--connections",
                "4",
                "--pool",
                "500",
                "--no-progress",
                "--format",
                "json",
                "--slow-log",
                log.to_str().unwrap(),
                "--slow-ms",
                slow_ms,
            ])
            .args(extra),
    );
    let lines = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<f64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f.len(), 3, "due, latency, service: {l}");
            // Latency runs from the due time or the send, whichever came first: never less than the service time.
            assert!(f[2] > 0.0 && f[2] <= f[1], "{l}");
            (f[0], f[1])
        })
        .collect();
    (json, lines)
}

#[test]
fn slow_log_lists_every_beacon_over_the_threshold_in_send_order() {
    let (_sink, port) = start_sink();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("slow.txt");

    // Threshold 0: every beacon is listed, in intended-send order, each at most as late as the slowest reported.
    let (json, all) = run(port, "0", &[], &log);
    assert_eq!(json["run"]["completed"], 2000, "{json:#}");
    assert_eq!(all.len(), 2000);
    assert!(
        all.windows(2).all(|w| w[0].0 <= w[1].0),
        "not in send order"
    );
    // 2,000 beacons at 4,000/s are due over half a second; none is due before the start.
    let (first, last) = (all[0].0, all[all.len() - 1].0);
    assert!((0.0..1.0).contains(&first), "first due at {first} ms");
    assert!((450.0..2000.0).contains(&last), "last due at {last} ms");
    let max = json["run"]["latency_ms"]["max"].as_f64().unwrap();
    assert!(all.iter().all(|&(_, l)| l > 0.0 && l <= max + 0.01));

    // A threshold above the slowest beacon of a new run lists none; one just under the slowest lists it.
    let (json, none) = run(port, "60000", &[], &log);
    assert_eq!(json["run"]["completed"], 2000);
    assert!(none.is_empty(), "{none:?}");
    let (json, some) = run(port, "0.5", &[], &log);
    let over = some.iter().filter(|&&(_, l)| l >= 0.5).count();
    assert_eq!(
        over,
        some.len(),
        "every listed beacon is at least 0.5 ms slow"
    );
    let slowest = json["run"]["latency_ms"]["max"].as_f64().unwrap();
    assert_eq!(
        some.is_empty(),
        slowest < 0.5,
        "max {slowest} ms, {} listed",
        some.len()
    );
}

#[test]
fn the_warm_up_is_sent_and_counted_but_not_timed() {
    let (_sink, port) = start_sink();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("slow.txt");
    // The first quarter second at 4,000/s: beacons 0 to 999 are due in it.
    let (json, timed) = run(port, "0", &["--warmup", "0.25"], &log);
    assert_eq!(json["run"]["completed"], 2000, "{json:#}");
    assert_eq!(json["run"]["accepted"], 2000, "{json:#}");
    assert_eq!(json["run"]["warmup_requests"], 1000, "{json:#}");
    assert_eq!(timed.len(), 1000);
    // A beacon may go out up to 0.1 ms before it is due, and is then timed from its send.
    assert!(timed.iter().all(|&(at, _)| at >= 249.8), "{:?}", timed[0]);

    // A warm-up as long as the run would leave nothing to measure.
    refused(
        &[
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "1",
            "--warmup",
            "1",
        ],
        "--warmup must be shorter",
    );
}

#[test]
fn slow_ms_without_a_log_is_refused() {
    refused(
        &[
            "--target",
            "http://127.0.0.1:9",
            "--count",
            "1",
            "--slow-ms",
            "3",
        ],
        "--slow-log",
    );
}

#[test]
fn a_clickhouse_password_that_cannot_be_a_header_is_refused() {
    // Sent raw, a line break would start a header of the password's choosing.
    refused(
        &[
            "--target",
            "http://127.0.0.1:9",
            "--count",
            "1",
            "--clickhouse-table",
            "t",
            "--clickhouse-password",
            "a\r\nX-Injected: 1",
        ],
        "--clickhouse-password must be printable",
    );
}

/// `loadtest run` with `args` fails before sending anything, naming `why` on stderr.
fn refused(args: &[&str], why: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("run")
        .args(args)
        .output()
        .expect("loadtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}
