//! The pure core of fieldvitals: the domain shared by the beacon (wasm) and the collector, with no I/O.
//!
//! Data path through this crate: the collector hands the raw request body to [`wire::decode_beacon`], which parses
//! the versioned wire format into a [`wire::Beacon`] of domain types — a [`wire::SiteId`], a normalised
//! [`page::PageUrl`], a [`wire::NavType`], and validated [`wire::Sample`]s of a [`metric::Metric`] — or says exactly
//! which field is wrong. The request headers give the [`device_class::DeviceClass`]. Each sample is then rated
//! ([`metric::Metric::rate`]) and recorded into a sparse [`histogram::Histogram`] whose buckets are the same function
//! everywhere (embedded store, ClickHouse rollups), and whose [`histogram::Quantile`] is the one nearest-rank
//! definition the query side reports.

pub mod device_class;
pub mod histogram;
pub mod metric;
pub mod page;
pub mod wire;

pub use device_class::DeviceClass;
pub use histogram::{Histogram, Quantile};
pub use metric::{Metric, Rating};
pub use page::PageUrl;
pub use wire::{decode_beacon, Beacon, NavType, Sample, SampleDetail, SiteId};
