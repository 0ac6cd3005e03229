//! Operators' commands: online backup and restore give identical answers; `config show` redacts secrets.

mod helpers;
use helpers::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn online_backup_restores_into_a_fresh_dir_with_identical_answers() {
    let d = tempfile::tempdir().unwrap();
    let (data, backup, restored) = (
        d.path().join("data"),
        d.path().join("backup"),
        d.path().join("restored"),
    );
    let app = TestApp::spawn(&data).await;
    for i in 0..200 {
        let body = beacon_json(
            "shop",
            &format!("https://shop.example/p/{}", i % 7),
            Some(if i % 2 == 0 { "a" } else { "b" }),
            "navigate",
            &[("LCP", 800.0 + 13.0 * i as f64), ("CLS", 0.001 * i as f64)],
        );
        assert_eq!(
            app.post(&body, ua_for(["phone", "tablet", "desktop"][i % 3]))
                .await
                .status()
                .as_u16(),
            204
        );
    }
    app.wait_for_total("shop", "LCP", 200).await;
    // Online: the collector keeps running while the backup is taken.
    let out = Command::new(bin_path("collector"))
        .args(["--data-dir"])
        .arg(&data)
        .args(["backup", "--to"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up "));
    let queries = [
        "/v1/p75?site=shop&metric=LCP&by=page,device,release",
        "/v1/quantiles?site=shop&metric=CLS&by=device&q=0.5,0.9,0.99",
        "/v1/p75?site=shop&metric=LCP",
    ];
    let mut before = Vec::new();
    for q in queries {
        before.push(app.get_json(q).await.1["rows"].clone());
    }
    app.stop().await;

    let out = Command::new(bin_path("collector"))
        .args(["--data-dir"])
        .arg(&restored)
        .args(["restore", "--from"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = TestApp::spawn(&restored).await;
    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(&app.get_json(q).await.1["rows"], want, "{q}");
    }
    app.stop().await;

    // Restoring over an existing store needs --force; a non-backup is refused; both exit non-zero with a reason.
    let out = Command::new(bin_path("collector"))
        .args(["--data-dir"])
        .arg(&restored)
        .args(["restore", "--from"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
    let out = Command::new(bin_path("collector"))
        .args(["--data-dir"])
        .arg(&restored)
        .args(["restore", "--from"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a fieldvitals backup"));
    let out = Command::new(bin_path("collector"))
        .args(["--data-dir"])
        .arg(&data)
        .args(["backup", "--to"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(!out.status.success(), "never overwrite a backup");
}

#[test]
fn config_show_prints_the_effective_configuration_without_secrets() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("policy.toml");
    let hash = collector::security::auth::token_hash("super-secret-token");
    std::fs::write(&file, format!("[sites.demo]\nsample_rate = 0.25\n[[tokens]]\nname = \"grafana\"\nsha256 = \"{hash}\"\nsites = [\"demo\"]\n")).unwrap();
    let out = Command::new(bin_path("collector"))
        .env("FIELDVITALS_LISTEN", "127.0.0.1:9999")
        .args(["--config"])
        .arg(&file)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("listen = \"127.0.0.1:9999\""),
        "environment applies: {text}"
    );
    assert!(text.contains("[sites.demo]") && text.contains("sample_rate = 0.25"));
    assert!(text.contains("name = \"grafana\"") && text.contains("sha256 = \"<redacted>\""));
    assert!(!text.contains(&hash) && !text.contains("super-secret-token"));
    let out = Command::new(bin_path("collector"))
        .args(["--config", "/nonexistent/policy.toml", "config", "show"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy file /nonexistent/policy.toml"));
}

/// JSON logs: a flood of bad beacons gives one "beacon refused" event per reason (with its request id), not one per
/// beacon; every response carries a request id, and a proxy's id is kept.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_logged_once_per_reason_with_request_ids() {
    let (_d, dir) = tempdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(bin_path("collector"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "collector came up");
    let mut first_id = None;
    for i in 0..50 {
        let r = client
            .post(format!("{base}/v1/beacon"))
            .header("user-agent", DESKTOP_UA)
            .header("x-request-id", format!("proxy-{i}"))
            .body(r#"{"v":1,"site":"s","url":"https://x.example/","metrics":[{"name":"XYZ","value":1}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(
            r.headers()["x-request-id"].to_str().unwrap(),
            format!("proxy-{i}")
        );
        first_id.get_or_insert(format!("proxy-{i}"));
    }
    // An id is generated when none (or an unsafe one) comes in.
    let r = client
        .get(format!("{base}/healthz"))
        .header("x-request-id", "bad id\twith tab")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty() && !generated.contains(' '));
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let refusals: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["message"] == "beacon refused")
        .collect();
    assert_eq!(refusals.len(), 1, "one event for 50 refusals:\n{logs}");
    assert_eq!(refusals[0]["reason"], "invalid");
    assert_eq!(refusals[0]["request_id"], first_id.unwrap().as_str());
    assert!(refusals[0]["error"]
        .as_str()
        .unwrap()
        .contains("metrics[0].name"));
}
