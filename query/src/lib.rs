//! fieldvitals' analyst side: "what is p75 LCP of /checkout on phones?"
//!
//! Data path: an HTTP request (`GET /v1/p75`, `GET /v1/quantiles`) reaches [`http::routes`], whose handlers parse
//! the query string into a [`params::StatsRequest`] (every refusal names the parameter). The [`engine::QueryEngine`]
//! snaps the time range ([`storage::snap_range`]), asks its [`storage::HistogramSource`] — the embedded store or
//! ClickHouse — for one merged histogram per group, and computes nearest-rank quantiles and the CrUX rating shares
//! with `vitals`, so every store yields the same JSON for the same data. The `query` binary ([`cli`]) is a client of
//! that HTTP API that prints tables, JSON or CSV.

pub mod cli;
pub mod engine;
pub mod http;
pub mod params;

pub use engine::{QueryEngine, QueryError, StatsResponse, StatsRow};
pub use params::StatsRequest;
