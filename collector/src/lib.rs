//! The fieldvitals collector: beacons in, percentiles out.
//!
//! Data path: `POST /v1/beacon` ([`routes::beacon`], run on its connection's own thread: [`server::ConnectionThreads`])
//! reads at most 64 KiB, decodes and validates the body with
//! [`vitals::wire`], derives the device class from the request headers, remembers the samples for
//! `GET /v1/recent` ([`recent`]) and hands an [`storage::Accepted`] to the [`intake::Intake`] — a bounded queue, the
//! explicit seam between "accepted" and "aggregated" (answered 503 + Retry-After when full). No storage I/O happens
//! in the request. Behind the seam the store's writer (the embedded SQLite store by default) aggregates per-minute
//! histograms and flushes them every second, on threads of its own ([`store_feed`]) that run at idle CPU priority
//! while they keep up ([`store_priority`]). The query API (`/v1/p75`, `/v1/quantiles`, from the `query` crate) reads
//! the same store. With `--clickhouse-url` the store is ClickHouse instead ([`storage_select`], the
//! `storage-clickhouse` crate): the spool replayer feeds its batching sink and the queries read its tables.
//! [`app::Application`] wires it all, binds (port 0 in tests) and shuts down gracefully: stop
//! accepting, finish in-flight requests, drain the queue, flush the store.

pub mod app;
pub mod config;
pub mod error;
pub mod intake;
pub mod policy;
pub mod recent;
pub mod routes;
pub mod security;
pub mod server;
pub mod storage_select;
pub mod store_feed;
pub mod store_priority;
pub mod telemetry;

pub use app::Application;
pub use config::Config;
