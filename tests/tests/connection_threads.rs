//! The public listener serves the same answers whether its connections run on their own single-threaded runtimes
//! (`--connection-threads N`, the default being one per CPU) or on the shared worker pool (`0`): beacons on the
//! connection's thread, queries handed back to the pool (they block on the store).

mod helpers;

use helpers::{beacon_json, exact_quantile, tempdir, TestApp, DESKTOP_UA};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_and_queries_are_answered_alike_on_connection_threads_and_on_the_pool() {
    for threads in [0, 1, 3] {
        let (_d, dir) = tempdir();
        let mut config = collector::Config::for_tests(dir);
        config.connection_threads = threads;
        let app = TestApp::spawn_with(config).await;
        let site = format!("threads{threads}");
        // Separate clients, so the beacons arrive on several connections (dealt over the threads in turn).
        let clients: Vec<reqwest::Client> = (0..6).map(|_| reqwest::Client::new()).collect();
        let values: Vec<f64> = (0..60).map(|i| 1000.0 + 37.0 * i as f64).collect();
        let mut sends = tokio::task::JoinSet::new();
        for (i, v) in values.iter().enumerate() {
            let client = clients[i % clients.len()].clone();
            let body = beacon_json(
                &site,
                &format!("https://example.com/p{}", i % 3),
                None,
                "navigate",
                &[("LCP", *v)],
            );
            let url = format!("{}/v1/beacon", app.base);
            sends.spawn(async move {
                client
                    .post(url)
                    .header("content-type", "text/plain")
                    .header("user-agent", DESKTOP_UA)
                    .body(body)
                    .send()
                    .await
                    .expect("request sent")
                    .status()
                    .as_u16()
            });
        }
        let statuses = sends.join_all().await;
        assert!(
            statuses.iter().all(|&s| s == 204),
            "{threads}: {statuses:?}"
        );

        // A refusal is worded by the beacon route on the connection's thread.
        let bad = clients[0]
            .post(format!("{}/v1/beacon", app.base))
            .header("content-type", "text/plain")
            .header("user-agent", DESKTOP_UA)
            .body("{not json")
            .send()
            .await
            .expect("request sent");
        assert_eq!(bad.status().as_u16(), 400, "{threads}");
        let err: serde_json::Value = bad.json().await.expect("a JSON error body");
        assert!(err["error"].is_string(), "{threads}: {err}");

        // Queries run on the worker pool, and see every beacon.
        app.wait_for_total(&site, "LCP", values.len() as u64).await;
        let (status, body) = app
            .get_json(&format!("/v1/p75?site={site}&metric=LCP&by="))
            .await;
        assert_eq!(status, 200, "{body}");
        let p75 = body["rows"][0]["p75"].as_f64().expect("a p75");
        let exact = exact_quantile(&values, 0.75);
        assert!(
            (p75 - exact).abs() <= exact * 0.01,
            "{threads}: p75 {p75} against exact {exact}"
        );
        let (status, recent) = app.get_json(&format!("/v1/recent?site={site}")).await;
        assert_eq!(status, 200, "{recent}");
        app.stop().await;
    }
}
