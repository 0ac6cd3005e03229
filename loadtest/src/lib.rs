//! The fieldvitals load generator with ground truth, and the helpers of the benchmarks.
//!
//! Data path: [`workload`] defines a realistic page-view population (sites, Zipf-popular pages, real user agents,
//! releases, navigation types, per-group lognormal metric values) in which beacon `i` is a pure function of the seed
//! and `i`. [`run`] sends those beacons to a collector (or to the benchmark sink, or straight into ClickHouse) over
//! kept-alive connections, open loop at a constant rate ([`open_loop`]: raw HTTP/1.1 on a tick, answers timed by
//! the kernel's receive stamps) or closed loop (hyper), and records HDR latencies and which beacons were accepted. [`truth`] rebuilds the exact per-group counts and p75s of the accepted beacons, and
//! [`verify`] compares them with what the collector's query API answers. [`sink`] is benchmark (1), the limit;
//! [`seed`] loads the same samples into the embedded store and a raw ClickHouse table for the query benchmark;
//! [`floor`] measures the machine's own latency floor (a bare TCP echo at the same rate) for the tail-latency rows.

pub mod client;
pub mod floor;
pub mod open_loop;
pub mod run;
pub mod seed;
pub mod sink;
pub mod truth;
pub mod verify;
pub mod workload;
pub mod zipf;
