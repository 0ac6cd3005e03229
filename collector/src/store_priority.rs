//! The store's background work at idle CPU priority, raised to normal while it lags.
//!
//! Data path: the spool replay, the aggregation into minute deltas (both on the store-feed thread's runtime) and the
//! embedded store's writer thread register here. On Linux they then run at `SCHED_IDLE`: a connection thread woken
//! by a beacon preempts them at once, where at equal priority it waits for the running thread's scheduler slice (on
//! the two-core bench host at 40,000 beacons/s that wait set the p99 of a beacon's answer: 3.1–4.3 ms with the store's
//! threads at normal priority, 1.3–1.9 ms at idle, in four pairs; docs/benchmarks.md). Idle priority alone would starve the store on a
//! saturated machine, so a governor on the main runtime raises the threads to normal priority whenever the oldest
//! accepted beacon not yet stored is older than one and a half flush intervals, and lowers them again once it is
//! younger than one: accepted beacons are never left behind for long (at the maximum rate they are queryable within
//! about 1.5 s, inside the 2 s freshness goal), and the store gets the CPU it needs.
//!
//! Raising a thread back needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20. A probe at start-up lowers and raises a
//! scratch thread; where that fails (or off Linux, or with `--store-priority normal`) nothing is lowered and the
//! store's work runs at normal priority.

use crate::telemetry::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the governor looks at the store's lag.
const GOVERNOR_TICK: Duration = Duration::from_millis(100);

/// Whether the store's threads may run at idle priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorePriorityMode {
    /// Idle priority, raised while the store lags (where the process may raise it back).
    Idle,
    /// Always normal priority.
    Normal,
}

/// The registered store threads and the priority they run at.
pub struct StorePriority {
    /// Whether threads are lowered at all (mode `idle` and the probe succeeded).
    lowering: bool,
    state: Mutex<State>,
}

struct State {
    threads: Vec<(u64, os::Thread)>,
    next_key: u64,
    raised: bool,
}

/// Keeps a thread registered; dropping it (on that thread, before it ends) unregisters it.
pub struct Registration {
    lane: Arc<StorePriority>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Under the lock, so the governor never changes a thread that has gone.
        let mut s = self.lane.state.lock().expect("priority lock");
        s.threads.retain(|(k, _)| *k != self.key);
    }
}

/// What the governor does for a given lag of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Raise the threads to normal priority.
    Raise,
    /// Lower them to idle priority.
    Lower,
    /// Leave them as they are.
    Keep,
}

/// Raise when the oldest unstored beacon is older than one and a half flush intervals, lower when it is younger than
/// one (a store that keeps up holds beacons for one interval plus its write; raising at 1.5 keeps a saturated
/// machine's beacons queryable within 2 s, and the gap keeps the threads from flapping).
pub fn decide(raised: bool, lag: Duration, flush_interval: Duration) -> Decision {
    if !raised && lag > flush_interval * 3 / 2 {
        Decision::Raise
    } else if raised && lag < flush_interval {
        Decision::Lower
    } else {
        Decision::Keep
    }
}

impl StorePriority {
    /// A lane for `mode`, probing whether this process may raise a lowered thread back.
    pub fn new(mode: StorePriorityMode) -> Arc<StorePriority> {
        let lowering = match mode {
            StorePriorityMode::Normal => false,
            StorePriorityMode::Idle => match os::probe() {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(
                        reason = %e,
                        "the store's threads run at normal priority: this process may not raise a lowered \
                         thread back (needs CAP_SYS_NICE or RLIMIT_NICE 20)"
                    );
                    false
                }
            },
        };
        Arc::new(StorePriority {
            lowering,
            state: Mutex::new(State {
                threads: Vec::new(),
                next_key: 0,
                raised: false,
            }),
        })
    }

    /// Whether the store's threads are lowered while they keep up.
    pub fn lowering(&self) -> bool {
        self.lowering
    }

    /// Whether the threads run at normal priority now (always, when not lowering).
    pub fn raised(&self) -> bool {
        !self.lowering || self.state.lock().expect("priority lock").raised
    }

    /// Registers the calling thread and gives it the lane's current priority.
    pub fn register_current(self: &Arc<Self>) -> Registration {
        let mut s = self.state.lock().expect("priority lock");
        let key = s.next_key;
        s.next_key += 1;
        if self.lowering {
            let me = os::current();
            if !s.raised {
                if let Err(e) = os::set(me, true) {
                    tracing::warn!(error = %e, "could not lower a store thread's priority");
                }
            }
            s.threads.push((key, me));
        }
        Registration {
            lane: self.clone(),
            key,
        }
    }

    /// Sets every registered thread to normal (`raise`) or idle priority; returns whether anything changed.
    pub fn set_raised(&self, raise: bool) -> bool {
        if !self.lowering {
            return false;
        }
        let mut s = self.state.lock().expect("priority lock");
        if s.raised == raise {
            return false;
        }
        s.raised = raise;
        for (_, t) in &s.threads {
            if let Err(e) = os::set(*t, !raise) {
                tracing::warn!(error = %e, raise, "could not change a store thread's priority");
            }
        }
        true
    }

    /// Every [`GOVERNOR_TICK`], raises or lowers the threads by the store's lag (`lag()`: the age of the oldest
    /// accepted beacon not yet stored, zero when none).
    pub fn spawn_governor(
        self: &Arc<Self>,
        flush_interval: Duration,
        lag: impl Fn() -> Duration + Send + 'static,
        metrics: Arc<Metrics>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.lowering {
            return None;
        }
        let lane = self.clone();
        metrics.store_priority_idle.store(1, Ordering::Relaxed);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(GOVERNOR_TICK);
            loop {
                tick.tick().await;
                let raised = lane.raised();
                match decide(raised, lag(), flush_interval) {
                    Decision::Raise => {
                        if lane.set_raised(true) {
                            metrics
                                .store_priority_raised
                                .fetch_add(1, Ordering::Relaxed);
                            metrics.store_priority_idle.store(0, Ordering::Relaxed);
                        }
                    }
                    Decision::Lower => {
                        if lane.set_raised(false) {
                            metrics.store_priority_idle.store(1, Ordering::Relaxed);
                        }
                    }
                    Decision::Keep => {}
                }
            }
        }))
    }
}

#[cfg(target_os = "linux")]
mod os {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };

    pub type Thread = thread_priority::ThreadId;

    pub fn current() -> Thread {
        thread_native_id()
    }

    /// Sets `t`'s policy to `SCHED_IDLE` or `SCHED_OTHER`. (The crate also sets the calling thread's nice value to
    /// the one given, 0 both ways, which it already has: the probe checks exactly that on a thread like the callers.)
    pub fn set(t: Thread, idle: bool) -> Result<(), String> {
        let (priority, policy) = if idle {
            (
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            )
        } else {
            (
                ThreadPriority::Crossplatform(NICE_ZERO.try_into().map_err(|e| format!("{e:?}"))?),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
            )
        };
        set_thread_priority_and_policy(t, priority, policy).map_err(|e| format!("{e:?}"))
    }

    /// The crate maps 0–99 onto nice 19 to -20; 48 is nice 0 (the test checks the caller's nice after a raise).
    const NICE_ZERO: u8 = 48;

    /// Lowers a scratch thread and raises it back.
    pub fn probe() -> Result<(), String> {
        std::thread::Builder::new()
            .name("priority-probe".into())
            .spawn(|| {
                let me = current();
                set(me, true)?;
                set(me, false)
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "the probe thread panicked".to_string())?
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub type Thread = ();

    pub fn current() -> Thread {}

    pub fn set(_: Thread, _: bool) -> Result<(), String> {
        Err("idle priority is Linux's SCHED_IDLE".into())
    }

    pub fn probe() -> Result<(), String> {
        Err("idle priority is Linux's SCHED_IDLE".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_governor_raises_past_one_and_a_half_intervals_and_lowers_under_one() {
        let ms = Duration::from_millis;
        assert_eq!(decide(false, ms(0), SECOND), Decision::Keep);
        assert_eq!(decide(false, ms(1_400), SECOND), Decision::Keep);
        assert_eq!(decide(false, ms(1_501), SECOND), Decision::Raise);
        assert_eq!(decide(true, ms(2_500), SECOND), Decision::Keep);
        assert_eq!(decide(true, ms(1_200), SECOND), Decision::Keep);
        assert_eq!(decide(true, ms(999), SECOND), Decision::Lower);
        assert_eq!(decide(false, ms(999), SECOND), Decision::Keep);
    }

    /// The scheduling policy (0 normal, 5 idle) and nice value of thread `tid`, from `/proc`.
    #[cfg(target_os = "linux")]
    fn policy_and_nice(tid: &str) -> (i64, i64) {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the command's closing parenthesis: state is field 3, nice 19, policy 41.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (rest[41 - 3].parse().unwrap(), rest[19 - 3].parse().unwrap())
    }

    /// This thread's id in `/proc`.
    #[cfg(target_os = "linux")]
    fn my_tid() -> String {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// A thread registered with `lane` until the returned sender is dropped: its `/proc` id, the sender, the thread.
    #[cfg(target_os = "linux")]
    fn registered_thread(
        lane: &Arc<StorePriority>,
    ) -> (
        String,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let lane = lane.clone();
        let worker = std::thread::spawn(move || {
            let _reg = lane.register_current();
            tid_tx.send(my_tid()).unwrap();
            let _ = done_rx.recv();
        });
        (tid_rx.recv().unwrap(), done_tx, worker)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn registered_threads_follow_the_lane_between_idle_and_normal() {
        let lane = StorePriority::new(StorePriorityMode::Idle);
        if !lane.lowering() {
            // An unprivileged sandbox: the fallback is what runs, and it never lowers.
            let reg = lane.register_current();
            assert!(lane.raised());
            assert!(!lane.set_raised(false));
            drop(reg);
            return;
        }
        let (tid, done_tx, worker) = registered_thread(&lane);
        assert_eq!(policy_and_nice(&tid), (5, 0), "registered at idle");
        assert!(lane.set_raised(true));
        assert_eq!(policy_and_nice(&tid), (0, 0), "raised to normal, nice 0");
        assert!(!lane.set_raised(true), "already raised");
        assert!(lane.set_raised(false));
        assert_eq!(policy_and_nice(&tid), (5, 0), "lowered again");
        // The caller's own priority is untouched.
        assert_eq!(policy_and_nice(&my_tid()), (0, 0));
        drop(done_tx);
        worker.join().unwrap();
        assert!(
            lane.state.lock().unwrap().threads.is_empty(),
            "unregistered as it ended"
        );
        let normal = StorePriority::new(StorePriorityMode::Normal);
        assert!(!normal.lowering() && normal.raised());
    }

    /// The governor task itself: a lag past 1.5 intervals raises the registered thread, a lag under one lowers it
    /// again, and the metrics say so.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_governor_raises_a_lagging_store_and_lowers_it_once_caught_up() {
        use std::sync::atomic::AtomicU64;
        let lane = StorePriority::new(StorePriorityMode::Idle);
        let metrics = Arc::new(Metrics::default());
        let lag_ms = Arc::new(AtomicU64::new(0));
        let lag = {
            let lag_ms = lag_ms.clone();
            move || Duration::from_millis(lag_ms.load(Ordering::Relaxed))
        };
        let Some(governor) = lane.spawn_governor(SECOND, lag, metrics.clone()) else {
            assert!(!lane.lowering(), "a lowering lane has a governor");
            return;
        };
        let (tid, done_tx, worker) = registered_thread(&lane);
        let policy_after = |ms: u64| {
            let tid = tid.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                policy_and_nice(&tid).0
            }
        };
        assert_eq!(
            policy_after(300).await,
            5,
            "a store that keeps up stays idle"
        );
        assert_eq!(metrics.store_priority_idle.load(Ordering::Relaxed), 1);
        lag_ms.store(2_500, Ordering::Relaxed);
        assert_eq!(policy_after(300).await, 0, "raised");
        assert_eq!(metrics.store_priority_raised.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.store_priority_idle.load(Ordering::Relaxed), 0);
        lag_ms.store(1_500, Ordering::Relaxed);
        assert_eq!(policy_after(300).await, 0, "between the thresholds: kept");
        lag_ms.store(200, Ordering::Relaxed);
        assert_eq!(policy_after(300).await, 5, "lowered again");
        assert_eq!(metrics.store_priority_idle.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.store_priority_raised.load(Ordering::Relaxed), 1);
        governor.abort();
        drop(done_tx);
        worker.join().unwrap();
    }
}
