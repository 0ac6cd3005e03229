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
