//! Spawning the real collector on port 0 with a temporary data dir, and talking to it over HTTP.
#![allow(dead_code)]

use collector::{Application, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PHONE_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
pub const TABLET_UA: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
pub const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

pub fn ua_for(device: &str) -> &'static str {
    match device {
        "phone" => PHONE_UA,
        "tablet" => TABLET_UA,
        _ => DESKTOP_UA,
    }
}

pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub metrics: std::sync::Arc<collector::telemetry::metrics::Metrics>,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(data_dir: &Path) -> TestApp {
        TestApp::spawn_with(Config::for_tests(data_dir.to_path_buf())).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let app = Application::build(config).await.expect("app builds");
        let base = format!("http://{}", app.local_addr());
        let admin = format!("http://{}", app.admin_addr());
        let metrics = app.metrics();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        TestApp {
            base,
            admin,
            metrics,
            client: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop: drains and flushes.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .expect("app task")
            .expect("clean shutdown");
    }

    pub async fn post(&self, body: &str, ua: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/beacon", self.base))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("user-agent", ua)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path_and_query))
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        let media = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            media.starts_with("application/json"),
            "{path_and_query}: content-type {media:?}"
        );
        (status, r.json().await.expect("JSON body"))
    }

    /// Polls `/v1/p75` until the total `n` over all rows reaches `want` (the store flushes every second).
    pub async fn wait_for_total(&self, site: &str, metric: &str, want: u64) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self
                .get_json(&format!("/v1/p75?site={site}&metric={metric}"))
                .await;
            assert_eq!(status, 200, "{body}");
            let n: u64 = body["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["n"].as_u64().unwrap())
                .sum();
            if n >= want || tokio::time::Instant::now() > deadline {
                assert_eq!(n, want, "total n for {site} {metric}");
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("temp dir");
    let p = d.path().join("data");
    (d, p)
}

/// The exact nearest-rank quantile.
pub fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    v[rank - 1]
}

pub fn beacon_json(
    site: &str,
    url: &str,
    release: Option<&str>,
    nav: &str,
    metrics: &[(&str, f64)],
) -> String {
    let ms: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
        .collect();
    let mut b = serde_json::json!({"v": 1, "site": site, "url": url, "nav": nav, "metrics": ms});
    if let Some(r) = release {
        b["release"] = serde_json::json!(r);
    }
    b.to_string()
}

/// A binary of the workspace, built by `cargo build --bins` (`.ci/run` does that before the tests).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before these tests",
        path.display()
    );
    path
}

/// Starts the `collector` binary on a free loopback port; returns the child and its base URL.
pub async fn spawn_collector_bin(
    data_dir: &Path,
    extra: &[&str],
) -> (tokio::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(bin_path("collector"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .kill_on_drop(true)
        .spawn()
        .expect("collector starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("collector did not come up on {base}");
}

/// Spawns the in-process collector with a policy file holding `policy` (TOML) and tweaks to the config.
pub async fn spawn_with_policy(
    dir: &Path,
    policy: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let mut config = Config::for_tests(dir.join("data"));
    config.policy_file = Some(file);
    tweak(&mut config);
    TestApp::spawn_with(config).await
}
