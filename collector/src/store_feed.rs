//! The store-feed thread: a single-threaded runtime of its own for the spool replay and the embedded store's
//! aggregation (tasks spawned while its handle is entered), so that their CPU priority is set apart from the main
//! runtime's, which serves queries and the admin listener. The thread and its runtime's blocking threads register
//! with [`crate::store_priority`].

use crate::store_priority::{Registration, StorePriority};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// A blocking thread's registration, dropped as the thread stops.
    static REGISTERED: RefCell<Option<Registration>> = const { RefCell::new(None) };
}

/// The running store-feed thread; dropping it stops the runtime (its tasks are dropped with it).
pub struct StoreFeed {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StoreFeed {
    /// Starts the thread and its runtime.
    pub fn start(lane: &Arc<StorePriority>) -> std::io::Result<StoreFeed> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let lane = lane.clone();
        std::thread::Builder::new()
            .name("store-feed".into())
            .spawn(move || {
                let blocking_lane = lane.clone();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("store-feed-blocking")
                    .on_thread_start(move || {
                        let r = blocking_lane.register_current();
                        REGISTERED.with(|slot| *slot.borrow_mut() = Some(r));
                    })
                    .on_thread_stop(|| {
                        REGISTERED.with(|slot| drop(slot.borrow_mut().take()));
                    })
                    .build();
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _registered = lane.register_current();
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle_rx.recv().map_err(|_| {
            std::io::Error::other("the store-feed thread ended before its runtime started")
        })??;
        Ok(StoreFeed {
            handle,
            stop: Some(stop),
        })
    }

    /// The runtime's handle: `let _g = feed.handle().enter();` makes `tokio::spawn` start tasks there.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for StoreFeed {
    fn drop(&mut self) {
        // The thread drops the runtime and its tasks as it ends; nothing waits for it here (this may run on an
        // async thread).
        drop(self.stop.take());
    }
}
