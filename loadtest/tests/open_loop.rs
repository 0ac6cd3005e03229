//! The open-loop engine (`loadtest run --rate`) against small servers over loopback whose answers take a known
//! time: a beacon that waits for a busy connection is timed from when it was due (no coordinated omission), and a
//! server that closes its connections after each answer still gets every beacon.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Serves `POST`s on a loopback port: each answer (204) goes `delay` after its request is in; with `close`, the
/// connection is closed after it. Stops after `connections` connections.
fn serve(delay: Duration, close: bool, connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(connections) {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || answer_all(s, delay, close));
        }
    });
    port
}

fn answer_all(mut s: TcpStream, delay: Duration, close: bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // A whole request: head, then Content-Length bytes of body.
        let whole = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    break end + 4 + len;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..whole);
        std::thread::sleep(delay);
        let answer: &[u8] = if close {
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        if s.write_all(answer).is_err() || close {
            return;
        }
    }
}

fn run(port: u16, args: &[&str]) -> serde_json::Value {
    common::json_output(
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args([
                "run",
                "--target",
                &format!("http://127.0.0.1:{port}"),
                "--pool",
                "100",
                "--warmup",
                "0",
                "--no-progress",
                "--format",
                "json",
            ])
            .args(args),
    )["run"]
        .clone()
}

#[test]
fn a_beacon_waiting_for_a_busy_connection_is_timed_from_when_it_was_due() {
    // One connection, answers after 50 ms, a beacon due every 10 ms: beacon k is due at 10k ms but can only go
    // when the one before is answered, at about 50k ms, and is answered at about 50(k+1) ms.
    let port = serve(Duration::from_millis(50), false, 1);
    let r = run(
        port,
        &["--rate", "100", "--count", "6", "--connections", "1"],
    );
    assert_eq!(r["statuses"]["204"], 6, "{r}");
    let lat = &r["latency_ms"];
    let service = &r["service_ms"];
    // The last: due at 50 ms, answered at about 300 ms.
    let max = lat["max"].as_f64().unwrap();
    assert!((245.0..400.0).contains(&max), "latency max {max} ms: {r}");
    // Each answer itself took the server's 50 ms, and no more than a scheduling hiccup beyond it.
    for p in ["p50", "max"] {
        let v = service[p].as_f64().unwrap();
        assert!((50.0..150.0).contains(&v), "service {p} {v} ms: {r}");
    }
    // The first went when it was due: its latency is its service time, the smallest of all.
    assert!(
        lat["p50"].as_f64().unwrap() > service["max"].as_f64().unwrap(),
        "{r}"
    );
}

#[test]
fn every_beacon_is_answered_when_the_server_closes_after_each_answer() {
    let port = serve(Duration::ZERO, true, 1_000);
    let r = run(
        port,
        &["--rate", "2000", "--count", "400", "--connections", "4"],
    );
    assert_eq!(r["statuses"]["204"], 400, "{r}");
    assert_eq!(r["completed"], 400, "{r}");
    assert_eq!(r["backlog"], 0, "{r}");
}

#[test]
fn beacons_split_over_threads_are_each_sent_once() {
    let port = serve(Duration::ZERO, false, 8);
    let r = common::json_output(Command::new(env!("CARGO_BIN_EXE_loadtest")).args([
        "--threads",
        "3",
        "run",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--rate",
        "5000",
        "--count",
        "1001",
        "--connections",
        "8",
        "--pool",
        "100",
        "--no-progress",
        "--format",
        "json",
    ]));
    assert_eq!(r["run"]["statuses"]["204"], 1001, "{r}");
    assert_eq!(r["run"]["completed"], 1001, "{r}");
}
