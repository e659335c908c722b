#!/usr/bin/env bash
# Schemathesis (PyPI) against every operation of the served OpenAPI
# document, with every check and phase, bounded in time: a `clue serve` over
# a database of its own (sales loaded, an admin key sent with every request),
# stopped and dropped afterwards. Any finding fails the run.
#
#   .ci/schemathesis.sh [CLUE_BINARY [SCHEMATHESIS_RUN_OPTIONS...]]
#
# (e.g. `.ci/schemathesis.sh target/debug/clue --seed 7 -n 100` explores further.)
#
# Needs PostgreSQL at 127.0.0.1:5432 (trust auth), python3 with venv.
# The settings (and the few accepted differences, each with its reason) are
# in .ci/schemathesis.toml next to this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
clue="$(realpath "${1:-$repo/target/debug/clue}")"
shift || true
version="4.32.5"
venv="${ST_VENV:-${TMPDIR:-/tmp}/clue-schemathesis-venv}"
db="clue_schemathesis_$$"
work="$(mktemp -d)"
port=$((20000 + $$ % 20000))
export CLUE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export CLUE_HOME="$work/home"
unset CLUE_AUTH CLUE_RATE_LIMIT CLUE_SECRET_KEY

server=""
cleanup() {
    if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    echo "schemathesis: installing $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
cd "$repo"
"$clue" create-schema >/dev/null
"$clue" generate-sales --rows 20000 --out "$work/sales.csv" >/dev/null
"$clue" import-data -c "$work/sales.csv" -t sales_report >/dev/null 2>&1
key="$("$clue" keys create --name schemathesis --scope admin 2>/dev/null)"

"$clue" serve --port "$port" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done

status=0
(cd "$work" && timeout --kill-after=30 "${ST_TIMEOUT:-900}" \
    "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" \
    run "http://127.0.0.1:$port/openapi.json" \
    --checks all --phases examples,coverage,fuzzing,stateful \
    --header "Authorization: Bearer $key" \
    --wait-for-schema 30 --no-color "$@") || status=$?
if [[ $status -ne 0 ]]; then
    echo "schemathesis: the server's warnings and errors:" >&2
    grep -E "WARN|ERROR" "$work/serve.log" | tail -20 >&2 || true
fi
if grep -q "panicked" "$work/serve.log"; then
    echo "schemathesis: the server panicked:" >&2
    grep -A5 panicked "$work/serve.log" >&2
    status=1
fi
exit $status
