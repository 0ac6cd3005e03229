//! Building and running the collector: `Application::build(config)` binds (port 0 in tests), opens the store and
//! starts its writer; `run_until_stopped` serves until the shutdown signal, then drains and flushes.

use crate::config::Config;
use crate::intake::Intake;
use crate::recent::Recent;
use crate::routes::{self, AppState};
use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use storage::embedded::{EmbeddedOptions, EmbeddedStore, WriterHandle};
use tokio::net::TcpListener;

/// A built, bound, not yet serving collector.
pub struct Application {
    listener: TcpListener,
    router: Router,
    writer: WriterHandle,
    config: Config,
}

impl Application {
    /// Opens the store, starts its writer and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = EmbeddedStore::open(
            &config.data_dir,
            EmbeddedOptions {
                day_retention_days: config.retention_days,
                ..EmbeddedOptions::default()
            },
        )
        .with_context(|| {
            format!(
                "cannot open the embedded store in {}",
                config.data_dir.display()
            )
        })?;
        let (intake, rx) = Intake::new(config.queue_capacity);
        let writer = store
            .spawn_writer(rx)
            .context("cannot start the store writer")?;
        let state = AppState {
            intake,
            recent: Arc::new(Recent::default()),
            writer: store.health(),
        };
        let store: Arc<EmbeddedStore> = Arc::new(store);
        let engine = query::QueryEngine::new(store);
        let router = Router::new()
            .route(
                "/v1/beacon",
                post(routes::beacon::post_beacon).options(routes::beacon::preflight),
            )
            .route("/v1/recent", get(routes::recent::get_recent))
            .route("/healthz", get(routes::health::healthz))
            .route("/readyz", get(routes::health::readyz))
            .layer(DefaultBodyLimit::max(routes::beacon::MAX_BODY_BYTES))
            .with_state(state)
            .merge(query::http::routes(engine));
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Application {
            listener,
            router,
            writer,
            config,
        })
    }

    /// The bound address (the real port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes in-flight requests, drains the queue and
    /// flushes the store, within the configured timeout.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, data_dir = %self.config.data_dir.display(), "collector listening");
        let timeout = self.config.shutdown_timeout();
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")?;
        // Every handler (and with them every queue sender) is gone now: the writer drains what is queued, flushes
        // and stops.
        tracing::info!("draining and flushing");
        match tokio::time::timeout(timeout, self.writer.stopped()).await {
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
