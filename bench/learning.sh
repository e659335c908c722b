#!/usr/bin/env bash
# Learning-log benchmark (on demand, not in CI), all in one run on one machine:
#   1. POST /recordsjson with 32 concurrent clients (wrk, each request a new
#      request_id), durable commits (synchronous_commit as the server has it):
#      records/s with group commit, against the same server writing each
#      record in its own transaction (--no-group-commit), and the ratio.
#   2. GET /users/{id}/summary (a year by month, Cache-Control: no-cache, one
#      connection): p50/p99 for random users with 1,000 users and with
#      100,000 users (the same records per user), which should be the same.
#
# Usage: bench/learning.sh [SECONDS]     (default 10 s per wrk run)
# Needs wrk (apt-get install wrk). Server: CLUE_BENCH_DATABASE_URL (admin
# URL), else 127.0.0.1:5432 as postgres. Port 18767 must be free.
SECS=${1:-10}
BENCH=learning.sh DB=clue_bench_learning PORT=18767 PARTITIONS="-t learning_log -s 2024 -e 2026"
source "$(dirname "$0")/harness.sh"

cat > "$WORK/post.lua" <<'LUA'
-- Every request a new request_id; 2xx and 409 counted apart.
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
local hex = "0123456789abcdef"
local function uuid()
  return (("xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx"):gsub("x", function()
    local i = math.random(1, 16); return hex:sub(i, i) end))
end
request = function()
  local body = string.format('{"request_id": "%s", "user_id": "u%d", "word_count": %d}',
    uuid(), math.random(1, 1000), math.random(0, 100))
  return wrk.format("POST", "/recordsjson", {["Content-Type"] = "application/json"}, body)
end
local created = 0
response = function(status) if status == 201 then created = created + 1 end end
done = function(summary) io.write(string.format("created %d\n", summary.requests)) end
LUA

post_rate() { # flags -> records/s (201s) with 32 connections
  fresh; start "$@"
  out=$(wrk -t2 -c32 -d"${SECS}s" --timeout 30s -s "$WORK/post.lua" "http://127.0.0.1:$PORT")
  stop
  rows=$(psql -XAtq "$URL" -c "SELECT count(*) FROM learning_log")
  python3 -c "print(round($rows / $SECS))"
}
echo "POST /recordsjson, 32 connections, ${SECS} s each:"
base=$(post_rate --no-group-commit)
echo "  one transaction per record:  $base records/s"
grouped=$(post_rate)
echo "  group commit:                $grouped records/s"
python3 -c "print(f'  ratio: {$grouped / max($base, 1):.1f}x (bar: 3x)')"

cat > "$WORK/summary.lua" <<'LUA'
local users = tonumber(os.getenv("USERS"))
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format(
    "/users/u%d/summary?from=2024-01-01&to=2024-12-31T23:59:59&granularity=month", math.random(0, users - 1)),
    {["Cache-Control"] = "no-cache"})
end
LUA
summary_latency() { # users -> p50 p99 of uncached summaries
  fresh
  psql -q "$URL" -c "INSERT INTO learning_log
      SELECT gen_random_uuid(), 'u' || (i % $1), (random() * 100)::int,
             timestamptz '2024-01-01' + random() * interval '365 days'
        FROM generate_series(1, $1 * 20) i" -c "ANALYZE learning_log" >/dev/null
  start
  out=$(USERS=$1 wrk -t1 -c1 -d"${SECS}s" --latency -s "$WORK/summary.lua" "http://127.0.0.1:$PORT")
  stop
  latency "$out"
}
echo "GET /users/{id}/summary (a year by month, uncached, one connection, 20 records per user):"
echo "  1,000 users:    $(summary_latency 1000)"
echo "  100,000 users:  $(summary_latency 100000)"
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" >/dev/null
