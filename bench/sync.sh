#!/usr/bin/env bash
# Database-sync benchmark (on demand, not in CI), all in one run on one machine:
#   1. The first sync of a source with ORDERS orders (about 3 items each):
#      `clue etl run` into a fresh clue database (rollups kept) against a
#      plain copy of the same analytical rows (`psql -c "COPY (SELECT …) TO
#      STDOUT"` piped into `psql -c "COPY … FROM STDIN"`), rows/s and ratio.
#   2. Polling mode: `clue etl run --continuous --polling-interval 1`, the
#      time from a source commit (an order's status changed) to the change
#      showing in the analytics table, p50/p99 over CHANGES changes.
#   3. CDC mode: the same source on a private PostgreSQL with wal_level =
#      logical (started here from the server programs: CLUE_PG_BIN, the
#      PATH, or /usr/lib/postgresql/*/bin), `clue etl run --cdc`: its first
#      copy (in the slot's snapshot) in rows/s, then the same latency.
#
# Usage: bench/sync.sh [ORDERS] [CHANGES]     (default 1000000 and 100)
# Server: CLUE_BENCH_DATABASE_URL (admin URL), else 127.0.0.1:5432 as postgres.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ORDERS=${1:-1000000}
CHANGES=${2:-100}
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
url() { python3 - "$ADMIN" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}
SRC=$(url clue_bench_sync_source); DST=$(url clue_bench_sync); PLAIN=$(url clue_bench_sync_plain)
cargo build --release --quiet
CLUE=target/release/clue
export CLUE_SOURCE_DATABASE_URL=$SRC
WORK=$(mktemp -d /tmp/clue-bench-sync-XXXXXX)
SYNC=
LDATA=$WORK/logical
# The server programs refuse to run as root: run them as postgres then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$SYNC" ] && kill -INT "$SYNC" 2>/dev/null; wait 2>/dev/null
  [ -f "$LDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$LDATA" -m fast -w stop >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
fresh() { psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null 2>&1; }

# The source schema and ORDERS generated orders (about 3 items each) at $1.
generate() {
psql -q "$1" -f sql/delivery_source.sql >/dev/null
psql -q "$1" >/dev/null <<SQL
SELECT setseed(0.7);
INSERT INTO operations.customers (customer_name) SELECT 'Customer ' || i FROM generate_series(1, 10000) i;
INSERT INTO operations.products (product_name, barcode, unity_price)
     SELECT 'Product ' || i, lpad(i::text, 13, '0'), round((1 + random() * 99)::numeric, 2) FROM generate_series(1, 500) i;
INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
     SELECT d, d + 10, 1 + floor(random() * 10000)::int,
            (ARRAY['PENDING','PROCESSING','COMPLETED','REPROCESSING','CANCELLED'])[1 + floor(random() * 5)::int]
       FROM (SELECT date '2025-01-01' + floor(random() * 365)::int AS d FROM generate_series(1, $ORDERS)) x;
INSERT INTO operations.order_items (order_id, product_id, quanity)
     SELECT 1 + i % $ORDERS, 1 + floor(random() * 500)::int, 1 + floor(random() * 9)::int
       FROM generate_series(1, $ORDERS * 3) i;
CREATE INDEX ON operations.orders (updated_at);
CREATE INDEX ON operations.order_items (updated_at);
ANALYZE;
SQL
}

# The time from a source commit to the change in the analytics table, one
# change at a time: latency SOURCE DESTINATION LABEL.
cat > "$WORK/latency.py" <<'PY'
import random, subprocess, sys, time
src, dst, n, orders, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def psql(url, sql):
    return subprocess.run(["psql", "-XAtq", url, "-c", sql], capture_output=True, text=True, check=True).stdout.strip()
random.seed(9)
lat = []
for k in range(n):
    order = random.randint(1, orders)
    status = f"S{k}"
    psql(src, f"UPDATE operations.orders SET status = '{status}' WHERE order_id = {order}")
    t0 = time.monotonic()
    while psql(dst, f"SELECT status FROM analytics.analytical_orders WHERE order_id = {order}") != status:
        if time.monotonic() - t0 > 60:
            sys.exit(f"change {k} did not arrive within a minute")
    lat.append(time.monotonic() - t0)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"{label}, source commit to analytics over {n} changes: p50 {p(0.5):.0f} ms  p99 {p(0.99):.0f} ms (polled with psql, about 10 ms a look)")
PY
latency() { python3 "$WORK/latency.py" "$1" "$2" "$CHANGES" "$ORDERS" "$3"; }

echo "Generating a source with $ORDERS orders..."
fresh clue_bench_sync_source
generate "$SRC"
rows=$(psql -XAtq "$SRC" -c "SELECT (SELECT count(*) FROM operations.orders) + (SELECT count(*) FROM operations.order_items)")

# The plain copy: the same analytical rows, SQL out, SQL in, no rollups.
fresh clue_bench_sync_plain
CLUE_DATABASE_URL=$PLAIN $CLUE etl status >/dev/null  # clue's schema, so the tables exist
orders_sql="SELECT o.order_id, coalesce(o.customer_id, 0), coalesce(c.customer_name, ''), o.order_date, o.delivery_date,
       coalesce(o.status, ''), coalesce(t.items, 0), coalesce(t.amount, 0), o.created_at, o.updated_at, o.created_by, o.updated_by
  FROM operations.orders o LEFT JOIN operations.customers c ON c.customer_id = o.customer_id
  LEFT JOIN (SELECT i.order_id, sum(i.quanity) AS items, sum(i.quanity * coalesce(p.unity_price, 0)) AS amount
               FROM operations.order_items i LEFT JOIN operations.products p ON p.product_id = i.product_id
              GROUP BY i.order_id) t ON t.order_id = o.order_id"
items_sql="SELECT i.order_item_id, i.order_id, coalesce(i.product_id, 0), coalesce(p.product_name, ''), coalesce(i.quanity, 0),
       coalesce(p.unity_price, 0), coalesce(i.quanity, 0) * coalesce(p.unity_price, 0), coalesce(o.status, ''), o.delivery_date,
       i.created_at, i.updated_at, i.created_by, i.updated_by
  FROM operations.order_items i JOIN operations.orders o ON o.order_id = i.order_id
  LEFT JOIN operations.products p ON p.product_id = i.product_id"
t0=$(date +%s.%N)
psql -XAtq "$SRC" -c "COPY ($orders_sql) TO STDOUT" | psql -q "$PLAIN" -c "COPY analytics.analytical_orders FROM STDIN"
psql -XAtq "$SRC" -c "COPY ($items_sql) TO STDOUT" | psql -q "$PLAIN" -c "COPY analytics.analytical_order_items FROM STDIN"
t1=$(date +%s.%N)
plain_rate=$(python3 -c "print(round($rows / ($t1 - $t0)))")

fresh clue_bench_sync
export CLUE_DATABASE_URL=$DST
$CLUE etl status >/dev/null
t0=$(date +%s.%N)
$CLUE etl run --no-progress >/dev/null
t1=$(date +%s.%N)
clue_rate=$(python3 -c "print(round($rows / ($t1 - $t0)))")
$CLUE rollups verify >/dev/null || { echo "rollups differ after the first sync" >&2; exit 1; }
echo "First sync of $rows source rows (orders and items):"
echo "  plain COPY pipe:  $plain_rate rows/s"
echo "  clue etl run:     $clue_rate rows/s (with rollups)"
python3 -c "print(f'  ratio: {$clue_rate / max($plain_rate, 1):.2f}x')"

# Polling mode: source commit to analytics, one change at a time.
CLUE_LOG=warn $CLUE etl run --continuous --polling-interval 1 --no-progress >/dev/null 2>&1 &
SYNC=$!
latency "$SRC" "$DST" "Polling mode (every 1 s)"
kill -INT "$SYNC"; wait "$SYNC" 2>/dev/null || true; SYNC=

# CDC mode: the same source on a private server with wal_level = logical.
PGBIN=${CLUE_PG_BIN:-$(dirname "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")}
LPORT=${CLUE_BENCH_LOGICAL_PORT:-54339}
mkdir -p "$LDATA"
[ "$(id -u)" = 0 ] && chown postgres "$WORK" "$LDATA"
as_pg "$PGBIN/initdb" -D "$LDATA" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$LDATA" -l "$LDATA/log" -w -s start \
  -o "-c wal_level=logical -c port=$LPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$LDATA -c max_wal_size=4GB"
LSRC=postgresql://postgres@127.0.0.1:$LPORT/postgres
echo "Generating the same source on a server with wal_level = logical..."
generate "$LSRC"
CDC_DST=$(url clue_bench_sync_cdc)
fresh clue_bench_sync_cdc
CLUE_DATABASE_URL=$CDC_DST $CLUE etl status >/dev/null
t0=$(date +%s.%N)
CLUE_DATABASE_URL=$CDC_DST CLUE_SOURCE_DATABASE_URL=$LSRC CLUE_LOG=warn $CLUE etl run --cdc --no-progress >/dev/null 2>"$WORK/cdc.log" &
SYNC=$!
until [ "$(psql -XAtq "$CDC_DST" -c "SELECT count(*) FROM clue.sync_positions WHERE lsn IS NOT NULL")" = 1 ]; do
  kill -0 "$SYNC" 2>/dev/null || { cat "$WORK/cdc.log" >&2; exit 1; }
  sleep 0.2
done
t1=$(date +%s.%N)
cdc_rate=$(python3 -c "print(round($rows / ($t1 - $t0)))")
echo "CDC mode: first copy in the slot's snapshot: $cdc_rate rows/s ($(python3 -c "print(f'{$cdc_rate / max($plain_rate, 1):.2f}')")x the plain COPY pipe)"
latency "$LSRC" "$CDC_DST" "CDC mode (clue etl run --cdc)"
CLUE_DATABASE_URL=$CDC_DST $CLUE rollups verify >/dev/null || { echo "rollups differ after CDC" >&2; exit 1; }
kill -INT "$SYNC"; wait "$SYNC" 2>/dev/null || true; SYNC=
CLUE_DATABASE_URL=$CDC_DST CLUE_SOURCE_DATABASE_URL=$LSRC $CLUE etl drop-slot >/dev/null
for d in clue_bench_sync clue_bench_sync_plain clue_bench_sync_source clue_bench_sync_cdc; do psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $d" >/dev/null; done
