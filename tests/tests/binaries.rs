//! The real binaries: SIGTERM drains and flushes; the `query` CLI prints tables, JSON and CSV and fails clearly; the
//! collector runs without transparent huge pages.

mod helpers;
use helpers::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_everything_accepted_and_the_cli_reads_it() {
    let (_d, dir) = tempdir();
    let (mut child, base) = spawn_collector_bin(&dir, &[]).await;
    let client = reqwest::Client::new();
    for i in 0..300 {
        let (device, lcp) = if i % 3 == 0 {
            ("phone", 3000.0 + i as f64)
        } else {
            ("desktop", 1000.0 + i as f64)
        };
        let body = beacon_json(
            "shop",
            &format!("https://shop.example/checkout?step={i}"),
            Some("42"),
            "navigate",
            &[("LCP", lcp), ("INP", 100.0)],
        );
        let r = client
            .post(format!("{base}/v1/beacon"))
            .header("user-agent", ua_for(device))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    // Immediately, before the once-a-second flush: SIGTERM must still store all of it.
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().await.unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    let (mut child, base) = spawn_collector_bin(&dir, &[]).await;
    let out = Command::new(bin_path("query"))
        .args([
            "p75",
            "--site",
            "shop",
            "--metric",
            "LCP",
            "--by",
            "page,device",
            "--server",
            &base,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("shop LCP from "), "{table}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["PAGE", "DEVICE", "P75", "N", "GOOD", "NI", "POOR"]
    );
    // Desktop: LCP 1001..1299 except multiples of 3 → 200 values; p75 is the 150th smallest.
    let desktop: Vec<f64> = (0..300)
        .filter(|i| i % 3 != 0)
        .map(|i| 1000.0 + i as f64)
        .collect();
    let phone: Vec<f64> = (0..300)
        .filter(|i| i % 3 == 0)
        .map(|i| 3000.0 + i as f64)
        .collect();
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            "/checkout",
            "desktop",
            &format!("{}", exact_quantile(&desktop, 0.75)),
            "200",
            "100.0%",
            "0.0%",
            "0.0%"
        ]
    );
    let p = exact_quantile(&phone, 0.75);
    let cols: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[3], cols[5]),
        ("/checkout", "phone", "100", "100.0%"),
        "{table}"
    );
    assert!(
        (cols[2].parse::<f64>().unwrap() - p).abs() <= p * 0.01,
        "phone p75 {} vs {p}",
        cols[2]
    );

    let out = Command::new(bin_path("query"))
        .args([
            "quantiles",
            "--site",
            "shop",
            "--metric",
            "INP",
            "--q",
            "0.5,0.99",
            "--format",
            "json",
            "--server",
            &base,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"][0]["n"], 300);
    assert_eq!(json["rows"][0]["quantiles"]["0.5"], 100.0);

    let out = Command::new(bin_path("query"))
        .args([
            "p75", "--site", "shop", "--metric", "LCP", "--by", "device", "--format", "csv",
            "--server", &base,
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().next(), Some("device,p75,n,good,ni,poor"));
    assert_eq!(csv.lines().count(), 3);

    // A refused query: non-zero exit with the server's message.
    let out = Command::new(bin_path("query"))
        .args([
            "p75", "--site", "shop", "--metric", "FID", "--server", &base,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("400") && err.contains("metric: unknown metric \"FID\""),
        "{err}"
    );

    child.kill().await.unwrap();
    // The collector is down: non-zero exit, and the message says so.
    let out = Command::new(bin_path("query"))
        .args([
            "p75", "--site", "shop", "--metric", "LCP", "--server", &base,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach the collector at"), "{err}");
}

/// The collector turns transparent huge pages off for its process, whatever the host's setting: a page fault that
/// zeroed 2 MiB on a request thread stalled its connections for milliseconds (docs/benchmarks.md).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_collector_runs_without_transparent_huge_pages() {
    let (_d, dir) = tempdir();
    let (child, _base) = spawn_collector_bin(&dir, &[]).await;
    let pid = child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("Linux 5.0 or later reports THP_enabled");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// Scheduling policy (0 normal, 5 idle) of each of a process's threads, by thread name.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the name's closing parenthesis start at field 3; the policy is field 41.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((comm.trim().to_string(), rest[41 - 3].parse().unwrap()));
    }
    out
}

/// The embedded store's threads run at idle CPU priority, where the collector may raise them back (it probes at
/// start-up; this test probes the same way, as the same user), and the request path at normal priority; with
/// `--store-priority normal` nothing is lowered. Beacons are stored either way.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_store_threads_run_at_idle_priority_and_the_request_path_at_normal() {
    use collector::store_priority::{StorePriority, StorePriorityMode};
    let lowering = StorePriority::new(StorePriorityMode::Idle).lowering();
    let (_d, dir) = tempdir();
    for (mode, lowered) in [("idle", lowering), ("normal", false)] {
        let data = dir.join(mode);
        let (mut child, base) = spawn_collector_bin(&data, &["--store-priority", mode]).await;
        let policies = thread_policies(child.id().expect("running"));
        for name in ["store-feed", "embedded-writer"] {
            let got: Vec<i64> = policies
                .iter()
                .filter(|(n, _)| n == name)
                .map(|p| p.1)
                .collect();
            assert_eq!(
                got,
                [if lowered { 5 } else { 0 }],
                "{mode}: {name} in {policies:?}"
            );
        }
        for (name, policy) in &policies {
            if name.starts_with("connections-")
                || name == "tokio-rt-worker"
                || name == "spool-syncer"
            {
                assert_eq!(*policy, 0, "{mode}: {name} runs at normal priority");
            }
        }
        assert!(policies.iter().any(|(n, _)| n.starts_with("connections-")));
        let client = reqwest::Client::new();
        for i in 0..20 {
            let body = beacon_json(
                "prio",
                &format!("https://prio.example/p{i}"),
                None,
                "navigate",
                &[("LCP", 1000.0 + i as f64)],
            );
            let r = client
                .post(format!("{base}/v1/beacon"))
                .header("user-agent", DESKTOP_UA)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 204);
        }
        let mut n = 0;
        for _ in 0..100 {
            let v: serde_json::Value = client
                .get(format!("{base}/v1/p75?site=prio&metric=LCP"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            n = v["rows"][0]["n"].as_u64().unwrap_or(0);
            if n == 20 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(n, 20, "{mode}: stored and queryable");
        child.kill().await.unwrap();
    }
}

#[test]
fn collector_refuses_bad_flags_and_a_port_in_use() {
    let out = Command::new(bin_path("collector"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    // A typo must not start thousands of threads.
    let out = Command::new(bin_path("collector"))
        .args(["--connection-threads", "5000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--connection-threads") && err.contains("0..=256"),
        "{err}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(bin_path("collector"))
        .args(["--listen", &addr, "--data-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
