//! Support for tests against a real ClickHouse server (this crate's and the collector's black-box tests).
//!
//! `FV_CLICKHOUSE_URL` names a running server (`.ci/run` and `.ci/clickhouse-tests.sh` start one); without it tests
//! skip, except under `CI=true`, where a missing server is a failure. [`PrivateServer`] starts a second server
//! through `.ci/clickhouse.sh` on ports of its own, for tests that stop and start it (an outage) without disturbing
//! the shared one.

use std::path::{Path, PathBuf};

/// The shared test server's URL, or `None` (after saying so) when tests should skip. Panics under `CI=true`.
pub fn server_url() -> Option<String> {
    match std::env::var("FV_CLICKHOUSE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("FV_CLICKHOUSE_URL is not set under CI=true: run the tests with .ci/run or .ci/clickhouse-tests.sh");
            }
            eprintln!("skipped: FV_CLICKHOUSE_URL is not set (.ci/clickhouse-tests.sh sets it)");
            None
        }
    }
}

/// A database name unique to this test and run.
pub fn fresh_db(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("fvt_{test}_{}_{nanos}", std::process::id())
}

/// A private server with its own data directory and loopback ports, stopped when dropped.
pub struct PrivateServer {
    dir: PathBuf,
    http: u16,
    tcp: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PrivateServer {
    /// A server (not started) keeping its data in `dir`.
    pub fn new(dir: &Path) -> PrivateServer {
        PrivateServer {
            dir: dir.to_path_buf(),
            http: free_port(),
            tcp: free_port(),
        }
    }

    /// Its HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn command(&self, verb: &str) -> std::process::Command {
        let mut c = std::process::Command::new("bash");
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/clickhouse.sh"))
            .arg(verb)
            .env("FV_CH_DIR", &self.dir)
            .env("FV_CH_HTTP_PORT", self.http.to_string())
            .env("FV_CH_TCP_PORT", self.tcp.to_string())
            .stdout(std::process::Stdio::null());
        c
    }

    async fn run(&self, verb: &str) {
        let mut c = self.command(verb);
        let status = tokio::task::spawn_blocking(move || c.status())
            .await
            .expect("clickhouse.sh task")
            .expect("bash runs");
        assert!(status.success(), "clickhouse.sh {verb} failed");
    }

    /// Starts it and waits until it answers.
    pub async fn start(&self) {
        self.run("start").await;
    }

    /// Stops it.
    pub async fn stop(&self) {
        self.run("stop").await;
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
    }
}
