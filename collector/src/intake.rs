//! The seam between "accepted" and "stored": the durable spool, and the replayer that feeds the store from it.
//!
//! The ingest handler encodes a validated beacon ([`storage::codec`]) and appends it to the [`spool::Spool`]; the
//! 204 goes out once the record is written (it then survives a crash of the collector; the spool's fsync interval
//! bounds what a power loss can cost). The replayer reads the spool in order from the store's own checkpoint
//! (`stored_through`, kept in the same transaction as the data) and hands each beacon, its id being its spool
//! sequence number, to the store's writer over a bounded channel; the checkpoint task lets the spool delete what is
//! stored. After a crash the replayer simply starts again from the store's checkpoint: nothing acknowledged is lost,
//! nothing is counted twice.

use crate::error::IngestError;
use crate::telemetry::metrics::Metrics;
use spool::{Spool, SpoolError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use storage::Accepted;
use tokio::sync::mpsc;

/// The ingest side of the seam, shared by the handlers.
#[derive(Clone)]
pub struct Intake {
    spool: Spool,
}

impl Intake {
    /// Wraps an open spool.
    pub fn new(spool: Spool) -> Intake {
        Intake { spool }
    }

    /// Appends a validated beacon; resolves once it is durably in the spool. Full or failing spools are answered
    /// at once (503), never by waiting.
    pub async fn offer(&self, a: &Accepted) -> Result<u64, IngestError> {
        self.spool
            .append(&storage::codec::encode(a))
            .await
            .map_err(spool_error)
    }

    /// The spool, for readiness and metrics.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

fn spool_error(e: SpoolError) -> IngestError {
    match e {
        SpoolError::Full(_) => IngestError::Overloaded,
        SpoolError::DiskFull(_) => IngestError::DiskFull,
        SpoolError::Closed => IngestError::Unavailable,
        SpoolError::Io(msg) => IngestError::SpoolFailed(msg),
    }
}

/// Reads the spool from `after` and feeds the store's writer until the spool is closed and read to its end.
pub fn spawn_replayer(
    spool: &Spool,
    after: u64,
    to_store: mpsc::Sender<Accepted>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let mut reader = spool.reader(after);
    tokio::spawn(async move {
        while let Some(next) = reader.next().await {
            match next {
                Ok((seq, bytes)) => match storage::codec::decode(seq, &bytes) {
                    Ok(a) => {
                        if to_store.send(a).await.is_err() {
                            tracing::error!("the store writer stopped; replay ends");
                            return;
                        }
                    }
                    Err(e) => {
                        // A checksummed record that does not decode is a bug or a version mix-up: skip it, loudly,
                        // rather than block everything behind it.
                        metrics
                            .spool_records_skipped
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(seq, error = %e, "skipping an unreadable spool record");
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "spool read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

/// How long the oldest accepted beacon after `stored_through` has waited (zero when none waits): the spool's age
/// gauge, and what the store's priority governor reads.
pub fn oldest_unstored_age(spool: &Spool, stored_through: u64) -> Duration {
    spool
        .appended_after(stored_through)
        .map_or(Duration::ZERO, |t| {
            let now = chrono::Utc::now().timestamp_millis() as u64;
            Duration::from_millis(now.saturating_sub(t))
        })
}

/// Once a second: let the spool drop what the store holds, and publish the spool gauges.
///
/// The stored segments are deleted on a blocking thread of `deleter` (the store-feed runtime, whose threads run at
/// the store's CPU priority) or of the current runtime: unlinking a 32 MiB segment frees its page cache, ~3 ms of
/// kernel CPU that, at normal priority, kept a connection thread off its CPU for as long every 32 MiB of beacons
/// (perf's scheduler trace at 42,000/s: a main-runtime worker ran 2.9-3.2 ms in the 5 ms windows where a connection
/// thread waited 2.8-4.0 ms, every ~2.5 s).
pub fn spawn_checkpointer(
    spool: Spool,
    stored_through: impl Fn() -> u64 + Send + 'static,
    metrics: Arc<Metrics>,
    deleter: Option<tokio::runtime::Handle>,
) {
    let deleter = deleter.unwrap_or_else(tokio::runtime::Handle::current);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let stored = stored_through();
            if spool.mark_stored(stored) {
                let spool = spool.clone();
                // Awaited, so deletions never overlap; an error means the runtime is shutting down.
                let _ = deleter.spawn_blocking(move || spool.delete_stored()).await;
            }
            let s = spool.stats();
            for (to, from) in [
                (&metrics.spool_bytes, &s.bytes),
                (&metrics.spool_segments, &s.segments),
                (&metrics.spool_records_appended, &s.appended),
                (&metrics.spool_writes, &s.writes),
            ] {
                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            metrics.spool_oldest_unstored_ms.store(
                oldest_unstored_age(&spool, stored).as_millis() as u64,
                Ordering::Relaxed,
            );
            metrics.queue_depth.store(
                s.last_seq
                    .load(Ordering::Relaxed)
                    .saturating_sub(stored_through()),
                Ordering::Relaxed,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool::SpoolOptions;

    #[tokio::test]
    async fn the_unstored_age_is_the_oldest_waiting_append_and_zero_once_stored() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path(), SpoolOptions::default(), 0).unwrap();
        assert_eq!(
            oldest_unstored_age(&spool, 0),
            Duration::ZERO,
            "nothing appended"
        );
        let first = spool.append(b"a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let second = spool.append(b"b").await.unwrap();
        let age = oldest_unstored_age(&spool, 0);
        assert!(
            age >= Duration::from_millis(60) && age < Duration::from_secs(5),
            "{age:?}"
        );
        // The first stored: the second, appended 60 ms later, is the oldest waiting (read first, so a stall between
        // the two reads only widens the gap).
        let younger = oldest_unstored_age(&spool, first);
        let older = oldest_unstored_age(&spool, 0);
        assert!(
            older >= younger + Duration::from_millis(50),
            "{older:?} {younger:?}"
        );
        spool.mark_stored(second);
        assert_eq!(oldest_unstored_age(&spool, second), Duration::ZERO);
        spool.close();
    }
}
