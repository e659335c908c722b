#!/usr/bin/env bash
# What the rollup keepers (statement triggers that keep rollups exact for
# writers that are not clue) cost a plain SQL INSERT, in one run: ROWS rows
# into sales_report (five rollups, minima and maxima among them) by one
# INSERT ... SELECT, with the keepers, and with triggers off
# (session_replication_role = replica; the rollups then go stale), three
# times each, alternating; medians, the ratio, and `clue rollups verify`.
#
# Usage: bench/keepers.sh [ROWS]     (default 1000000)
# Server: CLUE_BENCH_DATABASE_URL (admin URL), else 127.0.0.1:5432 as postgres.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${1:-1000000}
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
URL=$(python3 - "$ADMIN" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/clue_bench_keepers")))
PY
)
cargo build --release --quiet
CLUE=target/release/clue
export CLUE_DATABASE_URL=$URL
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS clue_bench_keepers" -c "CREATE DATABASE clue_bench_keepers" >/dev/null 2>&1
$CLUE create-schema >/dev/null
$CLUE create-monthly-partitions -t sales_report -s 2024 -e 2025 >/dev/null
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
$CLUE generate-sales --rows 1000 --out "$WORK/seed.csv" >/dev/null 2>&1
$CLUE import-data -c "$WORK/seed.csv" -t sales_report >/dev/null   # builds the rollups and their keepers
insert() { # off|on -> seconds of one INSERT of ROWS rows
  local mode=""
  [ "$1" = off ] && mode="SET session_replication_role = replica;"
  psql -XAtq "$URL" <<SQL | tail -1
$mode
\\timing on
INSERT INTO sales_report (product_id, product_name, region, sales_date, quantity_sold, sales_amount, unit_price)
SELECT 1 + i % 5000, 'P' || (1 + i % 5000), (ARRAY['North','South','East','West'])[1 + i % 4],
       date '2024-01-01' + (i % 730), 1 + i % 9, ((1 + i % 9) * (1 + i % 997))::numeric / 10, (1 + i % 997)::numeric / 10
  FROM generate_series(1, $ROWS) i;
SQL
}
on=(); off=()
for _ in 1 2 3; do
  off+=("$(insert off | sed -E 's/Time: ([0-9.]+) ms.*/\1/')")
  on+=("$(insert on | sed -E 's/Time: ([0-9.]+) ms.*/\1/')")
done
python3 - "${off[*]}" "${on[*]}" "$ROWS" <<'PY'
import statistics, sys
off = statistics.median(map(float, sys.argv[1].split())); on = statistics.median(map(float, sys.argv[2].split()))
print(f"INSERT of {int(sys.argv[3]):,} rows into sales_report, median of 3:")
print(f"  triggers off:      {off / 1000:.2f} s")
print(f"  with the keepers:  {on / 1000:.2f} s  ({on / off:.2f}x)")
PY
$CLUE rollups rebuild >/dev/null   # the triggers-off inserts left them stale
$CLUE rollups verify | tail -n +1 | grep -c ": ok" | xargs -I{} echo "  rollups verify after a rebuild: {} ok"
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS clue_bench_keepers" >/dev/null
