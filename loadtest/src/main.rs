//! The `loadtest` binary: `run` (load, report, `--verify`), `bench-sink`, `floor`, `seed`, `query-bench`.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use loadtest::client::loopback_target;
use loadtest::run::{run, RunConfig, Target};
use loadtest::seed::{self, SeedConfig};
use loadtest::workload::{Workload, WorkloadConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load generator with ground truth for fieldvitals, and benchmark helpers"
)]
struct Cli {
    /// Generator threads: tokio workers in closed loop, the open-loop engine's threads with `--rate` (the generator
    /// shares the machine with the server under test: keep it small).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct WorkloadArgs {
    /// Generator seed: the same seed sends the same beacons.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct pages over all sites.
    #[arg(long, default_value_t = 3000)]
    pages: usize,
    /// Sites are named `{prefix}-shop`, `{prefix}-news`, `{prefix}-docs`.
    #[arg(long, default_value = "lt")]
    site_prefix: String,
    /// How many of the three sites to use.
    #[arg(long, default_value_t = 3)]
    sites: usize,
    /// Send beacons without the attribution objects beacon.js puts on LCP, INP and CLS (the bodies of the runs
    /// before 2026-11-26 05:30 UTC).
    #[arg(long)]
    no_attribution: bool,
}

impl WorkloadArgs {
    fn config(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            pages: self.pages,
            site_prefix: self.site_prefix.clone(),
            sites: self.sites,
            attribution: !self.no_attribution,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Send beacons and report latency, rate and status codes; optionally verify what the collector stored.
    Run {
        /// Base URL of the server (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// Beacons per second, open loop (latency measured from each beacon's intended send time). Without it:
        /// closed loop, as fast as the server answers.
        #[arg(long)]
        rate: Option<f64>,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Stop after this many beacons.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// After the run, compare every group's n and p75 on the collector with the ground truth; exit 2 on any
        /// mismatch.
        #[arg(long)]
        verify: bool,
        /// Output format of the report (stdout).
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Distinct page views, built before the clock starts; beacon i is page view i % pool.
        #[arg(long, default_value_t = 500_000)]
        pool: u64,
        /// Write every beacon at least --slow-ms slow to this file, one line each: the intended send time (ms from
        /// the start), the latency and the service time (ms, from the actual send), to place a tail in time.
        #[arg(long)]
        slow_log: Option<PathBuf>,
        /// Seconds at the start of the run whose beacons are sent and counted (and verified) but left out of the
        /// latency figures and the slow log: the start-up of the generator and of each connection's first request.
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        /// The latency, in ms, from which --slow-log lists a beacon.
        #[arg(long, default_value_t = 2.0, requires = "slow_log")]
        slow_ms: f64,
        /// Insert each beacon's samples straight into this ClickHouse table (the "no collector" design) instead of
        /// posting beacons; --target is then ClickHouse's HTTP interface.
        #[arg(long)]
        clickhouse_table: Option<String>,
        /// ClickHouse user.
        #[arg(long)]
        clickhouse_user: Option<String>,
        /// ClickHouse password.
        #[arg(long)]
        clickhouse_password: Option<String>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// Benchmark (1): an axum server that reads each beacon body and answers 204.
    BenchSink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: std::net::SocketAddr,
    },
    /// The machine's latency floor: a bare loopback TCP echo (threads, no HTTP) paced at a rate, timed from each
    /// message's intended send time. What a run's tail latency is to be read against.
    Floor {
        /// Messages per second.
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Seed the query benchmark: the same samples into an embedded store and (optionally) a ClickHouse table.
    Seed {
        /// Embedded store directory (the collector's --data-dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// ClickHouse HTTP URL (loopback).
        #[arg(long)]
        clickhouse: Option<String>,
        #[command(flatten)]
        seed: SeedArgs,
    },
    /// Time p75-by-page over the seeded period on a collector and on ClickHouse (quantileExact), compare answers.
    QueryBench {
        /// Collector base URL, serving the seeded data dir.
        #[arg(long)]
        collector: String,
        /// ClickHouse HTTP URL.
        #[arg(long)]
        clickhouse: String,
        /// Untimed rounds of both queries first (their times are reported apart).
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Repetitions of each query.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Metric.
        #[arg(long, default_value = "LCP")]
        metric: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        seed: SeedArgs,
    },
}

#[derive(clap::Args)]
struct SeedArgs {
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Samples to seed.
    #[arg(long, default_value_t = 10_000_000)]
    samples: u64,
    /// Pages of the site.
    #[arg(long, default_value_t = 1000)]
    pages: usize,
    /// Days the samples are spread over.
    #[arg(long, default_value_t = 28)]
    days: i64,
    /// End of the seeded period, Unix ms (give the same value to `seed` and `query-bench`).
    #[arg(long)]
    now_ms: i64,
    /// ClickHouse table for the raw samples.
    #[arg(long, default_value = "default.fv_raw")]
    table: String,
    /// ClickHouse user.
    #[arg(long)]
    clickhouse_user: Option<String>,
    /// ClickHouse password.
    #[arg(long)]
    clickhouse_password: Option<String>,
}

impl SeedArgs {
    fn config(&self) -> SeedConfig {
        SeedConfig {
            seed: self.seed,
            samples: self.samples,
            pages: self.pages,
            days: self.days,
            now_ms: self.now_ms,
            site_prefix: "seed".into(),
        }
    }
    fn auth(&self) -> Vec<(&str, &str)> {
        let mut a = Vec::new();
        if let Some(u) = &self.clickhouse_user {
            a.push(("X-ClickHouse-User", u.as_str()));
        }
        if let Some(p) = &self.clickhouse_password {
            a.push(("X-ClickHouse-Key", p.as_str()));
        }
        a
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: a current-thread runtime, so connection tasks and workers never cross threads.
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_async(cli.command, cli.threads)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(cmd: Cmd, threads: usize) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run {
            target,
            rate,
            connections,
            count,
            duration,
            verify,
            format,
            no_progress,
            pool,
            slow_log,
            warmup,
            slow_ms,
            clickhouse_table,
            clickhouse_user,
            clickhouse_password,
            workload,
        } => {
            let addr = loopback_target(&target)?;
            let w = Arc::new(Workload::new(workload.config()));
            for (flag, v) in [
                ("--clickhouse-user", &clickhouse_user),
                ("--clickhouse-password", &clickhouse_password),
            ] {
                if let Some(v) = v {
                    anyhow::ensure!(
                        hyper::header::HeaderValue::from_str(v).is_ok(),
                        "{flag} must be printable text without line breaks (it is sent as a header)"
                    );
                }
            }
            let target_kind = match clickhouse_table {
                Some(table) => Target::ClickHouse {
                    table,
                    user: clickhouse_user,
                    password: clickhouse_password,
                },
                None => Target::Collector,
            };
            anyhow::ensure!(
                !(verify && matches!(target_kind, Target::ClickHouse { .. })),
                "--verify checks a collector's query API; it does not apply to --clickhouse-table"
            );
            let cfg = RunConfig {
                addr,
                target: target_kind,
                rate,
                connections,
                threads,
                count,
                duration: duration.map(Duration::from_secs_f64),
                progress: !no_progress,
                pool,
                slow_from: slow_log
                    .is_some()
                    .then(|| Duration::try_from_secs_f64(slow_ms / 1000.0))
                    .transpose()
                    .map_err(|_| anyhow::anyhow!("--slow-ms must be a number of ms, 0 or more"))?,
                warmup: Duration::try_from_secs_f64(warmup).map_err(|_| {
                    anyhow::anyhow!("--warmup must be a number of seconds, 0 or more")
                })?,
            };
            let outcome = run(w.clone(), &cfg).await?;
            if let Some(path) = &slow_log {
                let mut text = String::with_capacity(outcome.slow.len() * 16);
                for (at, lat, service) in &outcome.slow {
                    text.push_str(&format!(
                        "{:.3} {:.3} {:.3}\n",
                        at.as_secs_f64() * 1000.0,
                        lat.as_secs_f64() * 1000.0,
                        service.as_secs_f64() * 1000.0
                    ));
                }
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let summary = outcome.summary(&cfg);
            let mut json = serde_json::json!({ "run": summary });
            let mut code = ExitCode::SUCCESS;
            let mut text = summary.text();
            if verify {
                let v = loadtest::verify::verify(
                    addr,
                    &w,
                    &outcome.accepted,
                    &outcome.totals,
                    outcome.last_accepted_at,
                )
                .await?;
                let c = &v.comparison;
                text.push_str(&format!(
                    "verify: {} accepted beacons, {} groups, {} mismatches, largest p75 error {:.4}%, queryable {}\n",
                    v.beacons,
                    c.groups,
                    c.mismatches.len(),
                    c.max_relative_error * 100.0,
                    v.freshness
                        .map_or("NOT within 30 s".to_string(), |d| format!("{:.3} s after the last answer", d.as_secs_f64()))
                ));
                for m in c.mismatches.iter().take(10) {
                    text.push_str(&format!("  mismatch: {m}\n"));
                }
                json["verify"] = serde_json::json!({
                    "ok": c.ok(),
                    "beacons": v.beacons,
                    "groups": c.groups,
                    "mismatches": c.mismatches.len(),
                    "examples": c.mismatches.iter().take(10).map(|m| m.to_string()).collect::<Vec<_>>(),
                    "max_relative_error": c.max_relative_error,
                    "freshness_s": v.freshness.map(|d| d.as_secs_f64()),
                });
                if !c.ok() || v.freshness.is_none() {
                    code = ExitCode::from(2);
                }
            }
            match format {
                Format::Text => print!("{text}"),
                Format::Json => println!("{}", serde_json::to_string_pretty(&json)?),
            }
            Ok(code)
        }
        Cmd::Floor {
            rate,
            duration,
            format,
        } => {
            anyhow::ensure!(
                duration > 0.0 && duration.is_finite(),
                "--duration must be a positive number of seconds"
            );
            let r = tokio::task::spawn_blocking(move || {
                loadtest::floor::probe(rate, Duration::from_secs_f64(duration))
            })
            .await??;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Format::Text => {
                    let l = &r.latency_ms;
                    println!(
                        "floor: {} echoes at {:.0}/s; round trip from the intended send p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
                        r.completed, r.target_rate, l.p50, l.p90, l.p99, l.p999, l.max
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchSink { listen } => {
            loadtest::sink::serve(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seed {
            data_dir,
            clickhouse,
            seed,
        } => {
            let cfg = seed.config();
            if let Some(dir) = data_dir {
                let t = Instant::now();
                let (beacons, samples) = seed::seed_embedded(&dir, &cfg).await?;
                println!(
                    "embedded: {beacons} beacons, {samples} samples into {} in {:.1} s",
                    dir.display(),
                    t.elapsed().as_secs_f64()
                );
            }
            if let Some(url) = clickhouse {
                let addr = loopback_target(&url)?;
                let auth = seed.auth();
                let (status, body) = loadtest::client::post(
                    addr,
                    "/",
                    &auth,
                    bytes::Bytes::from(seed::clickhouse_schema(&seed.table)),
                )
                .await?;
                anyhow::ensure!(
                    status == 200,
                    "create table: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                let t = Instant::now();
                let rows = seed::seed_clickhouse(addr, &seed.table, &auth, &cfg).await?;
                println!(
                    "clickhouse: {rows} rows into {} in {:.1} s",
                    seed.table,
                    t.elapsed().as_secs_f64()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::QueryBench {
            collector,
            clickhouse,
            warmup,
            repeat,
            metric,
            format,
            seed,
        } => {
            let metric = vitals::Metric::parse(&metric.to_ascii_uppercase())
                .ok_or_else(|| anyhow::anyhow!("unknown metric {metric}"))?;
            let r = seed::query_bench(
                loopback_target(&collector)?,
                loopback_target(&clickhouse)?,
                &seed.table,
                &seed.auth(),
                &seed.config(),
                metric,
                seed::Rounds { warmup, repeat },
            )
            .await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Format::Text => println!(
                    "p75 by page, {} pages, {} samples: fieldvitals median {:.1} ms, ClickHouse quantileExact median {:.1} ms, \
                     {:.1}x faster; max p75 error fieldvitals {:.4}%, ClickHouse {:.4}%, fieldvitals vs ClickHouse {:.4}%; \
                     count mismatches fieldvitals {}, ClickHouse {}; untimed warm-up rounds (ms): fieldvitals {}, \
                     ClickHouse {}",
                    r.pages,
                    r.samples,
                    r.fieldvitals.median_ms,
                    r.clickhouse.median_ms,
                    r.speedup,
                    r.fieldvitals_max_rel_error * 100.0,
                    r.clickhouse_max_rel_error * 100.0,
                    r.fieldvitals_vs_clickhouse_max_rel_diff * 100.0,
                    r.count_mismatches,
                    r.clickhouse_count_mismatches,
                    list_ms(&r.fieldvitals.warmup_ms),
                    list_ms(&r.clickhouse.warmup_ms),
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Times as "12.3 4.5 …" ("none" when empty).
fn list_ms(times: &[f64]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    times
        .iter()
        .map(|t| format!("{t:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}
