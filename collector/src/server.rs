//! Serving a router on a listener with the limits a public endpoint needs: a deadline for request headers
//! (slowloris), a cap on header bytes, the peer address for each request, and a graceful shutdown that stops
//! accepting and lets in-flight requests finish. The public listener's connections are dealt over
//! [`ConnectionThreads`], one single-threaded runtime per CPU; the admin listener's stay on the worker pool.
//!
//! The header deadline is kept per connection, not per request. hyper's own (`header_read_timeout`) arms and
//! cancels a timer for every request; at the maximum ingest rate that cost 4-7 µs of CPU per beacon (three
//! interleaved pairs: 55.9/54.9/56.1 against 51.5/50.2/49.0 µs). Here each connection has a deadline in an atomic,
//! moved by its requests (none while one is being served; `header_timeout` from when its answer is ready), and one
//! sleeping watchdog that drops the connection once the deadline passes: one timer per connection per
//! `header_timeout`. A connection idle that long between requests is closed too.

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send its request headers within this time.
    pub header_timeout: Duration,
    /// Most bytes buffered for request headers (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
}

/// A connection's deadline while it serves a request.
const SERVING: u64 = u64::MAX;

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Single-threaded runtimes, one per core, that the public listener's connections are dealt to in turn.
///
/// Why: on tokio's work-stealing runtime, a worker woken by a request wakes an idle sibling to share the work, and at
/// moderate rates (every request arriving alone) that cost a futex wake and a context switch per beacon on top of the
/// bare handler's own (10,000 beacons/s here: 0.44 futex calls and 0.75 context switches per beacon, against 0.01 and
/// 0.38 with a single worker). A connection kept on one thread needs none of that, and the benchmark's limit, the
/// bare 204 handler, runs the same way. Routes that block on the store (queries) are passed to the main runtime,
/// whose workers may block; `/v1/beacon` runs where its connection lives.
pub struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicU64,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Whether connection threads are bound to CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pinning {
    /// Thread `i` on the `i`-th CPU the process may use, when there are exactly as many threads as such CPUs (a
    /// process given its own CPUs: the default machine, or a container with a cpuset); otherwise none.
    Auto,
    /// Never: the kernel places them.
    Off,
}

/// The CPU for each of `n` connection threads under `pinning`, or `None` where they are not pinned.
///
/// Why pin: with two connection threads on two CPUs, the kernel now and then woke one on the CPU the other was
/// running on, and the one preempted may hold the spool's append lock (a `write` into the page cache), so the other
/// then sleeps on the lock and all connections of both threads wait. Pinned, the lock was waited on for over 1 ms
/// 3-5 times in 30 s at 40,000 beacons/s against 11-35 times unpinned, and the half-rate p99 fell (docs/benchmarks.md).
/// Not pinned when the process shares more CPUs than it has threads (a CPU quota without a cpuset): the threads would
/// pile onto the first CPUs whatever else runs there.
pub fn pinned_cpus(n: usize, pinning: Pinning) -> Option<Vec<usize>> {
    if pinning == Pinning::Off || n == 0 {
        return None;
    }
    let allowed = rustix::thread::sched_getaffinity(None).ok()?;
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    (cpus.len() == n).then_some(cpus)
}

impl ConnectionThreads {
    /// Starts `n` threads (at least one), each driving its own current-thread runtime, bound to the CPUs
    /// [`pinned_cpus`] gives.
    pub fn start(n: usize, pinning: Pinning) -> std::io::Result<ConnectionThreads> {
        let mut out = ConnectionThreads {
            handles: Vec::new(),
            next: AtomicU64::new(0),
            stop: Vec::new(),
            threads: Vec::new(),
        };
        let n = n.max(1);
        let cpus = pinned_cpus(n, pinning);
        match &cpus {
            Some(cpus) => tracing::info!(?cpus, "connection threads pinned, one per CPU"),
            None => tracing::info!(threads = n, ?pinning, "connection threads not pinned"),
        }
        for i in 0..n {
            let cpu = cpus.as_ref().map(|c| c[i]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            out.handles.push(rt.handle().clone());
            out.stop.push(stop);
            out.threads.push(
                std::thread::Builder::new()
                    .name(format!("connections-{i}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            let mut set = rustix::thread::CpuSet::new();
                            set.set(cpu);
                            if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
                                tracing::warn!(cpu, error = %e, "cannot pin a connection thread");
                            }
                        }
                        // Tasks spawned on the handle run while this blocks.
                        let _ = rt.block_on(stopped);
                    })?,
            );
        }
        Ok(out)
    }

    /// The runtime for the next connection.
    fn pick(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.handles.len();
        &self.handles[i]
    }

    /// Stops the runtimes (dropping any task still on them) and waits for their threads. Blocks: call it after the
    /// listener drained, from a blocking context.
    pub fn stop(self) {
        for s in self.stop {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Where a listener's connections run.
#[derive(Clone, Copy)]
pub enum Placement<'a> {
    /// On the runtime that accepts them.
    Here,
    /// Dealt over `threads`; requests for any path but `local_path` go back to the main runtime (`main`).
    Spread {
        /// The connection threads.
        threads: &'a ConnectionThreads,
        /// The one route served on the connection's own thread.
        local_path: &'static str,
        /// The runtime everything else runs on.
        main: &'a tokio::runtime::Handle,
    },
}

/// Serves until `shutdown`; then waits up to `drain` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    placement: Placement<'_>,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let epoch = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = Connection { router: router.clone(), limits, epoch, peer };
                let watcher = graceful.watcher();
                match placement {
                    Placement::Here => {
                        tokio::spawn(conn.run(stream, None, watcher));
                    }
                    Placement::Spread { threads, local_path, main } => {
                        // A socket belongs to the runtime that registered it: hand it over as a std socket and
                        // register it again on the connection's thread.
                        let stream = match stream.into_std() {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(error = %e, %peer, "cannot move a connection to its thread");
                                continue;
                            }
                        };
                        let main = main.clone();
                        threads.pick().spawn(async move {
                            match tokio::net::TcpStream::from_std(stream) {
                                Ok(stream) => conn.run(stream, Some((local_path, main)), watcher).await,
                                Err(e) => tracing::warn!(error = %e, %peer, "cannot register a connection"),
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "some connections were still open after the drain timeout"
        );
    }
    Ok(())
}

/// One accepted connection, before it runs.
struct Connection {
    router: Router,
    limits: Limits,
    epoch: Instant,
    peer: SocketAddr,
}

impl Connection {
    /// Serves the connection's requests until it closes, misses its header deadline or is shut down. With `split`,
    /// requests for any path but its own go to the given runtime.
    async fn run(
        self,
        stream: tokio::net::TcpStream,
        split: Option<(&'static str, tokio::runtime::Handle)>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let Connection {
            router,
            limits,
            epoch,
            peer,
        } = self;
        let timeout_ms = limits.header_timeout.as_millis() as u64;
        // Milliseconds since `epoch` by which the next request head must be complete; `SERVING` while a request is
        // being served (its body and handler have their own deadlines).
        let deadline = Arc::new(AtomicU64::new(ms_since(epoch) + timeout_ms));
        let (on_request, on_answer) = (deadline.clone(), deadline.clone());
        let svc = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            on_request.store(SERVING, Ordering::Relaxed);
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let router = router.clone();
            let on_answer = on_answer.clone();
            let elsewhere = match &split {
                Some((local, main)) if req.uri().path() != *local => Some(main.clone()),
                _ => None,
            };
            async move {
                let resp = match elsewhere {
                    None => router.oneshot(req).await,
                    Some(main) => match main.spawn(router.oneshot(req)).await {
                        Ok(resp) => resp,
                        Err(e) => {
                            tracing::error!(error = %e, "a request handler failed");
                            Ok(axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
                        }
                    },
                };
                on_answer.store(ms_since(epoch) + timeout_ms, Ordering::Relaxed);
                resp
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let watched = watcher.watch(conn);
        tokio::pin!(watched);
        loop {
            let at = deadline.load(Ordering::Relaxed);
            let wake = if at == SERVING {
                Instant::now() + limits.header_timeout
            } else {
                epoch + Duration::from_millis(at)
            };
            tokio::select! {
                ended = &mut watched => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let at = deadline.load(Ordering::Relaxed);
                    if at != SERVING && ms_since(epoch) >= at {
                        // Dropping the connection closes its socket.
                        tracing::debug!(%peer, "no complete request head in time; closing the connection");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_threads_are_pinned_one_per_cpu_when_they_match_the_cpus() {
        let allowed = rustix::thread::sched_getaffinity(None).unwrap();
        let n = allowed.count() as usize;
        let cpus = pinned_cpus(n, Pinning::Auto).expect("one thread per CPU: pinned");
        assert_eq!(cpus.len(), n);
        assert!(cpus.iter().all(|&c| allowed.is_set(c)));
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "distinct: {cpus:?}");
        assert_eq!(pinned_cpus(n, Pinning::Off), None);
        assert_eq!(
            pinned_cpus(n + 1, Pinning::Auto),
            None,
            "more threads than CPUs"
        );

        let threads = ConnectionThreads::start(n, Pinning::Auto).unwrap();
        for (i, handle) in threads.handles.iter().enumerate() {
            // A task on thread i runs where thread i may run: on its CPU alone.
            let (tx, rx) = std::sync::mpsc::channel();
            handle.spawn(async move {
                let _ = tx.send(rustix::thread::sched_getaffinity(None).unwrap());
            });
            let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(seen.count(), 1, "thread {i}");
            assert!(seen.is_set(cpus[i]), "thread {i} on CPU {}", cpus[i]);
        }
        threads.stop();

        let unpinned = ConnectionThreads::start(n + 1, Pinning::Auto).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        unpinned.handles[0].spawn(async move {
            let _ = tx.send(rustix::thread::sched_getaffinity(None).unwrap());
        });
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(seen.count() as usize, n, "left on every CPU");
        unpinned.stop();
    }
}
