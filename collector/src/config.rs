//! Command-line flags and their environment variables.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::server::Pinning;
pub use crate::store_priority::StorePriorityMode;

/// The fieldvitals collector.
#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "fieldvitals: real-user Core Web Vitals collector"
)]
pub struct Cli {
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
    /// A maintenance command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Write a consistent online copy of the embedded store (safe while a collector runs) to an empty directory.
    Backup {
        /// Where to write the backup.
        #[arg(long)]
        to: PathBuf,
    },
    /// Create or upgrade the ClickHouse schema (--clickhouse-url) and drop partitions past retention.
    Migrate,
    /// Restore a backup into --data-dir (stop the collector first).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store in --data-dir.
        #[arg(long)]
        force: bool,
    },
}

/// `collector config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (flags, environment, policy file) with secrets redacted.
    Show,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per event.
    Json,
}

/// Service settings.
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// Address to listen on (beacons, query API, health).
    #[arg(long, env = "FIELDVITALS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "FIELDVITALS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Log format.
    #[arg(long, env = "FIELDVITALS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Most bytes the spool may hold before beacons are refused with 503 (accepted, not yet stored).
    #[arg(long, env = "FIELDVITALS_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Milliseconds between spool fsyncs (group commit); 0 syncs before every 204 (slower, survives power loss).
    #[arg(long, env = "FIELDVITALS_SPOOL_FSYNC_MS", default_value_t = 5)]
    pub spool_fsync_ms: u64,
    /// How long a graceful shutdown may take to drain and flush, in seconds.
    #[arg(long, env = "FIELDVITALS_SHUTDOWN_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_secs: u64,
    /// Admin listener for `/metrics` (keep it private; it is never served on `--listen`).
    #[arg(
        long,
        env = "FIELDVITALS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,
    /// Policy file (TOML): sites, allowed origins, sampling, rate limits, trusted proxies, query tokens.
    /// Reloaded on SIGHUP.
    #[arg(long = "config", env = "FIELDVITALS_CONFIG")]
    pub policy_file: Option<PathBuf>,
    /// Seconds a client has to send its request headers, from connecting or from its last answer (slow clients, and
    /// keep-alive connections idle that long, are cut off).
    #[arg(long, env = "FIELDVITALS_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Threads that serve the public listener's connections, each its own single-threaded runtime (0: serve them on
    /// the shared worker pool; at most 256). Default: one per CPU.
    #[arg(long, env = "FIELDVITALS_CONNECTION_THREADS", default_value_t = default_connection_threads(),
          value_parser = clap::value_parser!(u16).range(0..=MAX_CONNECTION_THREADS as i64))]
    pub connection_threads: u16,
    /// Bind connection threads to CPUs: `auto` puts thread `i` on the `i`-th CPU the process may use when there are
    /// exactly as many threads as those CPUs (the default thread count on a machine or cpuset of its own), `off`
    /// leaves them to the kernel.
    #[arg(long, env = "FIELDVITALS_PIN_CONNECTION_THREADS", value_enum, default_value_t = Pinning::Auto)]
    pub pin_connection_threads: Pinning,
    /// Seconds a whole request (headers and body) may take.
    #[arg(long, env = "FIELDVITALS_REQUEST_TIMEOUT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// Day rows of the embedded store older than this are deleted (0 keeps them forever).
    #[arg(long, env = "FIELDVITALS_RETENTION_DAYS", default_value_t = 400)]
    pub retention_days: u32,
    /// CPU priority of the embedded store's background work (spool replay, aggregation, writes): `idle` runs it at
    /// Linux's SCHED_IDLE, raised to normal whenever the oldest unstored beacon is older than 1.5 flush intervals,
    /// so it never delays a beacon's answer (needs CAP_SYS_NICE or RLIMIT_NICE 20 to raise it back; without them it
    /// stays normal); `normal` always runs it at normal priority.
    #[arg(long, env = "FIELDVITALS_STORE_PRIORITY", value_enum, default_value_t = StorePriorityMode::Idle)]
    pub store_priority: StorePriorityMode,
    /// ClickHouse storage (selected by --clickhouse-url).
    #[command(flatten)]
    pub clickhouse: crate::storage_select::ClickHouseArgs,
}

/// Most connection threads: more than cores buys nothing, and a typo must not start thousands of threads.
pub const MAX_CONNECTION_THREADS: u16 = 256;

/// One connection thread per CPU the process may use.
pub fn default_connection_threads() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().min(MAX_CONNECTION_THREADS as usize) as u16)
}

impl Config {
    /// Defaults for tests: port 0 on loopback, the given data dir.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            admin_listen: "127.0.0.1:0".parse().expect("literal address"),
            policy_file: None,
            header_timeout_secs: 10,
            connection_threads: default_connection_threads(),
            pin_connection_threads: Pinning::Auto,
            request_timeout_secs: 15,
            data_dir,
            log_format: LogFormat::Human,
            spool_max_bytes: 1 << 30,
            spool_fsync_ms: 5,
            shutdown_timeout_secs: 30,
            retention_days: 400,
            store_priority: StorePriorityMode::Idle,
            clickhouse: crate::storage_select::ClickHouseArgs::default(),
        }
    }

    /// The shutdown timeout.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// The effective configuration as TOML-like text, secrets redacted: flags and environment, then the policy file.
pub fn show(config: &Config) -> anyhow::Result<String> {
    let policy = crate::policy::PolicyHandle::load(config.policy_file.clone())?.get();
    let mut out = String::new();
    out += &format!("listen = \"{}\"\n", config.listen);
    out += &format!("admin_listen = \"{}\"\n", config.admin_listen);
    out += &format!("data_dir = \"{}\"\n", config.data_dir.display());
    out += &format!("log_format = \"{:?}\"\n", config.log_format).to_lowercase();
    out += &format!("spool_max_bytes = {}\n", config.spool_max_bytes);
    out += &format!("spool_fsync_ms = {}\n", config.spool_fsync_ms);
    out += &format!("store_priority = \"{:?}\"\n", config.store_priority).to_lowercase();
    out += &format!("shutdown_timeout_secs = {}\n", config.shutdown_timeout_secs);
    out += &format!("header_timeout_secs = {}\n", config.header_timeout_secs);
    out += &format!("connection_threads = {}\n", config.connection_threads);
    out += &format!(
        "pin_connection_threads = \"{:?}\"\n",
        config.pin_connection_threads
    )
    .to_lowercase();
    out += &format!("request_timeout_secs = {}\n", config.request_timeout_secs);
    out += &format!("retention_days = {}\n", config.retention_days);
    out += &config.clickhouse.show();
    out += &format!(
        "policy_file = {}\n",
        config
            .policy_file
            .as_ref()
            .map_or("none".to_string(), |p| format!("\"{}\"", p.display()))
    );
    out += "\n# policy\n";
    out += &format!(
        "allow_unknown_sites = {}\nbot_filter = {}\nhsts = {}\n",
        policy.allow_unknown_sites, policy.bot_filter, policy.hsts
    );
    let proxies: Vec<String> = policy
        .trusted_proxies
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect();
    out += &format!("trusted_proxies = [{}]\n", proxies.join(", "));
    if let Some(rl) = policy.default_rate_limit {
        out += &format!(
            "default_rate_limit = {{ per_second = {}, burst = {} }}\n",
            rl.per_second, rl.burst
        );
    }
    let mut sites: Vec<_> = policy.sites.iter().collect();
    sites.sort_by_key(|(k, _)| k.as_str());
    for (id, s) in sites {
        out += &format!(
            "\n[sites.{id}]\nallowed_origins = {:?}\nsample_rate = {}\n",
            s.allowed_origins, s.sample_rate
        );
        if let Some(rl) = s.rate_limit {
            out += &format!(
                "rate_limit = {{ per_second = {}, burst = {} }}\n",
                rl.per_second, rl.burst
            );
        }
    }
    for t in &policy.tokens {
        out += &format!(
            "\n[[tokens]]\nname = {:?}\nsha256 = \"<redacted>\"\nsites = {:?}\n",
            t.name, t.sites
        );
    }
    Ok(out)
}
