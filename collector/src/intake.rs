//! The seam between "accepted" and "aggregated": a bounded queue from the ingest handler to the store's writer.
//!
//! A beacon answered 204 has been handed to this queue; the writer drains it. The durable on-disk spool takes this
//! place later without the handler changing.

use crate::error::IngestError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use storage::Accepted;
use tokio::sync::mpsc;

/// The sending side, shared by the handlers.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Accepted>,
    next_id: Arc<AtomicU64>,
}

impl Intake {
    /// A queue of `capacity` beacons and its receiving end for the writer.
    pub fn new(capacity: usize) -> (Intake, mpsc::Receiver<Accepted>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        // Ids start from a random point so that restarts (and several collectors) do not reuse them.
        let seed = rand::random::<u64>() & 0x7fff_ffff_ffff_0000;
        (
            Intake {
                tx,
                next_id: Arc::new(AtomicU64::new(seed)),
            },
            rx,
        )
    }

    /// A fresh beacon id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Enqueues without waiting: a full queue is overload, answered at once.
    pub fn offer(&self, a: Accepted) -> Result<(), IngestError> {
        self.tx.try_send(a).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IngestError::Unavailable,
        })
    }

    /// Free places in the queue.
    pub fn free(&self) -> usize {
        self.tx.capacity()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// A handle that does not keep the queue open (for gauges), so shutdown still drains.
    pub fn downgrade(&self) -> WeakIntake {
        WeakIntake {
            tx: self.tx.downgrade(),
        }
    }
}

/// A weak reference to the queue.
pub struct WeakIntake {
    tx: mpsc::WeakSender<Accepted>,
}

impl WeakIntake {
    /// Beacons waiting, or `None` once the queue is closed.
    pub fn depth(&self) -> Option<usize> {
        let tx = self.tx.upgrade()?;
        Some(tx.max_capacity() - tx.capacity())
    }
}
