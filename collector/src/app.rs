//! Building and running the collector: `Application::build(config)` loads the policy, opens the store, starts its
//! writer and binds both listeners (port 0 in tests); `run_until_stopped` serves until the shutdown signal, then
//! stops accepting, finishes in-flight requests, drains the queue and flushes the store.

use crate::config::Config;
use crate::intake::Intake;
use crate::policy::rate_limit::RateLimiter;
use crate::policy::PolicyHandle;
use crate::recent::Recent;
use crate::routes::{self, AppState, SharedState};
use crate::security::auth::{require_token, AuthState};
use crate::server::{self, ConnectionThreads, Limits, Placement};
use crate::store_feed::StoreFeed;
use crate::store_priority::StorePriority;
use crate::telemetry::metrics::Metrics;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use spool::{Spool, SpoolOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use storage::embedded::WriterHealth;
use tokio::net::TcpListener;

/// Beacons that may wait between the spool replayer and the store's writer (memory, not durability: the spool
/// holds them too).
const WRITER_QUEUE: usize = 8192;

/// A built, bound, not yet serving collector.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    router: Router,
    admin_router: Router,
    writer: crate::storage_select::StoreWriter,
    spool: Spool,
    replayer: tokio::task::JoinHandle<()>,
    store_health: Arc<WriterHealth>,
    policy: PolicyHandle,
    metrics: Arc<Metrics>,
    config: Config,
    /// The store's threads' CPU priority, and the governor that raises it while the store lags.
    lane: Arc<StorePriority>,
    governor: Option<tokio::task::JoinHandle<()>>,
    /// The embedded store's replay and aggregation runtime (kept alive until the writer has stopped).
    feed: Option<StoreFeed>,
}

impl Application {
    /// Loads the policy, opens the store, starts its writer and binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let policy = PolicyHandle::load(config.policy_file.clone())?;
        let loopback_only = config.listen.ip().is_loopback();
        if !loopback_only && policy.get().tokens.is_empty() {
            anyhow::bail!(
                "refusing to serve the query API on {} without tokens: add [[tokens]] to the policy file (--config), \
                 or listen on a loopback address",
                config.listen
            );
        }
        let metrics = Arc::new(Metrics::default());
        let lane = StorePriority::new(config.store_priority);
        let store = crate::storage_select::SelectedStore::open(&config, &metrics, &lane).await?;
        // The spool continues after the store's checkpoint; what it holds beyond that is replayed into the store.
        let stored_through = store.stored_through;
        let spool_dir = config.data_dir.join("spool");
        let (spool, recovery) = Spool::open(
            &spool_dir,
            SpoolOptions {
                max_bytes: config.spool_max_bytes,
                // Space comes back a whole stored segment at a time, so segments are a small part of the bound.
                segment_bytes: (config.spool_max_bytes / 8).clamp(16 << 10, 32 << 20),
                fsync_interval: Duration::from_millis(config.spool_fsync_ms),
            },
            stored_through + 1,
        )
        .with_context(|| format!("cannot open the spool in {}", spool_dir.display()))?;
        if recovery.truncated_bytes > 0 || recovery.next_seq > stored_through + 1 {
            tracing::info!(
                replay = recovery.next_seq.saturating_sub(stored_through + 1),
                torn_bytes_cut = recovery.truncated_bytes,
                "spool recovered; replaying what the store does not hold yet"
            );
        }
        let (to_store, rx) = tokio::sync::mpsc::channel(WRITER_QUEUE);
        // The embedded store's replay and aggregation run on the store-feed thread, at the lane's priority; the
        // ClickHouse sink's on the main runtime.
        let feed = if store.is_embedded() {
            Some(StoreFeed::start(&lane).context("cannot start the store-feed thread")?)
        } else {
            None
        };
        let (writer, replayer) = {
            let _entered = feed.as_ref().map(|f| f.handle().enter());
            let writer = store.spawn_writer(rx)?;
            let replayer =
                crate::intake::spawn_replayer(&spool, stored_through, to_store, metrics.clone());
            (writer, replayer)
        };
        let governor = if let (Some(_), Some(interval)) = (&feed, store.flush_interval()) {
            let (spool, health) = (spool.clone(), store.health.clone());
            lane.spawn_governor(
                interval,
                move || {
                    crate::intake::oldest_unstored_age(
                        &spool,
                        health.stored_through.load(Ordering::Relaxed),
                    )
                },
                metrics.clone(),
            )
        } else {
            None
        };
        let store_health = store.health.clone();
        let health = store_health.clone();
        crate::intake::spawn_checkpointer(
            spool.clone(),
            move || health.stored_through.load(Ordering::Relaxed),
            metrics.clone(),
            feed.as_ref().map(|f| f.handle().clone()),
        );
        let intake = Intake::new(spool.clone());
        let state = AppState::new(SharedState {
            intake,
            recent: Arc::new(Recent::default()),
            writer: store.health.clone(),
            policy: policy.clone(),
            limiter: Arc::new(RateLimiter::default()),
            metrics: metrics.clone(),
            spool_max_bytes: config.spool_max_bytes,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            refusal_log: Arc::default(),
        });
        spawn_gauges(&state);
        let engine = query::QueryEngine::new(store.source.clone());
        let auth = AuthState {
            policy: policy.clone(),
            loopback_only,
        };
        let protected = Router::new()
            .route("/v1/recent", get(routes::recent::get_recent))
            .with_state(state.clone())
            .merge(query::http::routes(engine))
            .layer(from_fn_with_state(auth, require_token));
        // `POST /v1/beacon` carries the load and does the envelope's work itself (see routes/beacon.rs); every
        // other route, its preflight and its 405 included, goes through the timeout and envelope layers.
        let beacon = post(routes::beacon::post_beacon)
            .options(routes::beacon::preflight)
            .fallback(routes::beacon::method_not_allowed)
            .with_state(state.clone());
        let router = Router::new()
            .route("/{file}", get(routes::beacon_files::get_file))
            .route("/healthz", get(routes::health::healthz))
            .route("/readyz", get(routes::health::readyz))
            .layer(DefaultBodyLimit::max(routes::beacon::MAX_BODY_BYTES))
            .with_state(state)
            .merge(protected)
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(config.request_timeout_secs),
            ))
            .layer(from_fn_with_state(
                routes::envelope::Envelope {
                    metrics: metrics.clone(),
                    policy: policy.clone(),
                },
                routes::envelope::envelope,
            ))
            // Routes added after the layers are not wrapped by them (the 404 fallback still is).
            .route(routes::BEACON_PATH, beacon);
        let admin_router = routes::admin::routes(metrics.clone());
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} (--admin-listen)", config.admin_listen)
            })?;
        Ok(Application {
            listener,
            admin_listener,
            router,
            admin_router,
            writer,
            spool,
            replayer,
            store_health,
            policy,
            metrics,
            config,
            lane,
            governor,
            feed,
        })
    }

    /// The bound public address (the real port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics (tests read counters directly).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes in-flight requests, drains the queue and
    /// flushes the store, within the configured timeout.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let admin = self.admin_addr();
        tracing::info!(%addr, %admin, data_dir = %self.config.data_dir.display(), "collector listening");
        self.policy.reload_on_sighup();
        let timeout = self.config.shutdown_timeout();
        let limits = Limits {
            header_timeout: Duration::from_secs(self.config.header_timeout_secs),
            max_header_bytes: 16 * 1024,
        };
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(server::serve(
            self.admin_listener,
            self.admin_router,
            limits,
            Placement::Here,
            async {
                let _ = admin_stopped.await;
            },
            Duration::from_secs(1),
        ));
        let threads = match self.config.connection_threads {
            0 => None,
            n => Some(
                ConnectionThreads::start(n.into(), self.config.pin_connection_threads)
                    .context("cannot start the connection threads")?,
            ),
        };
        let main = tokio::runtime::Handle::current();
        let placement = match &threads {
            None => Placement::Here,
            Some(threads) => Placement::Spread {
                threads,
                local_path: routes::BEACON_PATH,
                main: &main,
            },
        };
        let served = server::serve(
            self.listener,
            self.router,
            limits,
            placement,
            shutdown,
            timeout,
        )
        .await;
        if let Some(threads) = threads {
            let _ = tokio::task::spawn_blocking(move || threads.stop()).await;
        }
        served.context("server failed")?;
        // No handler runs any more. Close the spool (what was appended is written and synced), let the replayer read
        // it to the end into the store, and let the writer flush and stop.
        tracing::info!("draining and flushing");
        // Drain at normal priority: nothing else is left to yield to.
        if let Some(g) = &self.governor {
            g.abort();
        }
        self.lane.set_raised(true);
        let spool = self.spool.clone();
        let (replayer, writer) = (self.replayer, self.writer);
        let flush_deadline = tokio::time::Instant::now() + timeout;
        let flushed = tokio::time::timeout(timeout, async move {
            let _ = tokio::task::spawn_blocking(move || spool.close()).await;
            let _ = replayer.await;
            writer
                .stopped(flush_deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        })
        .await;
        self.spool
            .checkpoint(self.store_health.stored_through.load(Ordering::Relaxed));
        drop(self.feed);
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        match flushed {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
            Err(_) => {
                anyhow::bail!("shutdown timed out after {timeout:?} while flushing the store")
            }
        }
    }
}

/// Keeps the store counters in the metrics current, once a second.
fn spawn_gauges(state: &AppState) {
    let metrics = state.metrics.clone();
    let writer = state.writer.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics.store_samples_written.store(
                writer.samples_written.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            metrics.store_write_errors.store(
                writer.failed_flushes.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    });
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
