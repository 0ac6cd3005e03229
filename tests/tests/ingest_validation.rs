//! Every bad input gets a clear JSON error, and nothing from a refused beacon is stored.

mod helpers;
use helpers::*;

const GOOD: &str = r#"{"v":1,"site":"demo","url":"https://shop.example/products/123?utm_source=x#top","release":"2026.11.2","nav":"navigate","metrics":[{"name":"LCP","value":2310.5,"id":"v1-1732430000000-123"},{"name":"INP","value":180},{"name":"CLS","value":0.031},{"name":"FCP","value":900},{"name":"TTFB","value":120}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn bad_beacons_are_refused_with_a_reason_and_store_nothing() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    let good_lcp_last = r#"{"name":"TTFB","value":120}]}"#;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "body: malformed JSON"),
        (
            GOOD.replace(r#""v":1"#, r#""v":2"#),
            400,
            "v: unsupported wire version 2",
        ),
        (GOOD.replace(r#""v":1,"#, ""), 400, "v: missing"),
        (GOOD.replace(r#""site":"demo","#, ""), 400, "site: missing"),
        (
            GOOD.replace(
                r#""url":"https://shop.example/products/123?utm_source=x#top","#,
                "",
            ),
            400,
            "url: missing",
        ),
        (
            GOOD.replace(r#""name":"INP""#, r#""name":"FID""#),
            400,
            "metrics[1].name: unknown metric \"FID\"",
        ),
        (
            GOOD.replace(r#""value":180"#, r#""value":-1"#),
            400,
            "metrics[1].value: -1 is out of range for INP",
        ),
        (
            GOOD.replace(r#""value":180"#, r#""value":NaN"#),
            400,
            "body: malformed JSON",
        ),
        (
            GOOD.replace(r#""value":180"#, r#""value":3600001"#),
            400,
            "metrics[1].value: 3600001 is out of range",
        ),
        (
            GOOD.replace(r#""value":0.031"#, r#""value":1000"#),
            400,
            "metrics[2].value: 1000 is out of range for CLS",
        ),
        (
            GOOD.replace(r#""nav":"navigate""#, r#""nav":"warp""#),
            400,
            "nav: unknown navigation type",
        ),
        (
            GOOD.replace(good_lcp_last, r#"{"name":"LCP","value":1}]}"#),
            400,
            "metrics[4].name: LCP appears more than once",
        ),
        (
            format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(70_000)),
            413,
            "body: larger than 65536 bytes",
        ),
    ];
    for (body, status, want) in &cases {
        let r = app.post(body, DESKTOP_UA).await;
        assert_eq!(r.status().as_u16(), *status, "{want}");
        let json: serde_json::Value = r.json().await.unwrap();
        let msg = json["error"].as_str().expect("error field");
        assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
    }
    // A wrong content type.
    let r = app
        .client
        .post(format!("{}/v1/beacon", app.base))
        .header("content-type", "image/png")
        .body(GOOD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .starts_with("content-type:"));

    // One good beacon as a marker, then nothing else may show up: not in the store, not in /v1/recent.
    assert_eq!(app.post(GOOD, DESKTOP_UA).await.status().as_u16(), 204);
    for metric in ["LCP", "INP", "CLS", "FCP", "TTFB"] {
        let body = app.wait_for_total("demo", metric, 1).await;
        assert_eq!(body["rows"][0]["n"], 1);
    }
    let (_, recent) = app.get_json("/v1/recent?site=demo&limit=100").await;
    assert_eq!(recent["samples"].as_array().unwrap().len(), 5, "{recent}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_beacon_is_accepted_as_text_plain_or_json_and_shown_exactly() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    let r = app.post(GOOD, PHONE_UA).await;
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = app
        .client
        .post(format!("{}/v1/beacon", app.base))
        .header("content-type", "application/json")
        .header("user-agent", TABLET_UA)
        .body(GOOD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, recent) = app.get_json("/v1/recent?site=demo&limit=10").await;
    assert_eq!(status, 200);
    let s = recent["samples"].as_array().unwrap();
    assert_eq!(s.len(), 10);
    // Newest first: the tablet beacon's TTFB.
    assert_eq!(s[0]["metric"], "TTFB");
    assert_eq!(s[0]["device"], "tablet");
    assert_eq!(s[9]["metric"], "LCP");
    assert_eq!(s[9]["value"], 2310.5);
    assert_eq!(s[9]["device"], "phone");
    assert_eq!(s[9]["page"], "/products/:id");
    assert_eq!(s[9]["path"], "/products/123");
    assert_eq!(s[9]["release"], "2026.11.2");
    assert_eq!(s[9]["id"], "v1-1732430000000-123");
    assert!(
        !recent.to_string().contains("utm_source"),
        "query strings are never kept"
    );
    let (status, err) = app.get_json("/v1/recent?limit=10").await;
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (400, "site: missing")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_errors_are_400_with_the_parameter_named() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    for (q, want) in [
        (
            "/v1/p75?site=demo&metric=FID",
            "metric: unknown metric \"FID\"",
        ),
        (
            "/v1/p75?site=demo&metric=LCP&by=page,country",
            "by: unknown key \"country\"",
        ),
        (
            "/v1/p75?site=demo&metric=LCP&from=last-week",
            "from: \"last-week\" is not an RFC 3339 time",
        ),
        ("/v1/p75?site=demo", "metric: missing"),
        (
            "/v1/quantiles?site=demo&metric=LCP&q=0.5,1.5",
            "q: quantile \"1.5\" must be",
        ),
    ] {
        let (status, body) = app.get_json(q).await;
        assert_eq!(status, 400, "{q}");
        assert!(
            body["error"].as_str().unwrap().starts_with(want),
            "{q}: {body}"
        );
    }
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    app.stop().await;
}
