# The harness the HTTP benchmarks source: a fresh database, a release build
# and a `clue serve` they start and stop, and wrk latency read in ms.
# Set before sourcing: BENCH (the script's name), DB (database name), PORT,
# PARTITIONS (create-monthly-partitions arguments for `fresh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "bench/$BENCH needs wrk: apt-get install wrk" >&2; exit 2; }
ADMIN=${CLUE_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
URL=$(python3 - "$ADMIN" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
)
WORK=$(mktemp -d /tmp/clue-bench-XXXXXX)
cargo build --release --quiet
CLUE=target/release/clue
export CLUE_DATABASE_URL=$URL
cleanup() { [ -n "${SERVER:-}" ] && kill -INT "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # flags... -> a server on $PORT
  CLUE_LOG=warn $CLUE serve --port "$PORT" "$@" >/dev/null &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "the server did not start" >&2; exit 1
}
stop() { kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
fresh() {
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
  # shellcheck disable=SC2086
  $CLUE create-monthly-partitions $PARTITIONS >/dev/null
}
latency() { # wrk --latency output -> "p50 X ms  p99 Y ms"
  python3 - "$1" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    m = re.search(rf"{label}%\s+([0-9.]+)(us|ms|s)", out)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
print(f"p50 {ms('50'):.3f} ms  p99 {ms('99'):.3f} ms")
PY
}
