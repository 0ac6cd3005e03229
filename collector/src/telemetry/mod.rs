//! Telemetry: logs ([`logging`]) and the declared Prometheus metrics ([`metrics`]).

pub mod logging;
pub mod metrics;

pub use logging::init_logging;
