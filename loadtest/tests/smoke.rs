//! A few seconds of real load against the real `collector` binary: `loadtest run --verify` passes on an honest
//! collector, and fails (exit 2, naming the group) when the collector holds one beacon the generator did not send.
//! Needs `cargo build --workspace --bins` first (`.ci/run` does it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn collector_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join("collector");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before these tests",
        path.display()
    );
    path
}

struct Collector {
    child: Child,
    port: u16,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn start_collector(dir: &Path) -> Collector {
    let port = common::free_port();
    let child = Command::new(collector_bin())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector starts");
    let c = Collector { child, port };
    common::wait_for_port(port, Duration::from_secs(20), "the collector");
    c
}

fn loadtest(port: u16, prefix: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--rate",
            "1500",
            "--count",
            "3000",
            "--connections",
            "8",
            "--pages",
            "300",
            "--site-prefix",
            prefix,
            "--verify",
            "--no-progress",
            "--format",
            "json",
        ])
        .output()
        .expect("loadtest runs");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "loadtest printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn verify_passes_on_the_real_collector_and_fails_on_tampered_data() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_collector(dir.path());

    let (code, json) = loadtest(c.port, "honest");
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["run"]["accepted"], 3000, "{json:#}");
    assert_eq!(json["run"]["statuses"]["204"], 3000, "{json:#}");
    assert_eq!(json["verify"]["ok"], true, "{json:#}");
    assert_eq!(json["verify"]["beacons"], 3000);
    assert!(
        json["verify"]["groups"].as_u64().unwrap() > 1000,
        "{json:#}"
    );
    let freshness = json["verify"]["freshness_s"].as_f64().unwrap();
    assert!(freshness < 5.0, "beacon-to-queryable {freshness} s");

    // One beacon the generator never sent, on the busiest group of the next run's shop.
    let body = r#"{"v":1,"site":"tampered-shop","url":"https://shop.example/","release":"2026.11.2","nav":"navigate","metrics":[{"name":"LCP","value":1234}]}"#;
    let answer = http(
        c.port,
        &format!(
            "POST /v1/beacon HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            loadtest::workload::USER_AGENTS[0].0,
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let (code, json) = loadtest(c.port, "tampered");
    assert_eq!(code, 2, "verify must fail: {json:#}");
    assert_eq!(json["verify"]["ok"], false);
    let examples = json["verify"]["examples"].to_string();
    assert!(
        examples.contains("count of tampered-shop LCP page=/ device=phone release=2026.11.2"),
        "{examples}"
    );
}
