//! The machine's latency floor: a bare loopback TCP echo, paced open loop at a given rate, timed like a beacon run
//! (from each message's intended send time).
//!
//! Why: on a shared VM, the p99 of any server at a moderate open-loop rate includes stalls of the machine itself
//! (vCPU wake-ups, the host's scheduling). This probe does no HTTP, no parsing and no async runtime: one thread
//! paces and writes, one echoes, one reads. What it measures at the rate of a run is the lowest tail any server
//! could show on this machine at that moment, and the benchmark records it beside the half-rate runs.

use crate::run::{new_hist, Percentiles};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Bytes sent per message: about a beacon.js-shaped beacon with its HTTP headers.
pub const MESSAGE_BYTES: usize = 1024;

/// The result of a probe.
#[derive(Debug, Serialize)]
pub struct FloorReport {
    /// Messages per second asked for.
    pub target_rate: f64,
    /// Messages echoed.
    pub completed: u64,
    /// Seconds from the first intended send to the last echo.
    pub elapsed_s: f64,
    /// Round-trip percentiles in milliseconds, from each message's intended send time.
    pub latency_ms: Percentiles,
}

/// Sends `rate` messages per second for `duration` over one loopback connection to an echo thread and times
/// each round trip from its intended send time.
pub fn probe(rate: f64, duration: Duration) -> anyhow::Result<FloorReport> {
    anyhow::ensure!(
        rate > 0.0 && rate.is_finite(),
        "--rate must be a positive number"
    );
    let count = (rate * duration.as_secs_f64()).ceil() as u64;
    anyhow::ensure!(count >= 1, "--duration is too short for one message");
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    let echo = std::thread::Builder::new()
        .name("floor-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            let mut buf = vec![0u8; MESSAGE_BYTES];
            // Echo each message's first 8 bytes (its index), as a server answers a beacon with a short response.
            while s.read_exact(&mut buf).is_ok() {
                s.write_all(&buf[..8])?;
            }
            Ok(())
        })?;
    let mut tx = TcpStream::connect(addr)?;
    tx.set_nodelay(true)?;
    let mut rx = tx.try_clone()?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(10);
    let reader = std::thread::Builder::new()
        .name("floor-read".into())
        .spawn(move || -> std::io::Result<_> {
            let mut hist = new_hist();
            let mut idx = [0u8; 8];
            for _ in 0..count {
                rx.read_exact(&mut idx)?;
                let done = Instant::now();
                let intended = start + interval.mul_f64(u64::from_le_bytes(idx) as f64);
                let us = done.saturating_duration_since(intended).as_micros() as u64;
                hist.saturating_record(us.max(1));
            }
            Ok((hist, Instant::now()))
        })?;
    let mut msg = vec![b'x'; MESSAGE_BYTES];
    for i in 0..count {
        let intended = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        msg[..8].copy_from_slice(&i.to_le_bytes());
        tx.write_all(&msg)?;
    }
    let (hist, end) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    drop(tx);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(FloorReport {
        target_rate: rate,
        completed: hist.len(),
        elapsed_s: end.saturating_duration_since(start).as_secs_f64(),
        latency_ms: Percentiles::of(&hist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_comes_back_and_is_timed() {
        let r = probe(2000.0, Duration::from_millis(250)).unwrap();
        assert_eq!(r.completed, 500);
        // A round trip takes time, and none can take longer than the probe ran.
        assert!(r.latency_ms.p50 > 0.0);
        assert!(r.latency_ms.max <= r.elapsed_s * 1000.0);
        assert!(
            r.elapsed_s >= 0.249,
            "paced over the duration: {}",
            r.elapsed_s
        );
    }

    #[test]
    fn a_bad_rate_is_refused() {
        assert!(probe(0.0, Duration::from_secs(1)).is_err());
        assert!(probe(f64::NAN, Duration::from_secs(1)).is_err());
    }
}
