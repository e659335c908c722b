#!/usr/bin/env bash
# Warehouse benchmark (on demand, not in CI), all in one run on one machine:
# a day of SALES sales rows and CUSTOMERS customers (10% of them moved or
# renamed since the day before) loaded by `clue warehouse load` into a
# warehouse holding the day before, rows/s per stage (read, clean, load)
# and in total, against `psql \copy` of the same sales file into a plain
# table of five text columns in the same run.
#
# Usage: bench/warehouse.sh [SALES] [CUSTOMERS]     (default 1000000 and 100000)
# Server: CLUE_BENCH_DATABASE_URL (admin URL), else 127.0.0.1:5432 as postgres.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SALES=${1:-1000000}
CUSTOMERS=${2:-100000}
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DB=clue_bench_warehouse
URL=$(python3 - "$ADMIN" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)
cargo build --release --quiet
CLUE=target/release/clue
WORK=$(mktemp -d /tmp/clue-bench-warehouse-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export CLUE_DATABASE_URL=$URL
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1

echo "Generating two days of $SALES sales rows and $CUSTOMERS customers..."
$CLUE warehouse generate --days 2 --customers "$CUSTOMERS" --sales-per-day "$SALES" \
  --change-rate 0.1 --out "$WORK" >/dev/null
DAY1=("$WORK/customers_2025-03-01.csv" "$WORK/sales_2025-03-01.csv")
DAY2=("$WORK/customers_2025-03-02.csv" "$WORK/sales_2025-03-02.csv")
rows=$(($(wc -l < "${DAY2[1]}") - 1))

# The baseline: the same sales file, \copy into a plain table.
psql -q "$URL" -c "CREATE TABLE plain_sales (customer_id text, product text, sales_amount text, shop_id text, transaction_date text)"
t0=$(date +%s.%N)
psql -q "$URL" -c "\\copy plain_sales FROM '${DAY2[1]}' WITH (FORMAT csv, HEADER true)"
t1=$(date +%s.%N)
copy_rate=$(python3 -c "print(round($rows / ($t1 - $t0)))")

$CLUE warehouse load --customers "${DAY1[0]}" --sales "${DAY1[1]}" >/dev/null
psql -q "$URL" -c "VACUUM ANALYZE"
/usr/bin/time -f "%M" -o "$WORK/rss" \
  $CLUE warehouse load --customers "${DAY2[0]}" --sales "${DAY2[1]}" --json > "$WORK/report.json"
python3 - "$WORK/report.json" "$rows" "$copy_rate" "$(cat "$WORK/rss")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); rows = int(sys.argv[2]); copy_rate = int(sys.argv[3]); rss_kb = int(sys.argv[4])
s = r["seconds"]
print(f"Day 2: {rows} sales rows, {r['customers']['received']} customers "
      f"({r['customers']['changed']} changed, {r['customers']['new']} new); "
      f"{r['sales']['loaded']} sales loaded, {r['sales']['quarantined']} quarantined")
for stage in ("read", "clean", "load"):
    print(f"  {stage:6} {s[stage]:7.2f} s  {rows / s[stage]:>12,.0f} rows/s")
total = rows / s["total"]
print(f"  total  {s['total']:7.2f} s  {total:>12,.0f} rows/s  (peak memory {rss_kb / 1024:.0f} MiB)")
print(f"psql \\copy of the same file into a plain table: {copy_rate:,} rows/s")
print(f"ratio: {total / copy_rate:.2f}x")
PY
$CLUE warehouse replay-quarantine | head -1
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" >/dev/null
