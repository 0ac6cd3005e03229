#!/usr/bin/env bash
# Modern-ClickHouse check: runs every statement storage-clickhouse generates (schema migrations, then every query
# shape with sample values bound) against chDB (PyPI chdb-core, ClickHouse 26.x in-process), on sample data, and
# checks the answers add up. The same statements run on Debian's 18.16 server in the crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FV_CHDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fieldvitals/chdb-venv}"
if ! "$VENV/bin/python" -c 'import chdb' 2>/dev/null; then
  python3 -m venv "$VENV" || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q chdb-core
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo run -q -p storage-clickhouse --example generated_sql -- fv_chdb >"$OUT/statements.sql"
"$VENV/bin/python" - "$OUT/statements.sql" "$OUT/db" <<'PY'
import sys
import chdb
from chdb import session

statements = [l for l in open(sys.argv[1]).read().splitlines() if l.strip()]
s = session.Session(sys.argv[2])
print("chdb", chdb.__version__, "server", s.query("SELECT version()", "CSV").data().strip())

def run(sql):
    try:
        return s.query(sql, "TSV").data()
    except Exception as e:  # any error fails the check, with the statement that caused it
        sys.exit(f"FAILED on modern ClickHouse:\n  {sql}\n  {e}")

# The sample query window the generator binds: the hour 493000 and its neighbours.
H = 493000 * 3600
site = "demo\\'s?site"
page = "/it\\'s \"quoted\"\\\\?"
ddl_done = False
expected_in_window = 0
for i_stmt, sql in enumerate(statements):
    if not ddl_done and i_stmt > 0 and not sql.startswith(("CREATE", "DROP")):
        ddl_done = True
        # Sample rows (beacon ids above the generated repair range 10..20, so the repair is a no-op here):
        # every 5 minutes from 20 minutes before the window to 20 minutes after it, CLS (metric 2), the filters'
        # page/device/release/nav on every other row.
        rows, beacon_rows = [], []
        t, i = H - 20 * 60, 0
        while t < H + 3 * 3600 + 20 * 60:
            odd = i % 2 == 1
            common = f"{t}, '{site}', '{page if odd else '/'}', 'h', '/p', 0, '', {3 if odd else 0}"
            rows.append(f"({common}, 2, 0.05, 0, 500, 'default', {100 + i})")
            # The same beacon as a v5 row, with an LCP sample besides (which CLS queries must not see).
            beacon_rows.append(f"({common}, 'default', {100 + i}, [2, 0], [0.05, 1000.0], [0, 0], [500, 77])")
            if H - 7 * 60 <= t < H + 3 * 3600 + 2 * 60:
                expected_in_window += 1
            t += 300
            i += 1
        # The first rows as a collector before schema v3 inserted them (into `samples`, rolled up by the v2 view with
        # marker rows), the next as a v3 collector did (into `raw_samples`, rolled up by its view), the next as a v4
        # collector did (into `raw_samples_v4`, and their sums per hour and group into `rollup_input`, whose view
        # makes the states), the rest as this version does (one row per beacon into `raw_beacons_v5`, sums as v4):
        # all four must add up to one rollup.
        q = len(rows) // 4
        cut, cut2, cut3 = q, 2 * q, 3 * q
        run("INSERT INTO fv_chdb.samples VALUES " + ", ".join(rows[:cut]))
        run("INSERT INTO fv_chdb.raw_samples VALUES " + ", ".join(rows[cut:cut2]))
        run("INSERT INTO fv_chdb.raw_samples_v4 VALUES " + ", ".join(rows[cut2:cut3]))
        run("INSERT INTO fv_chdb.raw_beacons_v5 VALUES " + ", ".join(beacon_rows[cut3:]))
        groups = {}
        t, i = H - 20 * 60, 0
        while t < H + 3 * 3600 + 20 * 60:
            odd = i % 2 == 1
            for metric, bucket in [(2, 500), (0, 77)]:
                if i >= cut2 and (metric == 2 or i >= cut3):
                    key = (t // 3600 * 3600, page if odd else '/', 3 if odd else 0, metric, bucket)
                    n, top = groups.get(key, (0, 0))
                    groups[key] = (n + 1, max(top, 100 + i))
            t += 300
            i += 1
        run("INSERT INTO fv_chdb.rollup_input VALUES " + ", ".join(
            f"({h}, '{site}', {metric}, '{p}', 0, '', {nav}, 'default', {n}, {n}, 0, 0, [{bucket}], [{n}], {top})"
            for (h, p, nav, metric, bucket), (n, top) in groups.items()
        ))
        extra_lcp = len(rows) - cut3
        inserted = len(rows)
    out = run(sql)
    print(f"ok  {sql[:110]}{'...' if len(sql) > 110 else ''}")

def scalar(sql):
    return int(run(sql).strip())

# What the view rolled up equals the raw rows, and the marker holds the largest id.
raw_n = scalar("SELECT count() FROM fv_chdb.samples_all")
raw_cls = scalar("SELECT count() FROM fv_chdb.samples_all WHERE metric = 2")
rolled = scalar("SELECT toUInt64(countMerge(samples)) FROM fv_chdb.rollup_hourly WHERE r_site != ''")
marker = scalar("SELECT toUInt64(maxMerge(max_id)) FROM fv_chdb.rollup_hourly WHERE r_source = 'default'")
v2_marker = scalar("SELECT toUInt64(maxMerge(max_id)) FROM fv_chdb.rollup_hourly WHERE r_site = '' AND r_source = 'default'")
assert raw_cls == inserted, (raw_cls, inserted)
assert raw_n == inserted + extra_lcp and rolled == raw_n, (raw_n, rolled, inserted, extra_lcp)
assert marker == 100 + inserted - 1, marker
# The largest stored id (the v5 rows hold the largest ids, read from raw_beacons_v5 directly).
max_id_sql = next(q for q in statements if q.startswith("SELECT toUInt64(max(m))"))
assert scalar(max_id_sql) == 100 + inserted - 1, scalar(max_id_sql)
assert v2_marker == 100 + cut - 1, v2_marker
# The bounded checks after a failed insert (bound to 1800000000 by the generator, after every sample row): nothing
# there; from the window's start, the largest id (on the v5 rows); from after the last row, nothing.
since_raw = next(q for q in statements if q.startswith("SELECT toUInt64(max(beacon_id))"))
since_marker = next(q for q in statements if q.startswith("SELECT toUInt64(maxMerge(max_id))") and "hour >=" in q)
for q in (since_raw, since_marker):
    assert "toDateTime(1800000000)" in q, q
    assert scalar(q) == 0, q
    assert scalar(q.replace("toDateTime(1800000000)", f"toDateTime({H})")) == 100 + inserted - 1, q
    assert scalar(q.replace("toDateTime(1800000000)", f"toDateTime({H + 4 * 3600})")) == 0, q
# The unfiltered rollup query plus the unfiltered raw-edge query cover the window exactly.
ungrouped = [q for q in statements if q.startswith("SELECT '' AS g_page") and "page = " not in q]
total = sum(int(line.split("\t")[4]) for q in ungrouped for line in run(q).splitlines())
assert total == expected_in_window, (total, expected_in_window)
print(f"chdb check passed: {len(statements)} statements; rollup == raw ({raw_n} samples); window total {total}")
PY
