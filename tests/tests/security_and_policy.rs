//! Locked down: security headers everywhere, query tokens, origins, unknown sites, rate limits, trusted proxies,
//! bots, sampling, gzip bombs, slow clients, the admin listener, and policy reload on SIGHUP.

mod helpers;
use collector::telemetry::metrics::{Reject, Shed};
use helpers::*;
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn good(site: &str) -> String {
    beacon_json(
        site,
        "https://shop.example/p/1",
        None,
        "navigate",
        &[("LCP", 1200.0)],
    )
}

fn token_policy() -> String {
    let h1 = collector::security::auth::token_hash("s3cret");
    let h2 = collector::security::auth::token_hash("all-sites");
    format!(
        "[[tokens]]\nname = \"demo-only\"\nsha256 = \"{h1}\"\nsites = [\"demo\"]\n\n[[tokens]]\nname = \"ops\"\nsha256 = \"{h2}\"\nsites = [\"*\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_carries_security_headers_and_no_server_banner() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    let c = &app.client;
    // An accepted beacon's 204 is bare: no body, so nothing for the document headers to protect; CORS for `fetch`
    // clients; no request id (nothing is logged under it).
    let accepted = c
        .post(format!("{}/v1/beacon", app.base))
        .header("user-agent", DESKTOP_UA)
        .body(good("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 204);
    let names: Vec<&str> = accepted.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["access-control-allow-origin", "date"],
        "{:?}",
        accepted.headers()
    );
    let responses = vec![
        c.post(format!("{}/v1/beacon", app.base))
            .header("user-agent", DESKTOP_UA)
            .body("{")
            .send()
            .await
            .unwrap(),
        // The beacon route's preflight and its 405 (it is served outside the router's middleware).
        c.request(reqwest::Method::OPTIONS, format!("{}/v1/beacon", app.base))
            .send()
            .await
            .unwrap(),
        c.get(format!("{}/v1/beacon", app.base))
            .send()
            .await
            .unwrap(),
        c.get(format!("{}/v1/p75?site=demo&metric=LCP", app.base))
            .send()
            .await
            .unwrap(),
        c.get(format!("{}/v1/p75?site=demo", app.base))
            .send()
            .await
            .unwrap(),
        c.get(format!(
            "{}/v1/quantiles?site=demo&metric=LCP&q=0.5",
            app.base
        ))
        .send()
        .await
        .unwrap(),
        c.get(format!("{}/v1/recent?site=demo", app.base))
            .send()
            .await
            .unwrap(),
        c.get(format!("{}/healthz", app.base)).send().await.unwrap(),
        c.get(format!("{}/readyz", app.base)).send().await.unwrap(),
        c.get(format!("{}/no/such/route", app.base))
            .send()
            .await
            .unwrap(),
    ];
    for r in responses {
        let h = r.headers();
        let url = r.url().to_string();
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{url}");
        assert_eq!(h["x-frame-options"], "DENY", "{url}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{url}"
        );
        assert_eq!(h["cache-control"], "no-store", "{url}");
        assert!(h.get("server").is_none(), "{url}");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS unless configured: {url}"
        );
    }
    // The admin listener serves /metrics; the public one does not.
    let r = c.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let text = c
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("fieldvitals_beacons_accepted_total 1"),
        "{text}"
    );
    assert!(text.contains("fieldvitals_beacons_rejected_total{reason=\"invalid\"} 1"));
    // The beacon's 204 and its preflight's; the invalid beacon's 400 and the GET's 405.
    assert!(
        text.contains("fieldvitals_http_requests_total{route=\"/v1/beacon\",class=\"2xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("fieldvitals_http_requests_total{route=\"/v1/beacon\",class=\"4xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("fieldvitals_http_requests_total{route=\"other\",class=\"4xx\"} 1"),
        "{text}"
    );
    // The public /metrics attempt is a 404 of the beacon-file route.
    assert!(
        text.contains("fieldvitals_http_requests_total{route=\"/beacon.js\",class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("no/such/route"),
        "raw paths never become labels"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_api_needs_a_token_scoped_to_the_site() {
    let d = tempfile::tempdir().unwrap();
    let app = spawn_with_policy(
        d.path(),
        &format!("hsts = true\n{}", token_policy()),
        |_| {},
    )
    .await;
    let accepted = app.post(&good("demo"), DESKTOP_UA).await;
    assert_eq!(accepted.status().as_u16(), 204, "beacons stay public");
    assert_eq!(
        accepted.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains",
        "the bare 204 still carries HSTS when it is configured"
    );
    assert_eq!(
        app.post(&good("other"), DESKTOP_UA).await.status().as_u16(),
        204
    );
    let get = |path: &str, token: Option<&str>| {
        let mut r = app.client.get(format!("{}{path}", app.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = get("/v1/p75?site=demo&metric=LCP", None).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "authorization: missing bearer token"
    );
    let r = get("/v1/p75?site=demo&metric=LCP", Some("wrong"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "authorization: invalid token"
    );
    let r = get("/v1/p75?site=other&metric=LCP", Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = get("/v1/recent?site=other", Some("s3cret")).await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "recent samples are data too");
    assert_eq!(
        get("/v1/p75?site=demo&metric=LCP", Some("s3cret"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get("/v1/p75?site=other&metric=LCP", Some("all-sites"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get("/healthz", None).await.unwrap().status().as_u16(),
        200,
        "health stays public"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_serve_an_open_query_api_beyond_loopback() {
    let d = tempfile::tempdir().unwrap();
    let mut config = collector::Config::for_tests(d.path().join("data"));
    config.listen = "0.0.0.0:0".parse().unwrap();
    let err = collector::Application::build(config.clone())
        .await
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        err.contains("refusing to serve the query API on 0.0.0.0:0 without tokens"),
        "{err}"
    );
    let file = d.path().join("p.toml");
    std::fs::write(&file, token_policy()).unwrap();
    config.policy_file = Some(file);
    assert!(
        collector::Application::build(config).await.is_ok(),
        "with tokens it starts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origins_unknown_sites_rate_limits_and_trusted_proxies() {
    let d = tempfile::tempdir().unwrap();
    let policy = r#"
allow_unknown_sites = false
trusted_proxies = ["127.0.0.1/32"]
[sites.demo]
allowed_origins = ["https://shop.example"]
rate_limit = { per_second = 0.01, burst = 3 }
[sites.open]
"#;
    let app = spawn_with_policy(d.path(), policy, |_| {}).await;
    let post = |site: &str, origin: Option<&str>, xff: Option<&str>| {
        let mut r = app
            .client
            .post(format!("{}/v1/beacon", app.base))
            .header("user-agent", DESKTOP_UA)
            .body(good(site));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        r.send()
    };
    let r = post("demo", Some("https://evil.example"), None)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "origin: not allowed to send beacons for this site"
    );
    let r = post("nosuch", None, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "site: not configured on this collector"
    );
    assert_eq!(
        post("open", Some("https://anything.example"), None)
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    // Burst of 3 per client: the 4th is 429 with Retry-After; another client (via the trusted proxy) is fine.
    for _ in 0..3 {
        assert_eq!(
            post("demo", Some("https://shop.example"), Some("203.0.113.1"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            204
        );
    }
    let r = post("demo", Some("https://shop.example"), Some("203.0.113.1"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        post("demo", Some("https://shop.example"), Some("203.0.113.2"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(app.metrics.rejected(Reject::Origin), 1);
    assert_eq!(app.metrics.rejected(Reject::UnknownSite), 1);
    assert_eq!(app.metrics.rejected(Reject::RateLimited), 1);
    app.wait_for_total("demo", "LCP", 4).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_peers_cannot_dodge_limits_with_forwarded_for() {
    let d = tempfile::tempdir().unwrap();
    let app = spawn_with_policy(
        d.path(),
        "default_rate_limit = { per_second = 0.01, burst = 2 }",
        |_| {},
    )
    .await;
    let mut codes = Vec::new();
    for i in 0..4 {
        let r = app
            .client
            .post(format!("{}/v1/beacon", app.base))
            .header("user-agent", DESKTOP_UA)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .body(good("demo"))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [204, 204, 429, 429]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bots_are_dropped_and_counted_and_sampling_keeps_its_share() {
    let d = tempfile::tempdir().unwrap();
    let app = spawn_with_policy(d.path(), "[sites.half]\nsample_rate = 0.5\n", |_| {}).await;
    for ua in [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "HeadlessChrome/120.0 Safari",
        "",
    ] {
        assert_eq!(app.post(&good("demo"), ua).await.status().as_u16(), 204);
    }
    assert_eq!(app.metrics.shed_count(Shed::Bot), 3);
    assert_eq!(
        app.post(&good("demo"), PHONE_UA).await.status().as_u16(),
        204
    );
    app.wait_for_total("demo", "LCP", 1).await;
    for _ in 0..400 {
        assert_eq!(
            app.post(&good("half"), PHONE_UA).await.status().as_u16(),
            204
        );
    }
    let dropped = app.metrics.shed_count(Shed::SampledOut);
    // Binomial(400, 0.5): 6 standard deviations either side.
    assert!((140..=260).contains(&dropped), "dropped {dropped}");
    app.wait_for_total("half", "LCP", 400 - dropped).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_is_inflated_within_the_limit_and_a_bomb_is_413() {
    let (_d, dir) = tempdir();
    let app = TestApp::spawn(&dir).await;
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let send = |body: Vec<u8>, enc: &str| {
        app.client
            .post(format!("{}/v1/beacon", app.base))
            .header("user-agent", DESKTOP_UA)
            .header("content-encoding", enc)
            .body(body)
            .send()
    };
    assert_eq!(
        send(gz(good("demo").as_bytes()), "gzip")
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    // 50 MB of zeros inflate from ~50 KB: refused after reading 64 KiB.
    let bomb = gz(&vec![b' '; 50_000_000]);
    assert!(
        bomb.len() < 64 * 1024,
        "the bomb itself fits the wire limit: {}",
        bomb.len()
    );
    let r = send(bomb, "gzip").await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "body: larger than 65536 bytes"
    );
    let r = send(b"garbage".to_vec(), "gzip").await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = send(good("demo").into_bytes(), "br").await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    app.wait_for_total("demo", "LCP", 1).await;
    app.stop().await;
}

/// Sends the start of a request head that never completes; the collector must close the connection, unanswered,
/// within `limit`.
async fn assert_closed_within(s: &mut tokio::net::TcpStream, partial_head: &[u8], limit: Duration) {
    s.write_all(partial_head).await.unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the collector closed the stalled connection");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(start.elapsed() < limit, "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_oversized_headers_refused() {
    let d = tempfile::tempdir().unwrap();
    let app = spawn_with_policy(d.path(), "", |c| {
        c.header_timeout_secs = 1;
        c.request_timeout_secs = 1;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // A beacon whose body never finishes arriving is answered 408 with a JSON reason at the request deadline.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/beacon HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"v\":1,")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the test's own deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within 1 s"), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_closed_within(
        &mut s,
        b"POST /v1/beacon HTTP/1.1\r\nHost: x\r\nUser-Agent: slow",
        Duration::from_secs(3),
    )
    .await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-big", "a".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "still serving"
    );
    // The deadline is per request head, not per connection: a keep-alive connection that sends a request every
    // 300 ms is served for well over the 1 s limit…
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = std::time::Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "request {answered} on a busy connection"
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(answered >= 6, "{answered}");
    // …and when its next head then stalls, it is closed within the limit of its last answer.
    assert_closed_within(
        &mut s,
        b"GET /healthz HTTP/1.1\r\nHost: x",
        Duration::from_millis(1500),
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policy_and_a_broken_file_keeps_the_old_one() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("policy.toml");
    std::fs::write(&file, "").unwrap();
    let data = d.path().join("data");
    let (mut child, base) = spawn_collector_bin(&data, &["--config", file.to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{base}/v1/beacon"))
            .header("user-agent", DESKTOP_UA)
            .header("origin", "https://evil.example")
            .body(good("demo"))
            .send()
    };
    assert_eq!(post().await.unwrap().status().as_u16(), 204);
    std::fs::write(
        &file,
        "[sites.demo]\nallowed_origins = [\"https://shop.example\"]\n",
    )
    .unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let mut code = 0;
    for _ in 0..50 {
        code = post().await.unwrap().status().as_u16();
        if code == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, 403, "reloaded policy in force");
    std::fs::write(&file, "this is [not toml").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        post().await.unwrap().status().as_u16(),
        403,
        "a broken file keeps the previous policy"
    );
    child.kill().await.unwrap();
}
