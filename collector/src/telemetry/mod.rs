//! Telemetry: logs ([`logging`], [`refusal_log`]) and the declared Prometheus metrics ([`metrics`]).

pub mod logging;
pub mod metrics;
pub mod refusal_log;

pub use logging::init_logging;
