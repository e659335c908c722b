#!/usr/bin/env bash
# Sales-engine benchmark (on demand, not in CI), all in one run on one machine:
#   1. POST /ingest with 32 concurrent clients (wrk, each request a new
#      ID_ORDER), durable commits: events/s with group commit, against the
#      same server writing each event in its own transaction
#      (--no-group-commit), and the ratio.
#   2. The events endpoint: 400,000 sales as CSV in 8 requests of 50,000
#      (4 at a time; validation, key claims and rollups on) against psql
#      \copy of the same rows into the same fresh table: rows/s (median of
#      three runs each, alternating) and ratio.
#   3. GET /feedback (from memory) over 1,000,000 events, random category
#      and day range, one connection: p50/p99.
#
# Usage: bench/sales.sh [SECONDS]     (default 10 s per wrk run)
# Needs wrk (apt-get install wrk). Server: CLUE_BENCH_DATABASE_URL (admin
# URL), else 127.0.0.1:5432 as postgres. Port 18768 must be free.
SECS=${1:-10}
BENCH=sales.sh DB=clue_bench_sales PORT=18768 PARTITIONS="-t sales -s 2021 -e 2021"
source "$(dirname "$0")/harness.sh"

cat > "$WORK/ingest.lua" <<'LUA'
-- Every request a new ID_ORDER.
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
local categories = {"clothing", "shoes", "bags", "accessories", "jewellery", "boys"}
local n = 0
local prefix = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.format(
    '{"ID_ORDER": "%s-%d", "ID_PRODUCT": "P%d", "ID_BUYER": "B%d", "ID_SELLER": "S%d", ' ..
    '"ID_SELLER_COUNTRY": "FR", "ID_BUYER_COUNTRY": "DE", "DATE_PAYMENT": "2021-0%d-%02d 10:00:00", ' ..
    '"BRAND": "Acme", "CATEGORY": "%s", "REVENUE": %d.%02d}',
    prefix, n, math.random(1, 5000), math.random(1, 3000), math.random(1, 300),
    math.random(1, 6), math.random(1, 28), categories[math.random(1, #categories)],
    math.random(1, 500), math.random(0, 99))
  return wrk.format("POST", "/ingest", {["Content-Type"] = "application/json"}, body)
end
LUA

ingest_rate() { # flags -> events/s (stored) with 32 connections
  fresh; start "$@"
  wrk -t2 -c32 -d"${SECS}s" --timeout 30s -s "$WORK/ingest.lua" "http://127.0.0.1:$PORT" >/dev/null
  stop
  rows=$(psql -XAtq "$URL" -c "SELECT count(*) FROM sales")
  python3 -c "print(round($rows / $SECS))"
}
echo "POST /ingest, 32 connections, ${SECS} s each:"
base=$(ingest_rate --no-group-commit)
echo "  one transaction per event:  $base events/s"
grouped=$(ingest_rate)
echo "  group commit:               $grouped events/s"
python3 -c "print(f'  ratio: {$grouped / max($base, 1):.1f}x (bar: 3x)')"

python3 - "$WORK" <<'PY'
import random, sys
random.seed(5)
cats = ["clothing", "shoes", "bags", "accessories", "jewellery", "boys"]
head = "ID_ORDER,ID_PRODUCT,ID_BUYER,ID_SELLER,ID_SELLER_COUNTRY,ID_BUYER_COUNTRY,DATE_PAYMENT,BRAND,CATEGORY,REVENUE\n"
rows = [f"E{i},P{random.randint(1,5000)},B{random.randint(1,30000)},S{random.randint(1,300)},FR,DE,"
        f"2021-0{random.randint(1,6)}-{random.randint(1,28):02d} {random.randint(0,23):02d}:00:00,Acme,"
        f"{random.choice(cats)},{random.randint(0,500)}.{random.randint(0,99):02d}\n" for i in range(400000)]
open(f"{sys.argv[1]}/all.csv", "w").write(head + "".join(rows))
for c in range(8):
    open(f"{sys.argv[1]}/part{c}.csv", "w").write(head + "".join(rows[c*50000:(c+1)*50000]))
PY
copy_once() { # -> rows/s of psql \copy into a fresh table
  fresh
  local t0 t1
  t0=$(date +%s.%N)
  psql -q "$URL" -c "\copy sales (\"ID_ORDER\", \"ID_PRODUCT\", \"ID_BUYER\", \"ID_SELLER\", \"ID_SELLER_COUNTRY\", \"ID_BUYER_COUNTRY\", \"DATE_PAYMENT\", \"BRAND\", \"CATEGORY\", \"REVENUE\") FROM '$WORK/all.csv' CSV HEADER"
  t1=$(date +%s.%N)
  python3 -c "print(round(400000 / ($t1 - $t0)))"
}
events_once() { # -> rows/s of the events endpoint into a fresh table
  fresh; start
  local t0 t1 written
  t0=$(date +%s.%N)
  for half in "0 1 2 3" "4 5 6 7"; do  # 4 at a time (not `wait`: the server is a job too)
    pids=()
    for c in $half; do
      curl -sf -o /dev/null -X POST -H 'content-type: text/csv' --data-binary "@$WORK/part$c.csv" \
           "http://127.0.0.1:$PORT/api/v1/datasets/sales/events" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
  done
  t1=$(date +%s.%N)
  stop
  written=$(psql -XAtq "$URL" -c "SELECT count(*) FROM sales")
  [ "$written" = 400000 ] || { echo "the events endpoint wrote $written of 400000 rows" >&2; exit 1; }
  python3 -c "print(round(400000 / ($t1 - $t0)))"
}
median() { python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:]))))" "$@"; }
# Three runs each, alternating (the machine is shared and noisy): medians.
copies=(); events=()
for _ in 1 2 3; do copies+=("$(copy_once)"); events+=("$(events_once)"); done
copy_rate=$(median "${copies[@]}")
events_rate=$(median "${events[@]}")
echo "400,000 sales into a fresh table (median of 3 runs each):"
echo "  psql \\copy:           $copy_rate rows/s"
echo "  events endpoint:      $events_rate rows/s (validation, key claims, rollups)"
python3 -c "print(f'  ratio: {$events_rate / max($copy_rate, 1):.2f}x (bar: 1x)')"

cat > "$WORK/feedback.lua" <<'LUA'
local categories = {"clothing", "shoes", "bags", "accessories", "jewellery", "boys"}
math.randomseed(os.time())
request = function()
  local path
  if math.random() < 0.5 then
    path = string.format("/feedback?start_date=2021-0%d-01&end_date=2021-06-30", math.random(1, 6))
  else
    path = "/feedback?category=" .. categories[math.random(1, #categories)]
  end
  return wrk.format("GET", path)
end
LUA
fresh
psql -q "$URL" -c "INSERT INTO sales (\"ID_ORDER\", \"ID_PRODUCT\", \"ID_BUYER\", \"ID_SELLER\",
      \"ID_SELLER_COUNTRY\", \"ID_BUYER_COUNTRY\", \"DATE_PAYMENT\", \"BRAND\", \"CATEGORY\", \"REVENUE\")
    SELECT 'O' || i, 'P' || (i % 5000), 'B' || (i % 30000), 'S' || (i % 300), 'FR', 'DE',
           timestamptz '2021-01-01' + random() * interval '180 days', 'Acme',
           (ARRAY['clothing','shoes','bags','accessories','jewellery','boys'])[1 + i % 6],
           round((random() * 500)::numeric, 2)
      FROM generate_series(1, 1000000) i" -c "ANALYZE sales" >/dev/null
$CLUE rollups rebuild >/dev/null
start
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/feedback")" = 200 ] && break; sleep 0.1
done
out=$(wrk -t1 -c1 -d"${SECS}s" --latency -s "$WORK/feedback.lua" "http://127.0.0.1:$PORT")
stop
echo "GET /feedback over 1,000,000 events, one connection: $(latency "$out") (bar: p99 < 1 ms)"
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" >/dev/null
