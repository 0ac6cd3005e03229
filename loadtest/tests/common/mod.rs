//! Helpers the loadtest integration tests share: a free loopback port, waiting for a started server's port, and
//! running the binary for its JSON report.
#![allow(dead_code)] // each test file uses some of them

use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on now (the OS's pick, released for the server under test to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections; fails the test, naming `what`, after `within`.
pub fn wait_for_port(port: u16, within: Duration, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < within, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a `loadtest` command to its end, fails the test with its stderr unless it succeeded, and parses its JSON
/// report.
pub fn json_output(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = cmd.output().expect("loadtest runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
