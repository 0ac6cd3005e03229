//! Durability and overload, black-box: `kill -9` under load loses no acknowledged beacon and counts none twice; a
//! full disk answers 503 "disk full" and recovers when space returns; a full spool sheds with 503 + Retry-After while
//! health and queries keep working.
//!
//! Every beacon here carries one LCP sample on a page of its own (`/k/<letters>`), so `/v1/p75?by=page` tells, beacon
//! by beacon, whether it was stored and how often.

mod helpers;
use helpers::*;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Beacons go to these sites in turn: every beacon has a page of its own, and one answer by page holds at most
/// 100,000 rows, which a fast machine's overload run alone can exceed for one site.
const SITES: [&str; 4] = ["rel", "rel-b", "rel-c", "rel-d"];

fn site_of(i: u64) -> &'static str {
    SITES[(i % SITES.len() as u64) as usize]
}

/// A page name per beacon, from letters that are not hex digits (numbers and hashes would collapse to `:id`).
fn page_of(i: u64) -> String {
    const L: &[u8] = b"ghijklmnopqrstuvwxyz";
    let mut s = String::from("/k/");
    let mut x = i;
    loop {
        s.push(L[(x % 20) as usize] as char);
        x /= 20;
        if x == 0 {
            break;
        }
    }
    s
}

fn body_of(i: u64) -> String {
    beacon_json(
        site_of(i),
        &format!("https://rel.example{}", page_of(i)),
        None,
        "navigate",
        &[("LCP", 1000.0 + (i % 1_000_000) as f64)],
    )
}

/// What the sender saw for one beacon.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Accepted,
    Refused(u16),
    NoAnswer,
}

async fn post_one(client: &reqwest::Client, base: &str, i: u64) -> Seen {
    match client
        .post(format!("{base}/v1/beacon"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", DESKTOP_UA)
        .body(body_of(i))
        .send()
        .await
    {
        Ok(r) if r.status().as_u16() == 204 => Seen::Accepted,
        Ok(r) => Seen::Refused(r.status().as_u16()),
        Err(_) => Seen::NoAnswer,
    }
}

/// Closed-loop senders: each posts its own beacons (ids `k * senders + t`) one after another until stopped or done.
struct Senders {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u64, Seen)>>>,
}

impl Senders {
    fn start(client: &reqwest::Client, base: &str, senders: u64, per_sender: u64) -> Senders {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..senders)
            .map(|t| {
                let (client, base, stop) = (client.clone(), base.to_string(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for k in 0..per_sender {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = k * senders + t;
                        seen.push((i, post_one(&client, &base, i).await));
                    }
                    seen
                })
            })
            .collect();
        Senders { stop, tasks }
    }

    /// Stops them and returns what each beacon got.
    async fn stop(self) -> HashMap<u64, Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = HashMap::new();
        for t in self.tasks {
            seen.extend(t.await.unwrap());
        }
        seen
    }
}

/// Stored count per page over every site, read through the query API (pages are unique across sites).
async fn stored_per_page(client: &reqwest::Client, base: &str) -> HashMap<String, u64> {
    let mut stored = HashMap::new();
    for site in SITES {
        let r = client
            .get(format!(
                "{base}/v1/p75?site={site}&metric=LCP&by=page&limit=100000"
            ))
            .send()
            .await
            .expect("query answered");
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["truncated"], false, "all rows of {site} returned");
        for row in body["rows"].as_array().unwrap() {
            let page = row["page"].as_str().unwrap().to_string();
            let n = row["n"].as_u64().unwrap();
            assert!(
                stored.insert(page.clone(), n).is_none(),
                "{page} answered for two sites"
            );
        }
    }
    stored
}

/// Waits until the store holds at least `want` samples (it flushes every second), then a little longer, so that a
/// double count would have time to show.
async fn settle(client: &reqwest::Client, base: &str, want: u64) -> HashMap<String, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored_per_page(client, base).await;
        if stored.values().sum::<u64>() >= want || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            return stored_per_page(client, base).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks exactly-once: every 204 stored once; a beacon whose answer was lost (the crash) stored at most once;
/// nothing refused stored; nothing stored that was never sent.
fn assert_exactly_once(seen: &HashMap<u64, Seen>, stored: &HashMap<String, u64>) {
    // The figures docs/reliability.md quotes (visible with --nocapture).
    eprintln!(
        "sent {}, acknowledged {}, refused {}, unanswered {}, stored {} (pages stored twice: {})",
        seen.len(),
        seen.values().filter(|s| **s == Seen::Accepted).count(),
        seen.values()
            .filter(|s| matches!(s, Seen::Refused(_)))
            .count(),
        seen.values().filter(|s| **s == Seen::NoAnswer).count(),
        stored.values().sum::<u64>(),
        stored.values().filter(|n| **n > 1).count()
    );
    let by_page: HashMap<String, Seen> = seen.iter().map(|(i, s)| (page_of(*i), *s)).collect();
    for (page, n) in stored {
        let s = by_page
            .get(page)
            .unwrap_or_else(|| panic!("stored page {page} was never sent"));
        assert!(*n <= 1, "{page} stored {n} times ({s:?})");
        assert!(
            !matches!(s, Seen::Refused(_)),
            "{page} was refused ({s:?}) but stored"
        );
    }
    let lost: Vec<&String> = by_page
        .iter()
        .filter(|(p, s)| **s == Seen::Accepted && !stored.contains_key(*p))
        .map(|(p, _)| p)
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged beacons are missing, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_beacon_and_counts_none_twice() {
    let (_d, dir) = tempdir();
    let (mut child, base) = spawn_collector_bin(&dir, &[]).await;
    let client = reqwest::Client::new();
    // Bounded: at most 5,000 beacons per sender.
    let senders = Senders::start(&client, &base, 16, 5_000);
    // Long enough for several flushes and spool checkpoints to happen before the crash.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let _ = child.wait().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = senders.stop().await;
    let acked = seen.values().filter(|s| **s == Seen::Accepted).count() as u64;
    assert!(
        acked > 200,
        "the load ran before the crash: {acked} accepted"
    );
    assert!(
        seen.values().any(|s| *s == Seen::NoAnswer),
        "the crash happened during the load"
    );

    let (_child, base) = spawn_collector_bin(&dir, &[]).await;
    let stored = settle(&client, &base, acked).await;
    assert_exactly_once(&seen, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_sheds_with_503_and_retry_after_and_recovers() {
    let (_d, dir) = tempdir();
    // A tiny spool: 64 KiB holds a few hundred beacons, so a burst fills it before the once-a-second checkpoint.
    let app = TestApp::spawn_with({
        let mut c = collector::Config::for_tests(dir.clone());
        c.spool_max_bytes = 64 << 10;
        c
    })
    .await;
    let senders = Senders::start(&app.client, &app.base, 32, 400);
    // While shedding, health and the query API still answer.
    let mut shed_seen = false;
    let mut retry_after = None;
    let mut probes = HashMap::new();
    for p in 0..100u64 {
        let i = 1_000_000 + p;
        let r = app
            .client
            .post(format!("{}/v1/beacon", app.base))
            .header("user-agent", DESKTOP_UA)
            .body(body_of(i))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        probes.insert(
            i,
            if status == 204 {
                Seen::Accepted
            } else {
                Seen::Refused(status)
            },
        );
        if status == 503 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().starts_with("overloaded"),
                "{body}"
            );
            shed_seen = true;
            let (status, _) = app.get_json("/healthz").await;
            assert_eq!(status, 200);
            let (status, _) = app
                .get_json(&format!("/v1/p75?site={}&metric=LCP", SITES[0]))
                .await;
            assert_eq!(status, 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = senders.stop().await;
    seen.extend(probes);
    let refused = seen.values().filter(|s| **s == Seen::Refused(503)).count();
    assert!(
        shed_seen && refused > 0,
        "the burst overflowed the spool ({refused} refused)"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(seen.values().all(|s| *s != Seen::NoAnswer));
    // The shed beacons are counted.
    let text = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("shed") && l.contains("overloaded") && !l.ends_with(" 0")),
        "shed beacons counted:\n{text}"
    );
    // Once stored, the spool has room again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut recovered = false;
    while tokio::time::Instant::now() < deadline {
        if post_one(&app.client, &app.base, 2_000_000).await == Seen::Accepted {
            seen.insert(2_000_000, Seen::Accepted);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "accepting again once the spool drained");
    let acked = seen.values().filter(|s| **s == Seen::Accepted).count() as u64;
    let stored = settle(&app.client, &app.base, acked).await;
    assert_exactly_once(&seen, &stored);
    app.stop().await;
}

/// A small tmpfs as the data dir, so "disk full" is real. Needs root (CI runs as root); it fails, never skips.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap().keep();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mounting a tmpfs failed: this test needs root to make a disk that fills up"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system holding `path` to the last byte; returns the filler file.
fn fill_disk(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    // Bounded by the tmpfs size.
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full_answers_503_says_why_and_resumes_when_space_returns() {
    let fs = Tmpfs::mount("16m");
    let data = fs.0.join("data");
    let (mut child, base) = spawn_collector_bin(&data, &[]).await;
    let client = reqwest::Client::new();
    let mut seen = HashMap::new();
    let mut i = 0u64;
    for _ in 0..50 {
        seen.insert(i, post_one(&client, &base, i).await);
        i += 1;
    }
    assert!(seen.values().all(|s| *s == Seen::Accepted));
    let filler = fill_disk(&fs.0);
    // Now the spool's next write fails: 503 with a body that says the disk is full (bounded tries).
    let mut refusal = None;
    for _ in 0..20_000 {
        let r = client
            .post(format!("{base}/v1/beacon"))
            .header("user-agent", DESKTOP_UA)
            .body(body_of(i))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 204 {
            seen.insert(i, Seen::Accepted);
            i += 1;
            continue;
        }
        seen.insert(i, Seen::Refused(status));
        i += 1;
        refusal = Some((status, r.json::<serde_json::Value>().await.unwrap()));
        break;
    }
    let (status, body) = refusal.expect("a full disk refuses beacons");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("disk"),
        "the error says the disk is full: {body}"
    );
    // Health still answers while the disk is full.
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Space returns: beacons are accepted again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut resumed = 0;
    while resumed < 50 && tokio::time::Instant::now() < deadline {
        let s = post_one(&client, &base, i).await;
        seen.insert(i, s);
        i += 1;
        if s == Seen::Accepted {
            resumed += 1;
        }
    }
    assert_eq!(resumed, 50, "accepting again after space returned");
    // Nothing acknowledged was lost, before, during or after.
    let acked = seen.values().filter(|s| **s == Seen::Accepted).count() as u64;
    let stored = settle(&client, &base, acked).await;
    assert_exactly_once(&seen, &stored);
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = child.wait().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Three times the rate the collector sustains, open loop: it keeps running, its memory stays bounded, health
/// answers, and every beacon it acknowledged is stored exactly once (what it could not take is refused or waits,
/// never lost after a 204).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_times_the_sustainable_rate_keeps_memory_bounded_and_loses_nothing() {
    let (_d, dir) = tempdir();
    let (mut child, base) = spawn_collector_bin(&dir, &[]).await;
    let pid = child.id().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    // The sustainable rate: 3 s flat out with 32 senders.
    let senders = Senders::start(&client, &base, 32, 100_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen = senders.stop().await;
    let sustainable = seen.values().filter(|s| **s == Seen::Accepted).count() as f64 / 3.0;
    assert!(sustainable > 50.0, "measured a rate: {sustainable}/s");

    // Open loop at three times that for 10 s: one request per tick whatever the answers do, at most 800 in flight
    // (the client's own bound, below a default limit of 1,024 open files; beyond it a beacon counts as not sent).
    let offered = 3.0 * sustainable;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(800));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = 10_000_000u64;
    let total = (offered * 10.0) as u64;
    let start = tokio::time::Instant::now();
    let mut not_sent = 0u64;
    let mut peak_rss = rss_kib(pid);
    let mut health_ok = 0;
    let mut next_probe = start;
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / offered);
        tokio::time::sleep_until(due).await;
        if tokio::time::Instant::now() >= next_probe {
            next_probe += Duration::from_secs(1);
            peak_rss = peak_rss.max(rss_kib(pid));
            let (client, base) = (client.clone(), base.clone());
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                client.get(format!("{base}/healthz")).send(),
            )
            .await;
            if matches!(r, Ok(Ok(resp)) if resp.status().as_u16() == 200) {
                health_ok += 1;
            }
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let (client, base, tx) = (client.clone(), base.clone(), tx.clone());
        let i = first + n;
        tokio::spawn(async move {
            let s = post_one(&client, &base, i).await;
            drop(permit);
            let _ = tx.send((i, s));
        });
    }
    drop(tx);
    while let Some((i, s)) = rx.recv().await {
        seen.insert(i, s);
    }
    peak_rss = peak_rss.max(rss_kib(pid));
    let acked_in_overload = seen
        .iter()
        .filter(|(i, s)| **i >= first && **s == Seen::Accepted)
        .count() as f64;
    assert!(
        acked_in_overload > 3.0 * sustainable,
        "the collector kept accepting under overload: {acked_in_overload} in 10 s at a sustainable {sustainable}/s"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the collector is still running"
    );
    assert!(
        health_ok >= 8,
        "health answered within 2 s in {health_ok} of ~10 probes"
    );
    assert!(
        peak_rss < 256 * 1024,
        "peak RSS {} MiB under three times the sustainable rate",
        peak_rss / 1024
    );
    let mut refused: HashMap<u16, u64> = HashMap::new();
    for s in seen.values() {
        if let Seen::Refused(code) = s {
            *refused.entry(*code).or_default() += 1;
        }
    }
    eprintln!(
        "sustainable {sustainable:.0}/s, offered {offered:.0}/s for 10 s, not sent (client bound) {not_sent}, refused by status {refused:?}, peak RSS {} MiB",
        peak_rss / 1024
    );
    let acked = seen.values().filter(|s| **s == Seen::Accepted).count() as u64;
    let stored = settle(&client, &base, acked).await;
    assert_exactly_once(&seen, &stored);
    let pid = pid.to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = child.wait().await;
}
