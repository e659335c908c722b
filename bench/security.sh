#!/usr/bin/env bash
# Security benchmark (on demand, not in CI), two measurements in one run:
#  1. req/s and p99 of a cached report with keys required, a rate limit
#     checked on every request (a key whose rate is never reached) and
#     metrics recorded, against the same server with all three off
#     (--auth off --no-metrics). Runs alternate A, B, A, B to spread noise.
#  2. p99 of the same report with and without 10,000 half-open connections
#     held open (a holder keeps reopening the ones the server closes after
#     its 10 s header wait).
#
# Usage: bench/security.sh [ROWS] [SECONDS]   (defaults: 1000000 rows, 10 s a run)
# Needs wrk (apt-get install wrk) and python3. CLUE_BENCH_BIN runs another
# binary than a fresh release build. Server: CLUE_BENCH_DATABASE_URL (admin
# URL), else 127.0.0.1:5432 as postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
SECS=${2:-10}
command -v wrk >/dev/null || { echo "bench/security.sh needs wrk: apt-get install wrk" >&2; exit 2; }
WORK=$(mktemp -d /tmp/clue-bench-XXXXXX); chmod 755 "$WORK"
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
DB=clue_bench_security
URL=$(python3 - "$ADMIN" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)
if [ -n "${CLUE_BENCH_BIN:-}" ]; then CLUE=$CLUE_BENCH_BIN; else cargo build --release --quiet; CLUE=target/release/clue; fi
export CLUE_DATABASE_URL=$URL CLUE_HOME=$WORK/home
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

loaded=$(psql -XAtq "$URL" -c "SELECT count(*) FROM sales_report" 2>/dev/null || echo 0)
if [ "$loaded" != "$ROWS" ]; then
  echo "loading $ROWS rows..."
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
  $CLUE generate-sales --rows "$ROWS" --out "$WORK/sales.csv" --seed 1 2>/dev/null
  $CLUE create-schema >/dev/null
  $CLUE import-data -c "$WORK/sales.csv" -t sales_report --no-progress >/dev/null
fi
psql -q "$URL" -c "DELETE FROM clue.api_keys WHERE name = 'bench'" >/dev/null 2>&1 || true
KEY=$($CLUE keys create --name bench --scope read --rate 1000000/s 2>/dev/null)

OFF=18771; ON=18772
CLUE_LOG=warn $CLUE serve --port $OFF --auth off --no-metrics >/dev/null 2>&1 & PIDS+=($!)
CLUE_LOG=warn $CLUE serve --port $ON --auth required --rate-limit 1000000/s >/dev/null 2>&1 & PIDS+=($!)
for port in $OFF $ON; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
done
REPORT="/reports/top-5-by-revenue?start_date=2024-01-01&end_date=2025-12-31"
curl -sf "http://127.0.0.1:$OFF$REPORT" >/dev/null
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$ON$REPORT" >/dev/null

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; printf "%.2f", v}'; }
run() { # PORT CONNECTIONS [HEADER] -> "rps p99"
  local args=(-t2 -c"$2" -d"${SECS}s" --timeout 30s --latency)
  [ -n "${3:-}" ] && args+=(-H "$3")
  local out; out=$(wrk "${args[@]}" "http://127.0.0.1:$1$REPORT")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers in the run:" >&2; grep Non-2xx <<<"$out" >&2; fi
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
}

echo "1. a cached report, 16 connections, ${SECS} s a run"
printf '%-34s %10s %10s\n' "server" "req/s" "p99 ms"
off_total=0; on_total=0
for round in 1 2; do
  read -r r p < <(run $OFF 16); printf '%-34s %10s %10s\n' "all off (round $round)" "$r" "$p"; off_total=$(python3 -c "print($off_total+$r)")
  read -r r p < <(run $ON 16 "Authorization: Bearer $KEY"); printf '%-34s %10s %10s\n' "keys, rates, metrics on (round $round)" "$r" "$p"; on_total=$(python3 -c "print($on_total+$r)")
done
python3 -c "print(f'on / off: {$on_total/$off_total:.3f} (target: at least 0.90)')"

echo
echo "2. the same report, 8 connections, with 10,000 half-open connections held"
read -r r0 p0 < <(run $OFF 8)
python3 - "$OFF" 10000 "$WORK/held" <<'PY' &
import socket, sys, time, resource
port, want, status = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
while True:
    # Drop the ones the server closed, open new ones up to the target.
    alive = []
    for s in held:
        try:
            if s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                s.close(); continue
        except BlockingIOError:
            pass
        except OSError:
            s.close(); continue
        alive.append(s)
    held = alive
    while len(held) < want:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        except OSError:
            s.close(); break
        held.append(s)
    open(status, "w").write(str(len(held)))
    time.sleep(0.5)
PY
PIDS+=($!)
for _ in $(seq 480); do [ "$(cat "$WORK/held" 2>/dev/null || echo 0)" -ge 10000 ] && break; sleep 0.5; done
echo "held: $(cat "$WORK/held" 2>/dev/null || echo 0) half-open connections"
read -r r1 p1 < <(run $OFF 8)
echo "held at the end: $(cat "$WORK/held" 2>/dev/null || echo 0)"
printf '%-34s %10s %10s\n' "condition" "req/s" "p99 ms"
printf '%-34s %10s %10s\n' "no half-open connections" "$r0" "$p0"
printf '%-34s %10s %10s\n' "10,000 half-open connections" "$r1" "$p1"
python3 -c "print(f'p99 with / without: {$p1/$p0:.2f}')"
