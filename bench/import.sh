#!/usr/bin/env bash
# Import benchmark (on demand, not in CI): the same generated CSV loaded into
# the same freshly created partitioned, indexed table (sales_report's DDL under
# the name sales_bench, which declares no dataset: psql keeps no rollups, so
# neither does clue here; bench/reports.sh measures rollup upkeep) by
#   (a) psql \copy (no validation)        -- the baseline
#   (b) clue import-data                  -- typed, all-or-nothing
#   (c) clue import-data --schema_path    -- every row validated, rejects logged
# in one run, printing rows/s and the ratio of each to psql.
#
# Usage: bench/import.sh [ROWS] [ROUNDS]     (defaults: 1000000 rows, 2 rounds)
# Server: CLUE_BENCH_DATABASE_URL (an admin URL), else 127.0.0.1:5432 as
# postgres, else a clue embedded cluster started for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${2:-2}
WORK=$(mktemp -d /tmp/clue-bench-XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet
CLUE=target/release/clue
unset CLUE_DATABASE_URL CLUE_DB CLUE_DB_HOST CLUE_DB_PORT CLUE_DB_USER CLUE_DB_PWD

if [ -n "${CLUE_BENCH_DATABASE_URL:-}" ]; then
  ADMIN=$CLUE_BENCH_DATABASE_URL
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  ADMIN=postgresql://postgres@127.0.0.1:5432/postgres
else
  $CLUE db start --home "$WORK/home" >/dev/null
  trap '$CLUE db stop --home "$WORK/home" >/dev/null; rm -rf "$WORK"' EXIT
  ADMIN=$($CLUE db url --home "$WORK/home")
fi
db_url() { # database name -> URL on the same server
  python3 - "$ADMIN" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}

sed 's/sales_report/sales_bench/g' sql/sales_report.sql > "$WORK/bench.sql"
CSV=$WORK/sales.csv
echo "generating $ROWS rows..."
$CLUE generate-sales --rows "$ROWS" --out "$CSV" --seed 1 2>&1 | sed 's/^/  /'
SCHEMA=tests/fixtures/000/sales_data.yaml

fresh_db() { # name -> URL of a new database with sales_report and its 2024-2025 partitions
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
  local url; url=$(db_url "$1")
  CLUE_DATABASE_URL=$url $CLUE create-schema --source "$WORK/bench.sql" >/dev/null
  CLUE_DATABASE_URL=$url $CLUE create-monthly-partitions -t sales_bench -s 2024 -e 2025 >/dev/null
  psql -q "$url" -c "CHECKPOINT" >/dev/null
  echo "$url"
}
now() { date +%s.%N; }
declare -A best
run() { # label command...
  local label=$1; shift
  local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
  local rate; rate=$(python3 -c "print(round($ROWS/($t1-$t0)))")
  printf '  %-28s %8.2f s  %9d rows/s\n' "$label" "$(python3 -c "print($t1-$t0)")" "$rate"
  if [ -z "${best[$label]:-}" ] || [ "$rate" -gt "${best[$label]}" ]; then best[$label]=$rate; fi
}
COLS="product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  url=$(fresh_db clue_bench_psql)
  run "psql \\copy" psql -q "$url" -c "\\copy sales_bench ($COLS) FROM '$CSV' WITH (FORMAT csv, HEADER true)"
  url=$(fresh_db clue_bench_fast)
  run "clue import-data" env CLUE_DATABASE_URL="$url" $CLUE import-data -c "$CSV" -t sales_bench --no-progress
  url=$(fresh_db clue_bench_valid)
  run "clue import-data --schema" env CLUE_DATABASE_URL="$url" $CLUE import-data -c "$CSV" -t sales_bench -p "$SCHEMA" --no-progress
  n=$(psql -XAtq "$url" -c "SELECT count(*) FROM sales_bench")
  [ "$n" = "$ROWS" ] || { echo "row count mismatch: $n" >&2; exit 1; }
done
for db in clue_bench_psql clue_bench_fast clue_bench_valid; do psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $db" >/dev/null; done

base=${best["psql \\copy"]}
echo
echo "best of $ROUNDS round(s), $ROWS rows, ratio to psql \\copy:"
for label in "psql \\copy" "clue import-data" "clue import-data --schema"; do
  printf '  %-28s %9d rows/s  %5.2fx\n' "$label" "${best[$label]}" "$(python3 -c "print(${best[$label]}/$base)")"
done
