//! Generated data with known exact values: every p75, quantile, n and share the API returns is checked against
//! the exact nearest-rank statistics of what was sent — then again after a restart on the same data dir.

mod helpers;
use helpers::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::collections::HashMap;

const PAGES: [&str; 5] = ["/", "/products/:id", "/checkout", "/search", "/blog/post"];
const DEVICES: [&str; 3] = ["phone", "tablet", "desktop"];
const METRICS: [&str; 5] = ["LCP", "INP", "CLS", "FCP", "TTFB"];

fn url_for(page: &str, i: usize) -> String {
    match page {
        "/products/:id" => format!("https://shop.example/products/{}?ref=x{i}", 1000 + i),
        p => format!("https://Shop.Example{p}?i={i}#frag"),
    }
}

/// Per (page, device, metric) a lognormal with its own median and spread.
fn distribution(p: usize, d: usize, m: &str) -> LogNormal<f64> {
    let (median, sigma): (f64, f64) = match m {
        "LCP" => (1800.0 + 400.0 * p as f64 + 600.0 * d as f64, 0.5),
        "INP" => (90.0 + 30.0 * p as f64 + 40.0 * d as f64, 0.7),
        "CLS" => (0.02 + 0.02 * p as f64 + 0.01 * d as f64, 1.0),
        "FCP" => (1000.0 + 200.0 * p as f64 + 300.0 * d as f64, 0.45),
        _ => (300.0 + 100.0 * p as f64 + 150.0 * d as f64, 0.6),
    };
    LogNormal::new(median.ln(), sigma).unwrap()
}

fn close(metric: &str, got: f64, exact: f64) -> bool {
    let abs: f64 = if metric == "CLS" { 0.001 } else { 1.0 };
    (got - exact).abs() <= abs.max(exact * 0.01)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p75_quantiles_counts_and_shares_match_exact_values_and_survive_restart() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261124);
    // 2,000 beacons × 5 metrics = 10,000 samples across 5 pages × 3 devices.
    let mut truth: HashMap<(String, String, String), Vec<f64>> = HashMap::new();
    let mut bodies = Vec::new();
    for i in 0..2000 {
        let p = rng.random_range(0..PAGES.len());
        let d = rng.random_range(0..DEVICES.len());
        let mut metrics = Vec::new();
        for m in METRICS {
            let max = if m == "CLS" { 100.0 } else { 3_600_000.0 };
            let v: f64 = distribution(p, d, m).sample(&mut rng).min(max);
            truth
                .entry((PAGES[p].into(), DEVICES[d].into(), m.into()))
                .or_default()
                .push(v);
            metrics.push((m, v));
        }
        bodies.push((
            beacon_json(
                "demo",
                &url_for(PAGES[p], i),
                Some("r1"),
                "navigate",
                &metrics,
            ),
            DEVICES[d],
        ));
    }
    let mut set = tokio::task::JoinSet::new();
    for chunk in bodies.chunks(250) {
        let chunk = chunk.to_vec();
        let (client, base) = (app.client.clone(), app.base.clone());
        set.spawn(async move {
            for (body, device) in chunk {
                let r = client
                    .post(format!("{base}/v1/beacon"))
                    .header("content-type", "text/plain")
                    .header("user-agent", ua_for(device))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 204);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    for m in METRICS {
        app.wait_for_total("demo", m, 2000).await;
    }

    let check = |app_answers: Vec<(String, serde_json::Value)>| {
        for (m, body) in app_answers {
            let rows = body["rows"].as_array().unwrap();
            assert_eq!(
                rows.len(),
                truth.keys().filter(|k| k.2 == m).count(),
                "{m}: one row per group"
            );
            let mut last_n = u64::MAX;
            for row in rows {
                let key = (
                    row["page"].as_str().unwrap().to_string(),
                    row["device"].as_str().unwrap().to_string(),
                    m.clone(),
                );
                let vals = &truth[&key];
                let n = row["n"].as_u64().unwrap();
                assert!(n <= last_n, "rows sorted by n descending");
                last_n = n;
                assert_eq!(n, vals.len() as u64, "{key:?} n");
                for (q, got) in row["quantiles"].as_object().unwrap() {
                    let exact = exact_quantile(vals, q.parse().unwrap());
                    let got = got.as_f64().unwrap();
                    assert!(
                        close(&m, got, exact),
                        "{key:?} q{q}: got {got}, exact {exact}"
                    );
                }
                let (good_t, poor_t) = match m.as_str() {
                    "LCP" => (2500.0, 4000.0),
                    "INP" => (200.0, 500.0),
                    "CLS" => (0.1, 0.25),
                    "FCP" => (1800.0, 3000.0),
                    _ => (800.0, 1800.0),
                };
                let good = vals.iter().filter(|v| **v <= good_t).count() as f64 / vals.len() as f64;
                let poor = vals.iter().filter(|v| **v > poor_t).count() as f64 / vals.len() as f64;
                assert!(
                    (row["good"].as_f64().unwrap() - good).abs() < 1e-12,
                    "{key:?} good share"
                );
                assert!(
                    (row["poor"].as_f64().unwrap() - poor).abs() < 1e-12,
                    "{key:?} poor share"
                );
                assert!(
                    (row["ni"].as_f64().unwrap() - (1.0 - good - poor)).abs() < 1e-9,
                    "{key:?} ni share"
                );
            }
        }
    };

    let mut answers = Vec::new();
    let mut p75s = Vec::new();
    for m in METRICS {
        let (status, body) = app
            .get_json(&format!(
                "/v1/quantiles?site=demo&metric={m}&by=page,device&q=0.5,0.75,0.9,0.95,0.99"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        answers.push((m.to_string(), body));
        let (status, body) = app
            .get_json(&format!("/v1/p75?site=demo&metric={m}&by=page,device"))
            .await;
        assert_eq!(status, 200);
        for row in body["rows"].as_array().unwrap() {
            let key = (
                row["page"].as_str().unwrap().to_string(),
                row["device"].as_str().unwrap().to_string(),
                m.to_string(),
            );
            let exact = exact_quantile(&truth[&key], 0.75);
            let got = row["p75"].as_f64().unwrap();
            assert!(
                close(m, got, exact),
                "{key:?} p75: got {got}, exact {exact}"
            );
        }
        p75s.push(body);
    }
    check(answers.clone());

    // Filters: one page on phones only.
    let (_, one) = app
        .get_json("/v1/p75?site=demo&metric=LCP&page=/checkout&device=phone")
        .await;
    let vals = &truth[&(
        "/checkout".to_string(),
        "phone".to_string(),
        "LCP".to_string(),
    )];
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["n"].as_u64().unwrap(), vals.len() as u64);
    assert!(
        one["rows"][0].get("page").is_none(),
        "not grouped by page, so no page column"
    );
    assert!(close(
        "LCP",
        one["rows"][0]["p75"].as_f64().unwrap(),
        exact_quantile(vals, 0.75)
    ));
    let (_, by_release) = app
        .get_json("/v1/p75?site=demo&metric=LCP&by=release,nav")
        .await;
    assert_eq!(by_release["rows"][0]["release"], "r1");
    assert_eq!(by_release["rows"][0]["nav"], "navigate");
    assert_eq!(by_release["rows"][0]["n"], 2000);

    // Restart on the same data dir: every answer is unchanged.
    app.stop().await;
    let app = TestApp::spawn(&dir).await;
    for (i, m) in METRICS.iter().enumerate() {
        let (_, body) = app
            .get_json(&format!(
                "/v1/quantiles?site=demo&metric={m}&by=page,device&q=0.5,0.75,0.9,0.95,0.99"
            ))
            .await;
        assert_eq!(body["rows"], answers[i].1["rows"], "{m} after restart");
        let (_, body) = app
            .get_json(&format!("/v1/p75?site=demo&metric={m}&by=page,device"))
            .await;
        assert_eq!(body["rows"], p75s[i]["rows"], "{m} p75 after restart");
    }
    app.stop().await;
}
