#!/usr/bin/env bash
# HTTP benchmark (on demand, not in CI): with ROWS generated sales rows loaded,
# measures requests/s and p50/p99 latency of each prototype-000 report served
# by `clue serve`, with wrk and 16 connections, over the whole two-year range
# and over one month; and, as the baseline measured in the same run, the same
# report's SQL run directly by psql on the fact table.
#
# Usage: bench/http.sh [ROWS] [SECONDS]     (defaults: 1000000 rows, 10 s per report)
# Needs wrk (apt-get install wrk). Server: CLUE_BENCH_DATABASE_URL (admin URL),
# else 127.0.0.1:5432 as postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
SECS=${2:-10}
command -v wrk >/dev/null || { echo "bench/http.sh needs wrk: apt-get install wrk" >&2; exit 2; }
WORK=$(mktemp -d /tmp/clue-bench-XXXXXX); chmod 755 "$WORK"
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DB=clue_bench_http
URL=$(python3 - "$ADMIN" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)
cargo build --release --quiet
CLUE=target/release/clue
export CLUE_DATABASE_URL=$URL
cleanup() { [ -n "${SERVER:-}" ] && kill -INT "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

loaded=$(psql -XAtq "$URL" -c "SELECT count(*) FROM sales_report" 2>/dev/null || echo 0)
if [ "$loaded" != "$ROWS" ]; then
  echo "loading $ROWS rows..."
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
  $CLUE generate-sales --rows "$ROWS" --out "$WORK/sales.csv" --seed 1 2>/dev/null
  $CLUE create-schema >/dev/null
  $CLUE import-data -c "$WORK/sales.csv" -t sales_report --no-progress | sed 's/^/  /'
  psql -q "$URL" -c "VACUUM ANALYZE sales_report" >/dev/null
fi

PORT=18765
CLUE_LOG=warn $CLUE serve --port $PORT >/dev/null &
SERVER=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done

sql_ms() { # SQL -> median ms of 5 runs through psql (plain SQL on the fact table)
  python3 - "$URL" "$1" <<'PY'
import subprocess, sys, statistics, re
url, sql = sys.argv[1], sys.argv[2]
times = []
for _ in range(5):
    out = subprocess.run(["psql", "-XAtq", url, "-c", "\\timing on", "-c", sql], capture_output=True, text=True).stdout
    times.append(float(re.findall(r"Time: ([0-9.]+) ms", out)[-1]))
print(f"{statistics.median(times):.1f}")
PY
}
printf '%-40s %10s %10s %10s %12s\n' "report (range)" "req/s" "p50 ms" "p99 ms" "psql SQL ms"
for range in "start_date=2024-01-01&end_date=2025-12-31" "start_date=2025-03-01&end_date=2025-03-31"; do
  s=${range%%&*}; s=${s#start_date=}; e=${range##*end_date=}
  for report in monthly-sales-summary monthly-sales-breakdown top-5-by-revenue; do
    out=$(wrk -t2 -c16 -d"${SECS}s" --timeout 60s --latency "http://127.0.0.1:$PORT/reports/$report?$range")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; printf "%.1f", v}'; }
    p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
    case $report in
      monthly-sales-summary) sql="SELECT to_char(date_trunc('month', sales_date), 'YYYY-MM'), sum(quantity_sold), sum(sales_amount) FROM sales_report WHERE sales_date >= '$s' AND sales_date <= '$e' GROUP BY 1 ORDER BY 1";;
      monthly-sales-breakdown) sql="SELECT to_char(date_trunc('month', sales_date), 'YYYY-MM'), product_name, region, sum(sales_amount), sum(quantity_sold) FROM sales_report WHERE sales_date >= '$s' AND sales_date <= '$e' GROUP BY 1,2,3 ORDER BY 1,2,3";;
      top-5-by-revenue) sql="SELECT rank() OVER (ORDER BY sum(sales_amount) DESC), product_id, product_name, sum(sales_amount) FROM sales_report WHERE sales_date >= '$s' AND sales_date <= '$e' GROUP BY 2,3 ORDER BY 4 DESC LIMIT 5";;
    esac
    printf '%-40s %10s %10s %10s %12s\n' "$report ($s..$e)" "$rps" "$p50" "$p99" "$(sql_ms "$sql")"
  done
done
