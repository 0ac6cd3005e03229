#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, side by side in one run on one machine: `bash loadtest/bench.sh [steps…]`.
#
# Steps (default: all that can run here): ingest (1 sink, 2 collector, wrk cross-check, verify + freshness, (1) at (2)'s half
# rate and at its own, the machine's floor),
# clickhouse-collector (3, needs CH_COLLECTOR_BIN: a collector build with --clickhouse-url), direct (4, one
# ClickHouse INSERT per beacon), query (5, 10M samples, 1,000 pages, 28 days), rss (5 minutes, 100,000 pages).
#
# Environment:
#   COLLECTOR_BIN     collector under test (default: this tree's, built in release)
#   CH_COLLECTOR_BIN  collector build that has the ClickHouse store (step 3 is skipped without it)
#   LOADTEST_BIN      loadtest (default: this tree's, built in release)
#   OUT               results directory (default /tmp/fv-bench); every run's JSON lands there
#   DURATION          seconds per throughput run (default 20); RSS_SECONDS (default 300)
#   WARMUP            seconds at the start of each open-loop run sent and counted but not timed (default 1): the
#                     first tenth of a second of a run queues beacons behind the generator's own start-up, at the
#                     sink as at the collector
#   CONNECTIONS       keep-alive connections (default 64); LOADTEST_THREADS (default 1): the load generator's
#                     threads where a run does not say otherwise
#   OPEN_THREADS      the open-loop engine's threads in every run at a set rate (default 1: one thread wakes on its
#                     tick for all 64 connections; two woke twice as often for no gain, docs/benchmarks.md)
#   MAX_THREADS       load-generator thread counts each closed-loop maximum run is made with (default "1 2"); a
#                     server's maximum is its best of them. The generator shares the two cores with the server, and
#                     which count saturates a server depends on the server (the one-thread sink and a one-thread
#                     generator fill both cores; the collector's two connection threads and a one-thread generator
#                     left 14 % of the CPU idle, with 2 threads 6 %). The sink runs with the generator's count.
#                     The latency runs use the count of (2)'s median pair
#   PAIRS             sink/server pairs run back to back for the (2)/(1) and (3)/(1) ratios (default 3): each
#                     pair's ratio is printed and the median pair is reported (a shared machine drifts by tens of
#                     percent within minutes, so a ratio of runs minutes apart says little)
#   HALF_RUNS         open-loop runs of (2) at half its maximum rate (default 3): the first also verifies; the p99
#                     is reported per run and over all their beacons pooled
#   QUERY_SAMPLES     samples seeded for step 5 (default 10000000)
#   QUERY_DATA, QUERY_NOW_MS  reuse an embedded store seeded earlier (`loadtest seed --data-dir … --now-ms …` with
#                     the same samples, 1,000 pages, 28 days): step 5 then seeds only ClickHouse
# ClickHouse: a private server from .ci/clickhouse.sh (ports 18223/19100, data in $OUT/clickhouse), stopped at the end
# when this run started it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-/tmp/fv-bench}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-1}"
RSS_SECONDS="${RSS_SECONDS:-300}"
CONNECTIONS="${CONNECTIONS:-64}"
PAIRS="${PAIRS:-3}"
HALF_RUNS="${HALF_RUNS:-3}"
LOADTEST_THREADS="${LOADTEST_THREADS:-1}"
OPEN_THREADS="${OPEN_THREADS:-1}"
MAX_THREADS="${MAX_THREADS:-1 2}"
QUERY_SAMPLES="${QUERY_SAMPLES:-10000000}"
SINK_PORT=18099
COLLECTOR_PORT=18080
ADMIN_PORT=18090
export FV_CH_DIR="$OUT/clickhouse" FV_CH_HTTP_PORT=18223 FV_CH_TCP_PORT=19100
CH_URL="http://127.0.0.1:$FV_CH_HTTP_PORT"
mkdir -p "$OUT"
STEPS="${*:-ingest clickhouse-collector direct query rss}"

say() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" | tee -a "$OUT/bench.log" >&2; }
note() { echo "$*" | tee -a "$OUT/bench.log"; }

if [ -z "${COLLECTOR_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  say "build (release)"
  cargo build --release -p collector -p loadtest
  TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
  COLLECTOR_BIN="${COLLECTOR_BIN:-$TARGET/release/collector}"
  LOADTEST_BIN="${LOADTEST_BIN:-$TARGET/release/loadtest}"
fi
# The load generator (and the sink, which is the same binary) with RUN_THREADS threads, LOADTEST_THREADS if unset.
lt() { "$LOADTEST_BIN" --threads "${RUN_THREADS:-$LOADTEST_THREADS}" "$@"; }

note "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
note "collector: $COLLECTOR_BIN"

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  # A server this run started is stopped; one that was already running is left alone.
  if [ -n "${CH_OURS:-}" ]; then bash .ci/clickhouse.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing answers on port $1" >&2
  return 1
}

ch_start() {
  if [ -z "${CH_OURS:-}" ] && ! bash .ci/clickhouse.sh status >/dev/null 2>&1; then CH_OURS=1; fi
  bash .ci/clickhouse.sh start >/dev/null || {
    echo "bench.sh: ClickHouse did not start on ports $FV_CH_HTTP_PORT/$FV_CH_TCP_PORT; is another server using them? ($FV_CH_DIR/log)" >&2
    return 1
  }
}

wait_tcp() { # the sink has no health route: wait until its port accepts connections
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

start_collector() { # $1 data dir, then extra flags; sets CPID
  local dir="$1"
  shift
  "$COLLECTOR_BIN" --listen "127.0.0.1:$COLLECTOR_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$dir" "$@" \
    >"$OUT/collector.log" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  wait_port "$COLLECTOR_PORT" /healthz
}

# Where in time a half-rate run's beacons of 2 ms or more were (from `loadtest run --slow-log`, after the warm-up):
# how many, how many in the first 100 ms timed, and the share of the rest in the busiest tenth of a second (a
# periodic stall, such as a once-a-second flush, puts most of them in one tenth).
slow_summary() { # $1 run name
  note "$1: $(python3 - "$OUT/$1.slow" "$OUT/$1.json" "$WARMUP" <<'PY'
import json, sys
# A log may list beacons from a lower threshold (the half-rate runs log from 1 ms, for the pooled p99).
rows = [r for r in (tuple(map(float, l.split()[:2])) for l in open(sys.argv[1]) if l.strip()) if r[1] >= 2.0]
run = json.load(open(sys.argv[2]))["run"]
n = run["completed"] - run.get("warmup_requests", 0)
first = float(sys.argv[3]) * 1000 + 100
start = sum(1 for t, _ in rows if t < first)
rest = [t for t, _ in rows if t >= first]
slots = [0] * 10
for t in rest:
    slots[int(t % 1000) // 100] += 1
busiest = max(range(10), key=lambda i: slots[i])
share = slots[busiest] / len(rest) if rest else 0.0
print(f"{len(rows)} timed beacons of 2 ms or more ({100 * len(rows) / max(n, 1):.2f} %), {start} of them in the first 100 ms timed; "
      f"of the rest, {100 * share:.0f} % in the tenth of a second at {busiest * 100}-{busiest * 100 + 99} ms of each second")
PY
)"
}

# How often the collector's governor has raised the store's threads to normal priority so far (at normal priority they
# compete with the request path for the CPU): a half-rate run is read with it.
store_raises() { # $1 run name
  note "$1: store threads raised to normal priority $(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^fieldvitals_store_priority_raised_total/ {print $2}') times since the collector started"
}

# The p99 of (2) at half rate over every beacon timed in the runs named (their slow logs list each beacon of 1 ms or
# more): one run's p99 moves by more than the gap to 2 ms from one minute to the next here, so the figure reported is
# the p99 of all their beacons together, with each run's own.
pooled_p99() { # run names
  note "(2) at half rate, $# runs pooled: $(python3 - "$OUT" "$@" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
lat, n, each = [], 0, []
for name in names:
    r = json.load(open(f"{out}/{name}.json"))["run"]
    n += r["completed"] - r.get("warmup_requests", 0)
    lat += [float(l.split()[1]) for l in open(f"{out}/{name}.slow") if l.strip()]
    each.append(f'{r["latency_ms"]["p99"]:.3f}')
lat.sort(reverse=True)
k = int(0.01 * n)  # the p99 is the (k+1)-th slowest of n
over2 = sum(1 for x in lat if x >= 2.0)
p99 = f"{lat[k]:.3f} ms" if k < len(lat) else "under 1 ms"
print(f"p99 {p99} over {n} timed beacons ({over2} of them, {100 * over2 / max(n, 1):.2f} %, at 2 ms or more); "
      f"each run's p99: {' / '.join(each)} ms")
PY
)"
}

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$@"; }

# CPU time of every thread of process $1, summed by thread name: "name ticks" lines.
cpu_ticks() {
  for t in /proc/"$1"/task/*; do
    awk '{ match($0, /\(.*\)/); name = substr($0, RSTART + 1, RLENGTH - 2); split(substr($0, RSTART + RLENGTH + 1), f, " ");
           gsub(/ /, "_", name); print name, f[12] + f[13] }' "$t/stat" 2>/dev/null
  done | awk '{ a[$1] += $2 } END { for (k in a) print k, a[k] }'
}

# The share of this VM's CPU time the host took (steal) since the /proc/stat "cpu" line $1: a run during which the
# host took a large share measures the host as much as the server.
steal_share() {
  python3 - "$1" "$(grep '^cpu ' /proc/stat)" <<'PY'
import sys
a, b = ([int(x) for x in l.split()[1:9]] for l in sys.argv[1:3])
d = [y - x for x, y in zip(a, b)]
print(f"steal {100 * d[7] / max(sum(d), 1):.0f} % of the VM's CPU time, busy {100 * (1 - (d[3] + d[4]) / max(sum(d), 1)):.0f} %")
PY
}

# A run: $1 name, then loadtest run flags. Prints the text report, keeps the JSON. With SERVER_PID set, also the
# server's CPU time per accepted beacon by thread: steadier than beacons/s on a shared machine, and it says where the
# time goes. The load generator's own CPU time per beacon is printed too: it shares the two cores, and at moderate
# open-loop rates it costs several times what it costs at the maximum rate.
lt_run() {
  local name="$1"
  shift
  [ -n "${SERVER_PID:-}" ] && cpu_ticks "$SERVER_PID" >"$OUT/$name.cpu-before"
  local stat_before threads="${RUN_THREADS:-$LOADTEST_THREADS}"
  case " $* " in *" --rate "*) threads=$OPEN_THREADS ;; esac
  stat_before=$(grep '^cpu ' /proc/stat)
  "$LOADTEST_BIN" --threads "$threads" run --no-progress --format json "$@" >"$OUT/$name.json" || {
    local rc=$?
    note "$name: loadtest exited $rc"
    [ "$rc" = 2 ] || return "$rc"
  }
  note "$name: $(steal_share "$stat_before")"
  if [ -n "${SERVER_PID:-}" ]; then
    cpu_ticks "$SERVER_PID" >"$OUT/$name.cpu-after"
    note "$name: server CPU per accepted beacon: $(python3 - "$OUT/$name" "$(getconf CLK_TCK)" <<'PY'
import json, sys
base, hz = sys.argv[1], int(sys.argv[2])
read = lambda f: {k: int(v) for k, v in (l.split() for l in open(f) if l.strip())}
before, after = read(base + ".cpu-before"), read(base + ".cpu-after")
n = json.load(open(base + ".json"))["run"]["accepted"]
us = {k: (after[k] - before.get(k, 0)) * 1e6 / hz / max(n, 1) for k in after}
parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(us.items(), key=lambda kv: -kv[1]) if v >= 0.5)
print(f"{sum(us.values()):.0f} µs ({parts})")
PY
)"
  fi
  note "$name: $(python3 - "$OUT/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); r = d["run"]; l = r["latency_ms"]
s = f'{r["accepted_rate"]:.0f} beacons/s ({r["accepted_samples_rate"]:.0f} samples/s), statuses {r["statuses"]}, latency p50 {l["p50"]:.3f} p90 {l["p90"]:.3f} p99 {l["p99"]:.3f} p99.9 {l["p999"]:.3f} max {l["max"]:.3f} ms; load generator CPU {r["load_generator_cpu_us_per_request"]:.0f} µs per request'
if "verify" in d:
    v = d["verify"]
    s += f'; verify ok={v["ok"]} groups={v["groups"]} mismatches={v["mismatches"]} max_err={v["max_relative_error"]*100:.3f}% freshness={v["freshness_s"]} s'
print(s)
PY
)"
}

rate_of() { json_field "$OUT/$1.json" '["run"]["accepted_rate"]'; }

wrk_run() { # $1 name, $2 url
  cat >"$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
wrk.body = '{"v":1,"site":"wrk","url":"https://shop.example/products/123?utm_source=x#top","release":"2026.11.2","nav":"navigate","metrics":[{"name":"LCP","value":2310.5},{"name":"INP","value":184},{"name":"CLS","value":0.031},{"name":"FCP","value":900.2},{"name":"TTFB","value":120.7}]}'
LUA
  if command -v wrk >/dev/null; then
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$OUT/post.lua" "$2" >"$OUT/$1.txt" 2>&1 || true
    note "$1: $(grep -E 'Requests/sec' "$OUT/$1.txt" | tr -s ' '); $(grep -E '^ +99%' "$OUT/$1.txt" | tr -s ' ' | sed 's/^ /p99 /') ; non-2xx: $(grep -c 'Non-2xx' "$OUT/$1.txt" || true)"
  else
    note "$1: skipped, wrk is not installed (apt-get install wrk)"
  fi
}

# CPU ticks (user + system) of the ClickHouse server .ci/clickhouse.sh started.
ch_ticks() { awk '{ print $14 + $15 }' "/proc/$(cat "$FV_CH_DIR/server.pid")/stat"; }

# The ClickHouse collector (COLLECTOR_BIN set to it) on an empty database and data dir; sets CPID.
start_ch_collector() {
  curl -fsS "$CH_URL/" --data-binary "DROP DATABASE IF EXISTS fv_bench" >/dev/null
  rm -rf "$OUT/data-ch"
  "$CH_COLLECTOR_BIN" --data-dir "$OUT/data-ch" --clickhouse-url "$CH_URL" --clickhouse-database fv_bench migrate
  start_collector "$OUT/data-ch" --clickhouse-url "$CH_URL" --clickhouse-database fv_bench
}

# Starts the sink (RUN_THREADS threads, LOADTEST_THREADS if unset) and waits until it listens; sets SPID.
start_sink() {
  "$LOADTEST_BIN" --threads "${RUN_THREADS:-$LOADTEST_THREADS}" bench-sink --listen "127.0.0.1:$SINK_PORT" >"$OUT/sink.log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  wait_tcp "$SINK_PORT"
}

# One closed-loop run of the sink: $1 run name.
sink_max_run() {
  start_sink
  SERVER_PID=$SPID lt_run "$1" --target "http://127.0.0.1:$SINK_PORT" --duration "$DURATION" --connections "$CONNECTIONS"
  stop_pid "$SPID"
}

# The best of a pair's runs at each of MAX_THREADS: copies "$1-t<n>.json" with the highest rate to "$1.json" and
# prints n.
best_of_threads() {
  python3 - "$OUT" "$1" $MAX_THREADS <<'PY'
import json, shutil, sys
out, name, counts = sys.argv[1], sys.argv[2], sys.argv[3:]
rate = lambda t: json.load(open(f"{out}/{name}-t{t}.json"))["run"]["accepted_rate"]
best = max(counts, key=rate)
shutil.copy(f"{out}/{name}-t{best}.json", f"{out}/{name}.json")
print(best)
PY
}

# For comparison with runs before MAX_THREADS: the median pair's ratio with each thread count on both sides.
same_threads_ratios() { # $1 sink runs, $2 server runs, $3 the server's label
  local t r
  for t in $MAX_THREADS; do
    read -r r _ _ < <(median_pair "$1" "$2" "-t$t")
    note "ratio $3/(1) with $t generator thread(s) on both sides, median of $PAIRS pairs: $r"
  done
}

# The pair whose ratio is the median of PAIRS pairs "<sink run> <server run>": prints "ratio sink-run server-run";
# the runs' names are $1-$i$3 and $2-$i$3.
median_pair() {
  python3 - "$OUT" "$PAIRS" "$1" "$2" "${3:-}" <<'PY'
import json, sys
out, n, a, b, sfx = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rate = lambda name: json.load(open(f"{out}/{name}.json"))["run"]["accepted_rate"]
pairs = sorted((rate(f"{b}-{i}{sfx}") / rate(f"{a}-{i}{sfx}"), f"{a}-{i}{sfx}", f"{b}-{i}{sfx}") for i in range(1, n + 1))
r, x, y = pairs[(len(pairs) - 1) // 2]
print(f"{r:.3f} {x} {y}")
PY
}

sample_rss() { # $1 pid, $2 file: VmRSS in KiB once a second while the pid lives
  while kill -0 "$1" 2>/dev/null; do
    awk -v t="$(date +%s)" '/VmRSS/{print t, $2}' "/proc/$1/status" 2>/dev/null >>"$2" || true
    sleep 1
  done
}

for step in $STEPS; do
  case "$step" in
  ingest)
    # (1) and (2) alternate, PAIRS times, each pair back to back; the median pair gives the ratio.
    # Each side at each of MAX_THREADS; a side's best is its maximum.
    for i in $(seq 1 "$PAIRS"); do
      for t in $MAX_THREADS; do
        say "(1) the limit: axum sink, read body, 204 (pair $i of $PAIRS, $t-thread sink and generator)"
        RUN_THREADS=$t sink_max_run "sink-max-$i-t$t"
        say "(2) fieldvitals, embedded store + spool, full path (pair $i of $PAIRS, $t-thread generator)"
        rm -rf "$OUT/data-ingest"
        start_collector "$OUT/data-ingest"
        RUN_THREADS=$t SERVER_PID=$CPID lt_run "collector-max-$i-t$t" --target "http://127.0.0.1:$COLLECTOR_PORT" --duration "$DURATION" --connections "$CONNECTIONS" --site-prefix max
        stop_pid "$CPID"
        note "pair $i, $t thread(s): (2)/(1) = $(python3 -c "print(round($(rate_of "collector-max-$i-t$t")/$(rate_of "sink-max-$i-t$t"), 3))")"
      done
      st=$(best_of_threads "sink-max-$i")
      ct=$(best_of_threads "collector-max-$i")
      note "pair $i, each at its best ((1) $st thread(s), (2) $ct): (2)/(1) = $(python3 -c "print(round($(rate_of "collector-max-$i")/$(rate_of "sink-max-$i"), 3))")"
    done
    read -r RATIO2 SINK_RUN COLL_RUN < <(median_pair sink-max collector-max)
    cp "$OUT/$SINK_RUN.json" "$OUT/sink-max.json"
    cp "$OUT/$COLL_RUN.json" "$OUT/collector-max.json"
    SINK_MAX=$(rate_of sink-max)
    COLL_MAX=$(rate_of collector-max)
    # The generator's thread count that gave the median pair's (2): the latency, verify and RSS runs use it.
    COLL_THREADS=$(best_of_threads "$COLL_RUN")
    note "ratio (2)/(1) max beacons/s, each at its best of $MAX_THREADS generator threads, median of $PAIRS pairs ($COLL_RUN / $SINK_RUN): $RATIO2"
    same_threads_ratios sink-max collector-max "(2)"

    say "(1) and (2): wrk cross-check, latency at lower rates, verify"
    start_sink
    wrk_run sink-wrk "http://127.0.0.1:$SINK_PORT/v1/beacon"
    stop_pid "$SPID"
    rm -rf "$OUT/data-ingest"
    start_collector "$OUT/data-ingest"
    HALF=$(python3 -c "print(int($COLL_MAX/2))")
    # From here on, the sink at (2)'s half rate runs with the count of (2)'s median pair (the generator's open-loop
    # runs with OPEN_THREADS).
    RUN_THREADS=$COLL_THREADS
    SERVER_PID=$CPID lt_run collector-half --target "http://127.0.0.1:$COLLECTOR_PORT" --rate "$HALF" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" --site-prefix half --verify \
      --slow-log "$OUT/collector-half.slow" --slow-ms 1
    slow_summary collector-half
    store_raises collector-half
    HALF_NAMES=(collector-half)
    for i in $(seq 2 "$HALF_RUNS"); do
      SERVER_PID=$CPID lt_run "collector-half-$i" --target "http://127.0.0.1:$COLLECTOR_PORT" --rate "$HALF" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" --site-prefix "half$i" \
        --slow-log "$OUT/collector-half-$i.slow" --slow-ms 1
      slow_summary "collector-half-$i"
      store_raises "collector-half-$i"
      HALF_NAMES+=("collector-half-$i")
    done
    pooled_p99 "${HALF_NAMES[@]}"
    # Where the p99 stays low: lighter open-loop loads.
    for pct in 25 10; do
      SERVER_PID=$CPID lt_run "collector-open-$pct" --target "http://127.0.0.1:$COLLECTOR_PORT" --rate "$(python3 -c "print(int($COLL_MAX*$pct/100))")" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" --site-prefix "open$pct"
    done
    wrk_run collector-wrk "http://127.0.0.1:$COLLECTOR_PORT/v1/beacon"
    stop_pid "$CPID"

    # The latency floor of this machine and load generator at the same open-loop rate: what (2)'s p99 at half
    # rate is to be read against.
    say "(1) again, open loop at (2)'s half rate"
    start_sink
    SERVER_PID=$SPID lt_run sink-at-collector-half --target "http://127.0.0.1:$SINK_PORT" --rate "$HALF" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" \
      --slow-log "$OUT/sink-at-collector-half.slow" --slow-ms 2
    slow_summary sink-at-collector-half
    stop_pid "$SPID"
    # The same question asked of (1) itself: its tail at half of its own maximum, where the machine is about as busy
    # as it is at (2)'s half rate (the generator's share grows with the rate). What any server here can show.
    say "(1) again, open loop at half its own maximum"
    RUN_THREADS=$(best_of_threads "$SINK_RUN")
    start_sink
    SERVER_PID=$SPID lt_run sink-half --target "http://127.0.0.1:$SINK_PORT" --rate "$(python3 -c "print(int($SINK_MAX/2))")" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" \
      --slow-log "$OUT/sink-half.slow" --slow-ms 2
    slow_summary sink-half
    stop_pid "$SPID"
    RUN_THREADS=$COLL_THREADS
    # And below any server: a bare TCP echo between threads at the same rate (no HTTP, no runtime).
    say "the machine's floor: a bare loopback echo at (2)'s half rate"
    STAT0=$(grep '^cpu ' /proc/stat)
    lt floor --rate "$HALF" --duration "$DURATION" --format json >"$OUT/floor-at-collector-half.json"
    note "floor-at-collector-half: $(python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['latency_ms']; print(f\"p50 {l['p50']:.3f} p90 {l['p90']:.3f} p99 {l['p99']:.3f} p99.9 {l['p999']:.3f} max {l['max']:.3f} ms\")" "$OUT/floor-at-collector-half.json"); $(steal_share "$STAT0")"
    unset RUN_THREADS
    ;;
  clickhouse-collector)
    if [ -z "${CH_COLLECTOR_BIN:-}" ]; then
      note "(3) skipped: set CH_COLLECTOR_BIN to a collector built with the ClickHouse store"
      continue
    fi
    ch_start
    SAVED="$COLLECTOR_BIN"
    COLLECTOR_BIN="$CH_COLLECTOR_BIN"
    for i in $(seq 1 "$PAIRS"); do
      for t in $MAX_THREADS; do
        say "(1) the limit again, before (3) (pair $i of $PAIRS, $t-thread sink and generator)"
        RUN_THREADS=$t sink_max_run "sink-ch-$i-t$t"
        say "(3) fieldvitals with ClickHouse (pair $i of $PAIRS, $t-thread generator)"
        start_ch_collector
        CH_BEFORE=$(ch_ticks)
        RUN_THREADS=$t SERVER_PID=$CPID lt_run "ch-collector-max-$i-t$t" --target "http://127.0.0.1:$COLLECTOR_PORT" --duration "$DURATION" --connections "$CONNECTIONS" --site-prefix chmax
        CH_RUN_END=$(ch_ticks)
        stop_pid "$CPID"
        # The server goes on merging the parts the run wrote: its CPU 5 s later counts too.
        sleep 5
        note "ch-collector-max-$i-t$t: ClickHouse server CPU per accepted beacon: $(python3 -c "
n = $(json_field "$OUT/ch-collector-max-$i-t$t.json" '["run"]["accepted"]'); hz = $(getconf CLK_TCK)
print(f'{($CH_RUN_END - $CH_BEFORE) * 1e6 / hz / n:.0f} µs during the run, {($(ch_ticks) - $CH_BEFORE) * 1e6 / hz / n:.0f} µs with the next 5 s')")"
        note "pair $i, $t thread(s): (3)/(1) = $(python3 -c "print(round($(rate_of "ch-collector-max-$i-t$t")/$(rate_of "sink-ch-$i-t$t"), 3))")"
      done
      st=$(best_of_threads "sink-ch-$i")
      ct=$(best_of_threads "ch-collector-max-$i")
      note "pair $i, each at its best ((1) $st thread(s), (3) $ct): (3)/(1) = $(python3 -c "print(round($(rate_of "ch-collector-max-$i")/$(rate_of "sink-ch-$i"), 3))")"
    done
    read -r RATIO3 SINK_RUN CH_RUN < <(median_pair sink-ch ch-collector-max)
    cp "$OUT/$CH_RUN.json" "$OUT/ch-collector-max.json"
    CH_MAX=$(rate_of ch-collector-max)
    CH_THREADS=$(best_of_threads "$CH_RUN")
    note "ratio (3)/(1) max beacons/s, each at its best of $MAX_THREADS generator threads, median of $PAIRS pairs ($CH_RUN / $SINK_RUN): $RATIO3"
    same_threads_ratios sink-ch ch-collector-max "(3)"
    say "(3) at half its rate, with verify and freshness"
    start_ch_collector
    COLLECTOR_BIN="$SAVED"
    RUN_THREADS=$CH_THREADS lt_run ch-collector-half --target "http://127.0.0.1:$COLLECTOR_PORT" --rate "$(python3 -c "print(int($CH_MAX/2))")" --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" --site-prefix chhalf --verify
    stop_pid "$CPID"
    ;;
  direct)
    say "(4) no collector: one INSERT … FORMAT JSONEachRow per beacon into ClickHouse"
    ch_start
    curl -fsS "$CH_URL/" --data-binary "DROP TABLE IF EXISTS default.fv_direct" >/dev/null
    curl -fsS "$CH_URL/" --data-binary "CREATE TABLE default.fv_direct (ts UInt64, site String, page String, device String, release String, nav String, metric String, value Float64) ENGINE = MergeTree() PARTITION BY intDiv(ts, 86400000) ORDER BY (site, metric, page, ts)" >/dev/null
    lt_run direct-max --target "$CH_URL" --clickhouse-table default.fv_direct --duration "$DURATION" --connections "$CONNECTIONS" --pool 50000
    ROWS=$(curl -fsS "$CH_URL/" --data-binary "SELECT count() FROM default.fv_direct")
    note "direct: rows stored $ROWS; parts: $(curl -fsS "$CH_URL/" --data-binary "SELECT count() FROM system.parts WHERE table = 'fv_direct' AND active")"
    if [ -f "$OUT/collector-max.json" ]; then
      note "ratio (2)/(4) samples/s: $(python3 -c "import json; a=json.load(open('$OUT/collector-max.json'))['run']['accepted_samples_rate']; b=json.load(open('$OUT/direct-max.json'))['run']['accepted_samples_rate']; print(round(a/b, 1))")"
    fi
    ;;
  query)
    say "(5) p75 by page, one site, 28 days, $QUERY_SAMPLES samples, 1,000 pages"
    ch_start
    curl -fsS "$CH_URL/" --data-binary "DROP TABLE IF EXISTS default.fv_raw" >/dev/null
    if [ -n "${QUERY_DATA:-}" ]; then
      # A store seeded earlier with the same sample count, pages, days and seed (QUERY_NOW_MS is its --now-ms):
      # seeding the embedded store takes ~13 minutes here, ClickHouse half a minute, so only ClickHouse is seeded.
      NOW_MS="${QUERY_NOW_MS:?QUERY_DATA needs QUERY_NOW_MS, the --now-ms it was seeded with}"
      QUERY_DIR="$QUERY_DATA"
      "$LOADTEST_BIN" --threads 2 seed --clickhouse "$CH_URL" --table default.fv_raw \
        --samples "$QUERY_SAMPLES" --pages 1000 --days 28 --now-ms "$NOW_MS" | tee -a "$OUT/bench.log"
    else
      NOW_MS=$(($(date +%s) * 1000))
      QUERY_DIR="$OUT/data-query"
      rm -rf "$QUERY_DIR"
      "$LOADTEST_BIN" --threads 2 seed --data-dir "$QUERY_DIR" --clickhouse "$CH_URL" --table default.fv_raw \
        --samples "$QUERY_SAMPLES" --pages 1000 --days 28 --now-ms "$NOW_MS" | tee -a "$OUT/bench.log"
    fi
    curl -fsS "$CH_URL/" --data-binary "OPTIMIZE TABLE default.fv_raw FINAL" >/dev/null || true
    start_collector "$QUERY_DIR"
    "$LOADTEST_BIN" --threads 2 query-bench --collector "http://127.0.0.1:$COLLECTOR_PORT" --clickhouse "$CH_URL" \
      --table default.fv_raw --samples "$QUERY_SAMPLES" --pages 1000 --days 28 --now-ms "$NOW_MS" --repeat 15 --format json \
      >"$OUT/query.json"
    "$LOADTEST_BIN" --threads 2 query-bench --collector "http://127.0.0.1:$COLLECTOR_PORT" --clickhouse "$CH_URL" \
      --table default.fv_raw --samples "$QUERY_SAMPLES" --pages 1000 --days 28 --now-ms "$NOW_MS" --repeat 15 \
      | tee -a "$OUT/bench.log"
    note "embedded store size: $(du -sh "$QUERY_DIR" | cut -f1)"
    stop_pid "$CPID"
    ;;
  rss)
    say "collector RSS: ${RSS_SECONDS}s at its maximum rate (closed loop) with 100,000 distinct pages"
    rm -rf "$OUT/data-rss" "$OUT/rss.txt"
    start_collector "$OUT/data-rss"
    sample_rss "$CPID" "$OUT/rss.txt" &
    SAMPLER=$!
    RUN_THREADS=${COLL_THREADS:-$LOADTEST_THREADS} lt_run rss --target "http://127.0.0.1:$COLLECTOR_PORT" --duration "$RSS_SECONDS" --connections "$CONNECTIONS" --pages 100000 --site-prefix rss --pool 1000000
    kill "$SAMPLER" 2>/dev/null || true
    note "distinct pages stored: $(curl -fsS "http://127.0.0.1:$COLLECTOR_PORT/v1/p75?site=rss-shop&metric=FCP&by=page&limit=100000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["rows"]))') (rss-shop only)"
    note "RSS KiB during the run: max $(awk 'BEGIN{m=0}{if($2>m)m=$2}END{print m}' "$OUT/rss.txt"), first $(head -1 "$OUT/rss.txt" | cut -d' ' -f2), last $(tail -1 "$OUT/rss.txt" | cut -d' ' -f2), samples $(wc -l <"$OUT/rss.txt")"
    stop_pid "$CPID"
    ;;
  *)
    echo "unknown step $step" >&2
    exit 1
    ;;
  esac
done
note "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
