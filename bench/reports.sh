#!/usr/bin/env bash
# Report benchmark (on demand, not in CI): what the rollups cost at import and
# what they buy at query time, all measured in one run on the same machine.
#
#   1. Import: the same generated CSV (ROWS rows, seed 1) imported by
#      `clue import-data` into the built-in sales_report (rollups maintained,
#      database clue_bench_reports) and into sales_plain, the same table under
#      another name with no dataset declared (no rollups, database
#      clue_bench_plain). Prints rows/s of each and the rollup overhead as a
#      share of import time, (t_on - t_off) / t_on. Both tables are then
#      VACUUM ANALYZEd.
#   2. The three prototype-000 reports (monthly summary, monthly breakdown,
#      top 5 by revenue) over the whole range 2024-01-01..2025-12-31 and over
#      2024-03-15..2025-09-14 (mid-month to mid-month), each measured as
#        - plain SQL on sales_plain through psql (\timing, 5 runs: p50, max;
#          sessions run with jit=off, as clue's own sessions do),
#        - DuckDB (Python package, installed with pip if missing) on the same
#          CSV loaded once into an in-memory table (load time printed; 5 runs:
#          p50, max),
#        - clue serve over HTTP with wrk, SECONDS per run:
#            latency: one connection, requests back to back (p50, p99), once
#              cached (with Accept-Encoding: gzip, as browsers send it) and
#              once with `Cache-Control: no-cache` (result cache bypassed:
#              planner and rollups only);
#            load: 16 connections, cached: req/s and p99 under load.
#   3. One table of all of it with the speed-up ratios, and whether each bar
#      is met: clue >= 100x faster than plain SQL (p50 latency against p50
#      of the same query run alone in psql); p99 latency < 20 ms over HTTP;
#      clue >= 10x faster than DuckDB (goal); rollup overhead < 25% of import
#      time. Latency is measured with one connection because plain SQL and
#      DuckDB run one query at a time too; under 16 connections on 2 cores
#      a request also waits for the 15 others (for the 50 MB breakdown that
#      wait is most of its time), which the load columns show.
#
# Usage: bench/reports.sh [ROWS] [SECONDS]   (defaults: 10000000 rows, 10 s per wrk run)
# Needs wrk (apt-get install wrk) and python3. Server: CLUE_BENCH_DATABASE_URL
# (an admin URL), else 127.0.0.1:5432 as postgres. Port 18766 must be free.
#
# It takes a while at 10M rows: the two imports alone take minutes, each plain
# SQL report runs 5 times for seconds, and there are 12 wrk runs. When a
# previous run left clue_bench_reports and clue_bench_plain with exactly ROWS
# rows, the data are reused and the import measurement is skipped (the CSV is
# still generated for DuckDB: same seed, same file, seconds). Drop
# clue_bench_reports to measure the imports again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
SECS=${2:-10}
command -v wrk >/dev/null || { echo "bench/reports.sh needs wrk: apt-get install wrk" >&2; exit 2; }
command -v psql >/dev/null || { echo "bench/reports.sh needs psql: apt-get install postgresql-client" >&2; exit 2; }
WORK=$(mktemp -d /tmp/clue-bench-XXXXXX); chmod 755 "$WORK"
cleanup() {
  if [ -n "${SERVER:-}" ]; then kill -INT "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unset CLUE_DATABASE_URL CLUE_DB CLUE_DB_HOST CLUE_DB_PORT CLUE_DB_USER CLUE_DB_PWD
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
db_url() { # database name -> URL on the same server
  python3 - "$ADMIN" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}
ON_DB=clue_bench_reports; ON_URL=$(db_url $ON_DB)
OFF_DB=clue_bench_plain; OFF_URL=$(db_url $OFF_DB)
psql -XAtq "$ADMIN" -c "SELECT 1" >/dev/null || { echo "cannot reach PostgreSQL at $ADMIN (set CLUE_BENCH_DATABASE_URL)" >&2; exit 3; }
python3 -c 'import duckdb' 2>/dev/null || { echo "installing the duckdb Python package..."; pip install --quiet duckdb; }

cargo build --release --quiet
CLUE=$PWD/target/release/clue
CSV=$WORK/sales.csv
RES=$WORK/results   # "key value" lines, summarized at the end
now() { date +%s.%N; }
count() { psql -XAtq "$1" -c "SELECT count(*) FROM $2" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- 1. import
if [ "$(count "$ON_URL" sales_report)" = "$ROWS" ] && [ "$(count "$OFF_URL" sales_plain)" = "$ROWS" ]; then
  echo "reusing the $ROWS rows left in $ON_DB.sales_report and $OFF_DB.sales_plain by a previous run"
  echo "  (import not measured; drop $ON_DB to measure it again)"
  echo "generating the CSV again for DuckDB (same seed, same file)..."
  $CLUE generate-sales --rows "$ROWS" --out "$CSV" --seed 1 2>&1 | sed 's/^/  /'
else
  echo "generating $ROWS rows..."
  $CLUE generate-sales --rows "$ROWS" --out "$CSV" --seed 1 2>&1 | sed 's/^/  /'
  sed 's/sales_report/sales_plain/g' sql/sales_report.sql > "$WORK/sales_plain.sql"
  for db in $ON_DB $OFF_DB; do psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null; done
  CLUE_DATABASE_URL=$ON_URL $CLUE create-schema >/dev/null
  CLUE_DATABASE_URL=$OFF_URL $CLUE create-schema --source "$WORK/sales_plain.sql" >/dev/null
  timed_import() { # label url table -> seconds on stdout, clue's output indented on stderr
    psql -q "$2" -c "CHECKPOINT" >/dev/null
    local t0 t1; t0=$(now)
    CLUE_DATABASE_URL=$2 $CLUE import-data -c "$CSV" -t "$3" --no-progress | sed "s/^/  [$1] /" >&2 || exit 1
    t1=$(now)
    python3 -c "print($t1 - $t0)"
  }
  echo "importing into $ON_DB.sales_report (rollups on)..."
  t_on=$(timed_import on "$ON_URL" sales_report)
  echo "importing into $OFF_DB.sales_plain (no dataset, rollups off)..."
  t_off=$(timed_import off "$OFF_URL" sales_plain)
  for n in "$(count "$ON_URL" sales_report)" "$(count "$OFF_URL" sales_plain)"; do
    [ "$n" = "$ROWS" ] || { echo "row count mismatch after import: $n, expected $ROWS" >&2; exit 1; }
  done
  python3 - "$ROWS" "$t_on" "$t_off" "$RES" <<'PY'
import sys
rows, on, off, res = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
over = (on - off) / on * 100
print(f"  rollups on   {on:8.2f} s  {rows/on:10.0f} rows/s")
print(f"  rollups off  {off:8.2f} s  {rows/off:10.0f} rows/s")
print(f"  rollup overhead: {over:.1f}% of import time")
open(res, "a").write(f"import.overhead {over}\n")
PY
  echo "VACUUM ANALYZE..."
  psql -q "$ON_URL" -c "VACUUM ANALYZE sales_report" >/dev/null
  psql -q "$OFF_URL" -c "VACUUM ANALYZE sales_plain" >/dev/null
fi

# ---------------------------------------------------------------- 2. queries
RANGES=("2024-01-01..2025-12-31" "2024-03-15..2025-09-14")
REPORTS=(summary breakdown top5)
declare -A PATHS=([summary]=monthly-sales-summary [breakdown]=monthly-sales-breakdown [top5]=top-5-by-revenue)
sql_for() { # report table month-expression start end -> prototype 000's SQL, inclusive dates
  local w="FROM $2 WHERE sales_date >= DATE '$4' AND sales_date <= DATE '$5'"
  case $1 in
    summary) echo "SELECT $3 AS month, sum(quantity_sold) AS quantity, sum(sales_amount) AS revenue $w GROUP BY 1 ORDER BY 1";;
    breakdown) echo "SELECT $3 AS month, product_name, region, sum(sales_amount) AS revenue, sum(quantity_sold) AS quantity $w GROUP BY 1,2,3 ORDER BY 1,2,3";;
    top5) echo "SELECT rank() OVER (ORDER BY sum(sales_amount) DESC) AS rank, product_id, product_name, sum(sales_amount) AS revenue $w GROUP BY product_id, product_name ORDER BY revenue DESC, product_id LIMIT 5";;
  esac
}
PG_MONTH="to_char(date_trunc('month', sales_date), 'YYYY-MM')"
DUCK_MONTH="strftime(sales_date, '%Y-%m')"

echo
echo "plain SQL on $OFF_DB.sales_plain through psql (5 runs each, jit=off):"
for range in "${RANGES[@]}"; do
  for r in "${REPORTS[@]}"; do
    python3 - "$OFF_URL" "$(sql_for $r sales_plain "$PG_MONTH" "${range%..*}" "${range#*..}")" "sql.$r.$range" "$RES" <<'PY'
import subprocess, sys, statistics, re
url, sql, key, res = sys.argv[1:5]
times = []
for _ in range(5):
    p = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url, "-c", "SET jit = off", "-c", "\\timing on", "-c", sql],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"psql failed: {p.stderr.strip()}")
    times.append(float(re.findall(r"Time: ([0-9.]+) ms", p.stdout)[-1]))
p50, mx = statistics.median(times), max(times)
print(f"  {key[4:]:<36} p50 {p50:10.1f} ms   max {mx:10.1f} ms")
open(res, "a").write(f"{key}.p50 {p50}\n{key}.max {mx}\n")
PY
  done
done

echo
echo "DuckDB $(python3 -c 'import duckdb; print(duckdb.__version__)') on the same CSV, in memory (5 runs each):"
duck_args=()
for range in "${RANGES[@]}"; do
  for r in "${REPORTS[@]}"; do
    duck_args+=("duck.$r.$range" "$(sql_for $r sales "$DUCK_MONTH" "${range%..*}" "${range#*..}")")
  done
done
python3 - "$CSV" "$ROWS" "$RES" "${duck_args[@]}" <<'PY'
import sys, time, statistics, duckdb
csv, rows, res, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
con = duckdb.connect()
t0 = time.perf_counter()
con.execute("CREATE TABLE sales AS SELECT * FROM read_csv_auto(?, "
            "types={'sales_amount': 'DECIMAL(10,2)', 'unit_price': 'DECIMAL(10,2)'})", [csv])
load = time.perf_counter() - t0
n = con.execute("SELECT count(*) FROM sales").fetchone()[0]
if n != rows:
    sys.exit(f"DuckDB loaded {n} rows, expected {rows}")
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(f"  load: {load:.2f} s ({n / load:.0f} rows/s, {threads} threads)")
out = open(res, "a")
for key, sql in zip(rest[::2], rest[1::2]):
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    p50, mx = statistics.median(times), max(times)
    print(f"  {key[5:]:<36} p50 {p50:10.1f} ms   max {mx:10.1f} ms")
    out.write(f"{key}.p50 {p50}\n{key}.max {mx}\n")
PY

PORT=18766
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then echo "port $PORT is already in use" >&2; exit 1; fi
CLUE_DATABASE_URL=$ON_URL CLUE_LOG=warn $CLUE serve --port $PORT >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "clue serve did not come up:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

wrk_run() { # key connections url [header] -> appends key.{rps,p50,p99} to results
  local key=$1 conns=$2 url=$3; shift 3
  local hdr=(); [ $# -gt 0 ] && hdr=(-H "$1")
  curl -sf -o /dev/null ${hdr[@]+"${hdr[@]}"} "$url" || { echo "GET $url failed:" >&2; curl -s "$url" >&2; exit 1; }
  # A newly cached large answer is compressed in the background: let that finish.
  case $key in *.cached) sleep 2;; esac
  wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${SECS}s" --timeout 60s --latency ${hdr[@]+"${hdr[@]}"} "$url" >"$WORK/wrk.out"
  python3 - "$key" "$RES" "$WORK/wrk.out" <<'PY'
import sys, re
key, res = sys.argv[1], sys.argv[2]
out = open(sys.argv[3]).read()
def ms(v):
    n, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", out).group(1))
pct = dict(re.findall(r"^\s*(50|99)%\s+(\S+)", out, re.M))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
errs = re.search(r"Socket errors:.*", out)
line = f"  {key[5:]:<46} {n:7d} req  {rps:9.1f} req/s"
if n:
    p50, p99 = ms(pct["50"]), ms(pct["99"])
    line += f"  p50 {p50:9.2f} ms  p99 {p99:9.2f} ms"
    open(res, "a").write(f"{key}.rps {rps}\n{key}.p50 {p50}\n{key}.p99 {p99}\n")
else:
    line += "  no request completed"
if bad: line += f"  ({bad.group(1)} non-2xx!)"
if errs: line += f"  ({errs.group(0)})"
print(line)
PY
}
echo
echo "clue serve over HTTP, wrk -d${SECS}s: latency with 1 connection (cached with Accept-Encoding: gzip;"
echo "Cache-Control: no-cache), then load with 16 connections (cached):"
for range in "${RANGES[@]}"; do
  for r in "${REPORTS[@]}"; do
    url="http://127.0.0.1:$PORT/reports/${PATHS[$r]}?start_date=${range%..*}&end_date=${range#*..}"
    # Like a browser or `curl --compressed`: large cached answers go out gzip-compressed.
    wrk_run "http.$r.$range.cached" 1 "$url" "Accept-Encoding: gzip"
    wrk_run "http.$r.$range.nocache" 1 "$url" "Cache-Control: no-cache"
    wrk_run "http.$r.$range.load" 16 "$url" "Accept-Encoding: gzip"
  done
done

# ---------------------------------------------------------------- 3. summary
echo
python3 - "$RES" "$ROWS" "${RANGES[@]}" <<'PY'
import sys
res, rows, ranges = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
v = {}
for line in open(res):
    k, x = line.rsplit(" ", 1); v[k] = float(x)
names = {"summary": "summary", "breakdown": "breakdown", "top5": "top-5"}
def f(x, d=1): return "n/a" if x is None else f"{x:.{d}f}"
def ratio(a, b): return None if a is None or not b else a / b
hdr = ["report", "range", "SQL p50", "Duck p50", "clue p50", "clue p99", "nc p50", "nc p99",
       "x16 req/s", "x16 p99", "SQL/clue", "SQL/nc", "Duck/clue"]
w = [10, 22, 9, 9, 9, 9, 9, 9, 10, 9, 9, 9, 9]
print(f"{rows} rows; times in ms; clue = HTTP cached, nc = HTTP with Cache-Control: no-cache, both one")
print("connection; x16 = cached under 16 connections; ratios of p50")
print(" ".join(h.ljust(x) if i < 2 else h.rjust(x) for i, (h, x) in enumerate(zip(hdr, w))))
checks = {k: [] for k in ("sql_c", "sql_nc", "p99_c", "p99_nc", "p99_load", "duck_c", "duck_nc")}
for rg in ranges:
    for r in names:
        g = lambda k: v.get(k)
        sql, duck = g(f"sql.{r}.{rg}.p50"), g(f"duck.{r}.{rg}.p50")
        c50, c99 = g(f"http.{r}.{rg}.cached.p50"), g(f"http.{r}.{rg}.cached.p99")
        n50, n99 = g(f"http.{r}.{rg}.nocache.p50"), g(f"http.{r}.{rg}.nocache.p99")
        l_rps, l99 = g(f"http.{r}.{rg}.load.rps"), g(f"http.{r}.{rg}.load.p99")
        rs_c, rs_nc, rd_c, rd_nc = ratio(sql, c50), ratio(sql, n50), ratio(duck, c50), ratio(duck, n50)
        label = f"{names[r]} {rg}"
        checks["sql_c"].append((rs_c, label)); checks["sql_nc"].append((rs_nc, label))
        checks["duck_c"].append((rd_c, label)); checks["duck_nc"].append((rd_nc, label))
        checks["p99_c"].append((c99, label)); checks["p99_nc"].append((n99, label))
        checks["p99_load"].append((l99, label))
        cells = [names[r], rg, f(sql), f(duck), f(c50, 2), f(c99, 2), f(n50, 2), f(n99, 2), f(l_rps, 0), f(l99, 2),
                 f(rs_c) + ("x" if rs_c else ""), f(rs_nc) + ("x" if rs_nc else ""), f(rd_c) + ("x" if rd_c else "")]
        print(" ".join(c.ljust(x) if i < 2 else c.rjust(x) for i, (c, x) in enumerate(zip(cells, w))))

def speedup(key, bar):
    xs = checks[key]
    if any(x is None for x, _ in xs):
        return "NOT MET", "no request completed: " + ", ".join(l for x, l in xs if x is None)
    x, lab = min(xs)
    return ("met" if x >= bar else "NOT MET"), f"worst {x:.1f}x ({lab})"
def p99(key):
    xs = checks[key]
    if any(x is None for x, _ in xs):
        return "NOT MET", "no request completed: " + ", ".join(l for x, l in xs if x is None)
    x, lab = max(xs)
    return ("met" if x < 20 else "NOT MET"), f"worst {x:.2f} ms ({lab})"
print()
print("bars:")
rows_out = [
    ("clue >= 100x faster than plain SQL, cached", speedup("sql_c", 100)),
    ("clue >= 100x faster than plain SQL, no-cache", speedup("sql_nc", 100)),
    ("p99 < 20 ms over HTTP, cached", p99("p99_c")),
    ("p99 < 20 ms over HTTP, no-cache", p99("p99_nc")),
    ("p99 < 20 ms over HTTP, cached, 16 connections", p99("p99_load")),
    ("clue >= 10x faster than DuckDB (goal), cached", speedup("duck_c", 10)),
    ("clue >= 10x faster than DuckDB (goal), no-cache", speedup("duck_nc", 10)),
]
o = v.get("import.overhead")
rows_out.append(("rollup overhead < 25% of import time",
                 ("not measured", "data reused from a previous run") if o is None
                 else (("met" if o < 25 else "NOT MET"), f"{o:.1f}%")))
for name, (status, why) in rows_out:
    print(f"  {name:<50} {status:<13} {why}")
PY
