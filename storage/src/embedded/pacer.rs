//! Pacing the store writer's flush so that it never holds a CPU for long while the ingest path needs it.
//!
//! Once a second the writer upserts the second's minute rows in one transaction: at 35,000 beacons/s on two cores
//! that is ~70 ms of CPU in one burst, during which the connection threads and everything else share the other core,
//! and beacons queue (on a quiet two-core host, ~70 % of the beacons that took 2 ms or more at that rate arrived in
//! the tenth of a second after the flush began). The pacer cuts the burst into slices of [`SLICE`] with a pause as
//! long after each, as PostgreSQL's cost-based vacuum delay does, but only while the flush is young: a flush that has
//! run for its paced window (two fifths of the flush interval: a big batch after a stall, or a machine too busy to keep
//! up) goes on flat out, so pacing adds at most that much to any flush and can never let the writer fall behind for
//! good.

use std::time::{Duration, Instant};

/// Work between pauses. A connection thread woken while the writer holds its CPU may wait for the rest of the slice
/// (1 ms slices still left the writer running 1–2 ms at a time ~36 times a second at 45,000 beacons/s).
pub const SLICE: Duration = Duration::from_micros(250);

/// How many rows pass between two looks at the clock (a row is ~2 µs of work).
const ROWS_PER_LOOK: u32 = 16;

/// Decides, every few rows, whether the writer pauses.
#[derive(Debug)]
pub struct Pacer {
    /// `None`: never pause (tests, and callers with no one to yield to).
    paced: Option<Paced>,
}

#[derive(Debug)]
struct Paced {
    /// Pauses stop at this time.
    until: Instant,
    slice_started: Instant,
    rows: u32,
    paused: Duration,
    /// The paced window is over.
    flat: bool,
}

impl Pacer {
    /// A pacer for one flush starting now, pausing for the first `window` of it.
    pub fn start(window: Duration) -> Pacer {
        let now = Instant::now();
        Pacer {
            paced: Some(Paced {
                until: now + window,
                slice_started: now,
                rows: 0,
                paused: Duration::ZERO,
                flat: false,
            }),
        }
    }

    /// A pacer that never pauses.
    pub fn flat_out() -> Pacer {
        Pacer { paced: None }
    }

    /// Called after each row: pauses for a slice's length when a slice of work is done and the flush is young.
    pub fn row_done(&mut self) {
        let Some(p) = self.paced.as_mut().filter(|p| !p.flat) else {
            return;
        };
        p.rows += 1;
        if p.rows % ROWS_PER_LOOK != 0 {
            return;
        }
        let now = Instant::now();
        let worked = now.duration_since(p.slice_started);
        if worked < SLICE {
            return;
        }
        if now >= p.until {
            p.flat = true;
            return;
        }
        std::thread::sleep(worked);
        p.paused += worked;
        p.slice_started = Instant::now();
    }

    /// Time spent pausing so far.
    pub fn paused(&self) -> Duration {
        self.paced.as_ref().map_or(Duration::ZERO, |p| p.paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy work of about `d`.
    fn work(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_flat_out_pacer_never_pauses() {
        let mut p = Pacer::flat_out();
        for _ in 0..10_000 {
            p.row_done();
        }
        assert_eq!(p.paused(), Duration::ZERO);
    }

    const WINDOW: Duration = Duration::from_millis(400);

    #[test]
    fn a_young_flush_pauses_about_as_long_as_it_works() {
        let mut p = Pacer::start(WINDOW);
        let t = Instant::now();
        // 20 ms of work in rows of 20 µs.
        for _ in 0..1_000 {
            work(Duration::from_micros(20));
            p.row_done();
        }
        let paused = p.paused();
        let total = t.elapsed();
        assert!(
            paused >= Duration::from_millis(15),
            "paused {paused:?} of {total:?}"
        );
        // Each pause follows a slice at least as long, so at most half the time is pauses (plus one last slice).
        assert!(
            paused <= total / 2 + SLICE,
            "paused {paused:?} of {total:?}"
        );
    }

    #[test]
    fn an_old_flush_runs_flat_out() {
        let mut p = Pacer::start(WINDOW);
        let t = Instant::now();
        // Work until well past the paced window; pauses stop once it is over.
        while t.elapsed() < WINDOW * 2 {
            work(Duration::from_micros(50));
            p.row_done();
        }
        let paused_by_then = p.paused();
        for _ in 0..2_000 {
            work(Duration::from_micros(20));
            p.row_done();
        }
        assert_eq!(p.paused(), paused_by_then);
        assert!(paused_by_then <= WINDOW, "{paused_by_then:?}");
    }
}
