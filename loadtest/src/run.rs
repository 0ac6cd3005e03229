//! The load engine: open loop at a constant arrival rate, or closed loop as fast as the server answers.
//!
//! Open loop avoids coordinated omission: beacon `i` is due at its intended time `start + i/rate` whatever the
//! server is doing, and latency is measured from then, so a stall shows up as the queue of beacons that waited
//! behind it, exactly as browsers would have seen it ([`crate::open_loop`], its own lean engine). Service time (from
//! the actual send) is reported too. Closed loop measures the maximum rate: tokio workers with one kept-alive hyper
//! connection each, every one sending its next beacon as soon as the last is answered.

use crate::client;
use crate::workload::{PageView, Workload};
use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::Request;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vitals::Metric;

/// Where the beacons go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fieldvitals collector (or the benchmark sink): `POST /v1/beacon`, 204 means accepted.
    Collector,
    /// The "no collector" design: one `INSERT … FORMAT JSONEachRow` per beacon into a raw-samples table over
    /// ClickHouse's HTTP interface; 200 means stored.
    ClickHouse {
        /// Table to insert into.
        table: String,
        /// User (`X-ClickHouse-User`).
        user: Option<String>,
        /// Password (`X-ClickHouse-Key`).
        password: Option<String>,
    },
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The server.
    pub addr: SocketAddr,
    /// What it is.
    pub target: Target,
    /// Beacons per second (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Generator threads in open loop (each owns a share of the connections and of the beacons). Closed loop runs
    /// on the caller's tokio runtime, whose worker count is set where it is built.
    pub threads: usize,
    /// Stop after this many beacons.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Distinct page views: beacon `i` is page view `i % pool`. Their bodies are all built before the clock starts,
    /// so the generator spends its time sending; a run longer than the pool repeats page views (the ground truth
    /// counts each repetition).
    pub pool: u64,
    /// Beacons at least this slow (latency as in [`RunOutcome::latency_us`]) are listed in [`RunOutcome::slow`], to
    /// place a tail in time (a stall every second points at a periodic task); `None` lists none.
    pub slow_from: Option<Duration>,
    /// Beacons due (open loop) or sent (closed loop) in this first part of the run are sent and counted like every
    /// other, but left out of the latency figures and the slow list: a run's first tenth of a second carries the
    /// start-up of the load generator and the server's first requests on each connection.
    pub warmup: Duration,
}

/// What happened.
#[derive(Debug)]
pub struct RunOutcome {
    /// Latency from the intended send time (open loop) or the actual send (closed loop), microseconds.
    pub latency_us: Histogram<u64>,
    /// Time from the actual send to the full answer, microseconds.
    pub service_us: Histogram<u64>,
    /// Answers by status code (0: connection error).
    pub statuses: BTreeMap<u16, u64>,
    /// Requests completed (any answer or error).
    pub completed: u64,
    /// Wall time from start until the last answer.
    pub elapsed: Duration,
    /// CPU time this process (every thread) used while the clock ran: the load generator shares the machine with
    /// the server under test.
    pub cpu: Duration,
    /// Requests in the warm-up ([`RunConfig::warmup`]), left out of the latency figures.
    pub warmup_requests: u64,
    /// The beacons at least [`RunConfig::slow_from`] slow: (intended send, from the start; latency; service time),
    /// in send order. A latency well above the service time is a beacon that waited before it was sent: for a free
    /// connection (the server was behind) or for the generator itself.
    pub slow: Vec<(Duration, Duration, Duration)>,
    /// Page-view indices of accepted beacons (204 from a collector, 200 from ClickHouse), sorted; a page view sent
    /// twice appears twice.
    pub accepted: Vec<u64>,
    /// Samples in the accepted beacons.
    pub accepted_samples: u64,
    /// When the last accepted beacon was answered.
    pub last_accepted_at: Option<Instant>,
    /// Open loop: beacons due before the deadline that were still waiting for a connection when it came (the
    /// server fell behind the offered rate).
    pub backlog: u64,
    /// Accepted samples per site index and metric (in [`Metric::ALL`] order): what must become queryable. Counted
    /// from a table built with the bodies, so `--verify` can start measuring freshness at once.
    pub totals: Vec<[u64; 5]>,
}

/// The JSON-friendly summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// "open" or "closed".
    pub mode: &'static str,
    /// Target rate, open loop only.
    pub target_rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Requests completed.
    pub completed: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Completed requests per second.
    pub achieved_rate: f64,
    /// Accepted beacons.
    pub accepted: u64,
    /// Accepted beacons per second.
    pub accepted_rate: f64,
    /// Accepted samples per second.
    pub accepted_samples_rate: f64,
    /// Status code counts ("0" is a connection error).
    pub statuses: BTreeMap<String, u64>,
    /// Open loop: beacons due before the deadline but never sent (the server fell behind the offered rate).
    pub backlog: u64,
    /// Requests in the warm-up, not in the latency figures.
    pub warmup_requests: u64,
    /// Latency percentiles in milliseconds (from the intended send time in open loop), after the warm-up.
    pub latency_ms: Percentiles,
    /// Service time percentiles in milliseconds.
    pub service_ms: Percentiles,
    /// The load generator's own CPU time per request completed, in µs (all its threads, while the clock ran).
    pub load_generator_cpu_us_per_request: f64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl RunOutcome {
    /// The summary of a run made with `cfg`.
    pub fn summary(&self, cfg: &RunConfig) -> Summary {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Summary {
            mode: if cfg.rate.is_some() { "open" } else { "closed" },
            target_rate: cfg.rate,
            connections: cfg.connections,
            completed: self.completed,
            elapsed_s: secs,
            achieved_rate: self.completed as f64 / secs,
            accepted: self.accepted.len() as u64,
            accepted_rate: self.accepted.len() as f64 / secs,
            accepted_samples_rate: self.accepted_samples as f64 / secs,
            backlog: self.backlog,
            warmup_requests: self.warmup_requests,
            statuses: self
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            latency_ms: Percentiles::of(&self.latency_us),
            service_ms: Percentiles::of(&self.service_us),
            load_generator_cpu_us_per_request: self.cpu.as_secs_f64() * 1e6
                / self.completed.max(1) as f64,
        }
    }
}

impl Summary {
    /// A human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mode = match self.target_rate {
            Some(r) => format!("open loop at {r:.0}/s"),
            None => "closed loop".to_string(),
        };
        s.push_str(&format!(
            "{mode}, {} connections: {} requests in {:.2} s = {:.0}/s; accepted {} ({:.0} beacons/s, {:.0} samples/s)\n",
            self.connections,
            self.completed,
            self.elapsed_s,
            self.achieved_rate,
            self.accepted,
            self.accepted_rate,
            self.accepted_samples_rate
        ));
        let codes: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| {
                if k == "0" {
                    format!("errors: {v}")
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect();
        s.push_str(&format!("status: {}\n", codes.join(", ")));
        if self.backlog > 0 {
            s.push_str(&format!(
                "backlog: {} beacons due before the deadline were never sent: the server did not keep up\n",
                self.backlog
            ));
        }
        let line = |name: &str, p: &Percentiles| {
            format!(
                "{name:<9} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms\n",
                p.p50, p.p90, p.p99, p.p999, p.max
            )
        };
        if self.warmup_requests > 0 {
            s.push_str(&format!(
                "warm-up: {} requests, not in the latency figures\n",
                self.warmup_requests
            ));
        }
        s.push_str(&line("latency", &self.latency_ms));
        s.push_str(&line("service", &self.service_ms));
        s.push_str(&format!(
            "load generator: {:.1} µs of CPU per request\n",
            self.load_generator_cpu_us_per_request
        ));
        s
    }
}

pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

pub(crate) struct Shared {
    target: Target,
    host: String,
    /// Where every request goes: the beacon route, or the INSERT for ClickHouse.
    path: String,
    bodies: Vec<(Bytes, u16)>,
    completed: AtomicU64,
    /// [`RunConfig::slow_from`].
    slow_from: Option<Duration>,
    /// [`RunConfig::warmup`].
    warmup: Duration,
}

impl Shared {
    /// Beacon `i`'s body, after passing each of its headers but Content-Length to `header` (names lower-case).
    fn parts(&self, i: u64, mut header: impl FnMut(&'static str, &str)) -> &Bytes {
        let (body, ua) = &self.bodies[(i % self.bodies.len() as u64) as usize];
        header("host", &self.host);
        match &self.target {
            Target::Collector => {
                header("user-agent", crate::workload::USER_AGENTS[*ua as usize].0);
                header("content-type", "text/plain;charset=UTF-8");
            }
            Target::ClickHouse { user, password, .. } => {
                if let Some(u) = user {
                    header("x-clickhouse-user", u);
                }
                if let Some(p) = password {
                    header("x-clickhouse-key", p);
                }
            }
        }
        body
    }

    /// Beacon `i`'s request, head and body, as raw HTTP/1.1 (the open-loop engine's), appended to `out`.
    pub(crate) fn write_request(&self, i: u64, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "POST {} HTTP/1.1\r\n", self.path);
        let body = self.parts(i, |name, value| {
            let _ = write!(out, "{name}: {value}\r\n");
        });
        let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
        out.extend_from_slice(body);
    }

    /// Beacon `i`'s request for hyper (the closed loop's).
    fn request(&self, i: u64) -> Request<Full<Bytes>> {
        let mut req = Request::post(&self.path)
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let headers = req.headers_mut();
        let body = self.parts(i, |name, value| {
            headers.append(
                hyper::header::HeaderName::from_static(name),
                hyper::header::HeaderValue::from_str(value).expect("a valid header value"),
            );
        });
        *req.body_mut() = Full::new(body.clone());
        req
    }
}

/// The body for a target: the beacon for a collector, JSONEachRow sample rows for ClickHouse.
pub fn make_body(w: &Workload, target: &Target, v: &PageView) -> (Bytes, u16) {
    let body = match target {
        Target::Collector => w.body(v),
        Target::ClickHouse { .. } => clickhouse_rows(w, v, chrono::Utc::now().timestamp_millis()),
    };
    (Bytes::from(body), v.ua)
}

/// Builds the bodies of page views `0..n` on every core.
fn pregenerate(w: &Workload, target: &Target, n: u64) -> Vec<(Bytes, u16)> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()) as u64;
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(n))
                        .map(|i| make_body(w, target, &w.page_view(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("generator thread"))
            .collect()
    })
}

/// One JSON row per sample: what a "no collector" endpoint would insert.
pub fn clickhouse_rows(w: &Workload, v: &PageView, ts_ms: i64) -> String {
    let site = &w.sites()[v.site as usize].name;
    let page = w.page_key(v.site, v.page);
    let device = crate::workload::USER_AGENTS[v.ua as usize].1.as_str();
    let release = crate::workload::RELEASES[v.release as usize]
        .0
        .unwrap_or("");
    let nav = crate::workload::NAVS[v.nav as usize].1;
    let mut s = String::with_capacity(600);
    for (m, value) in Metric::ALL.iter().zip(v.values) {
        if let Some(value) = value {
            s.push_str(&format!(
                r#"{{"ts":{ts_ms},"site":"{site}","page":"{page}","device":"{device}","release":"{release}","nav":"{nav}","metric":"{}","value":{value}}}"#,
                m.as_str()
            ));
            s.push('\n');
        }
    }
    s
}

/// One worker's (closed loop) or generator thread's (open loop) share of a run.
pub(crate) struct WorkerResult {
    warmup: u64,
    latency: Histogram<u64>,
    slow: Vec<(Duration, Duration, Duration)>,
    service: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    accepted: Vec<u64>,
    last_accepted_at: Option<Instant>,
}

/// When one beacon was due, sent and answered.
pub(crate) struct Times {
    /// When it was due (open loop) or sent (closed loop): decides whether it is in the warm-up.
    pub due: Instant,
    /// Where its latency starts: the intended time (a beacon that waited for a free connection waited for the
    /// server), or the actual send if that was earlier.
    pub from: Instant,
    /// When it was written.
    pub sent: Instant,
    /// When the answer was in (or the connection failed).
    pub done: Instant,
}

impl WorkerResult {
    pub(crate) fn new() -> WorkerResult {
        WorkerResult {
            warmup: 0,
            latency: new_hist(),
            slow: Vec::new(),
            service: new_hist(),
            statuses: BTreeMap::new(),
            accepted: Vec::new(),
            last_accepted_at: None,
        }
    }

    /// Counts beacon `i`, answered with `status` (0: a connection error).
    pub(crate) fn record(
        &mut self,
        shared: &Shared,
        start: Instant,
        i: u64,
        t: Times,
        status: u16,
    ) {
        if t.due.saturating_duration_since(start) < shared.warmup {
            self.warmup += 1;
        } else {
            let lat = t.done.saturating_duration_since(t.from);
            let service = t.done.saturating_duration_since(t.sent);
            self.latency
                .saturating_record((lat.as_micros() as u64).max(1));
            if shared.slow_from.is_some_and(|s| lat >= s) {
                self.slow
                    .push((t.from.saturating_duration_since(start), lat, service));
            }
            self.service
                .saturating_record((service.as_micros() as u64).max(1));
        }
        *self.statuses.entry(status).or_default() += 1;
        let ok_status = match shared.target {
            Target::Collector => 204,
            Target::ClickHouse { .. } => 200,
        };
        if status == ok_status {
            self.accepted.push(i % shared.bodies.len() as u64);
            self.last_accepted_at = self.last_accepted_at.max(Some(t.done));
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Closed loop: one worker per connection, sending its next beacon as soon as the last is answered.
async fn worker(
    shared: Arc<Shared>,
    addr: SocketAddr,
    jobs: Jobs,
    conn: client::Connection,
    start: Instant,
) -> WorkerResult {
    let mut r = WorkerResult::new();
    let mut conn = Some(conn);
    while let Some(i) = jobs.next() {
        let req = shared.request(i);
        let started = Instant::now();
        if conn.is_none() {
            conn = client::connect(addr).await.ok();
        }
        let status = match conn.as_mut() {
            Some(c) => match client::send(c, req).await {
                Ok((status, _)) => status,
                Err(_) => {
                    conn = None;
                    0
                }
            },
            None => {
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
                0
            }
        };
        let t = Times {
            due: started,
            from: started,
            sent: started,
            done: Instant::now(),
        };
        r.record(&shared, start, i, t, status);
    }
    r
}

/// Where closed-loop workers get their next beacon index.
#[derive(Clone)]
struct Jobs {
    next: Arc<AtomicU64>,
    count: u64,
    deadline: Instant,
}

impl Jobs {
    fn next(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.count).then_some(i)
    }
}

/// Runs the load. Needs a tokio runtime; the pacer runs on its own OS thread.
pub async fn run(workload: Arc<Workload>, cfg: &RunConfig) -> anyhow::Result<RunOutcome> {
    anyhow::ensure!(cfg.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(
        cfg.count.is_some() || cfg.duration.is_some(),
        "a run must be bounded: give --count or --duration"
    );
    if let Some(r) = cfg.rate {
        anyhow::ensure!(r > 0.0 && r.is_finite(), "--rate must be above 0");
    }
    if let Some(d) = cfg.duration {
        anyhow::ensure!(
            cfg.warmup < d,
            "--warmup must be shorter than --duration: nothing would be measured"
        );
    }
    let count = cfg.count.unwrap_or(u64::MAX);
    anyhow::ensure!(cfg.pool >= 1, "--pool must be at least 1");
    let bodies = pregenerate(&workload, &cfg.target, cfg.pool.min(count));
    // Per pool entry: its site and which metrics it carries (bit per metric).
    let shape: Vec<(u16, u8)> = (0..bodies.len() as u64)
        .map(|i| {
            let v = workload.page_view(i);
            let mask = v
                .values
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_some())
                .fold(0u8, |m, (k, _)| m | (1 << k));
            (v.site, mask)
        })
        .collect();
    let shared = Arc::new(Shared {
        target: cfg.target.clone(),
        host: cfg.addr.to_string(),
        path: match &cfg.target {
            Target::Collector => "/v1/beacon".to_string(),
            Target::ClickHouse { table, .. } => format!(
                "/?query={}",
                client::encode_query_value(&format!("INSERT INTO {table} FORMAT JSONEachRow"))
            ),
        },
        bodies,
        completed: AtomicU64::new(0),
        slow_from: cfg.slow_from,
        warmup: cfg.warmup,
    });
    // Connect everything before the clock starts: connection set-up is not what is measured.
    enum Conns {
        Open(Vec<std::net::TcpStream>),
        Closed(Vec<client::Connection>),
    }
    let conns = if cfg.rate.is_some() {
        let (addr, n) = (cfg.addr, cfg.connections);
        let streams = tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|_| crate::open_loop::connect(addr))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await?
        .with_context(|| format!("cannot connect to {addr}"))?;
        Conns::Open(streams)
    } else {
        let mut conns = Vec::with_capacity(cfg.connections);
        for _ in 0..cfg.connections {
            conns.push(client::connect(cfg.addr).await?);
        }
        Conns::Closed(conns)
    };

    let start = Instant::now();
    let cpu_start = process_cpu_time();
    let deadline = cfg
        .duration
        .map_or(start + Duration::from_secs(86_400 * 365), |d| start + d);

    let progress = cfg.progress.then(|| {
        let pb = match cfg.count {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new(cfg.duration.map_or(0, |d| d.as_millis() as u64)),
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        let shared = shared.clone();
        let by_count = cfg.count.is_some();
        let pb2 = pb.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = shared.completed.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                if by_count {
                    pb2.set_position(done);
                } else {
                    pb2.set_position(start.elapsed().as_millis() as u64);
                }
                pb2.set_message(format!(
                    "{done} sent, {:.0}/s",
                    done as f64 / secs.max(1e-3)
                ));
            }
        });
        (pb, ticker)
    });

    let mut handles = Vec::with_capacity(cfg.connections);
    match conns {
        Conns::Open(streams) => {
            let rate = cfg.rate.expect("open loop has a rate");
            let threads = cfg.threads.clamp(1, streams.len().max(1));
            let mut shares: Vec<Vec<std::net::TcpStream>> =
                (0..threads).map(|_| Vec::new()).collect();
            for (k, s) in streams.into_iter().enumerate() {
                shares[k % threads].push(s);
            }
            for (t, share) in shares.into_iter().enumerate() {
                let plan = crate::open_loop::Plan {
                    thread: t as u64,
                    threads: threads as u64,
                    rate,
                    count,
                    start,
                    deadline,
                    addr: cfg.addr,
                };
                let shared = shared.clone();
                handles.push(tokio::task::spawn_blocking(move || {
                    crate::open_loop::run_thread(shared, plan, share)
                }));
            }
        }
        Conns::Closed(conns) => {
            let jobs = Jobs {
                next: Arc::new(AtomicU64::new(0)),
                count,
                deadline,
            };
            for conn in conns {
                handles.push(tokio::spawn(worker(
                    shared.clone(),
                    cfg.addr,
                    jobs.clone(),
                    conn,
                    start,
                )));
            }
        }
    }
    let mut out = RunOutcome {
        latency_us: new_hist(),
        service_us: new_hist(),
        statuses: BTreeMap::new(),
        completed: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        accepted: Vec::new(),
        accepted_samples: 0,
        last_accepted_at: None,
        backlog: 0,
        totals: vec![[0; 5]; workload.sites().len()],
        slow: Vec::new(),
        warmup_requests: 0,
    };
    for h in handles {
        let r = h.await?;
        out.latency_us.add(&r.latency).expect("same bounds");
        out.service_us.add(&r.service).expect("same bounds");
        for (k, v) in r.statuses {
            *out.statuses.entry(k).or_default() += v;
        }
        out.accepted.extend(r.accepted);
        out.slow.extend(r.slow);
        out.warmup_requests += r.warmup;
        out.last_accepted_at = out.last_accepted_at.max(r.last_accepted_at);
    }
    out.elapsed = start.elapsed();
    out.cpu = process_cpu_time().saturating_sub(cpu_start);
    if let Some((pb, ticker)) = progress {
        ticker.abort();
        pb.finish_and_clear();
    }
    out.completed = shared.completed.load(Ordering::Relaxed);
    if let (Some(rate), Some(d)) = (cfg.rate, cfg.duration) {
        let due = ((d.as_secs_f64() * rate).ceil() as u64).min(count);
        out.backlog = due.saturating_sub(out.completed);
    }
    out.accepted.sort_unstable();
    out.slow.sort_unstable();
    for &i in &out.accepted {
        let (site, mask) = shape[i as usize];
        for (k, total) in out.totals[site as usize].iter_mut().enumerate() {
            if mask & (1 << k) != 0 {
                *total += 1;
                out.accepted_samples += 1;
            }
        }
    }
    Ok(out)
}

/// CPU time used by every thread of this process so far.
fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
