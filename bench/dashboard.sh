#!/usr/bin/env bash
# Dashboard benchmark (on demand, not in CI), in one run: `clue demo` with
# ROWS generated sales, then the dashboard's first page opened RUNS times in
# a fresh headless Chromium: the time until its first chart is drawn and the
# bytes it transferred (gzip as sent), against fetching the same API answers
# as raw JSON from the same page, in parallel, with no rendering.
# Needs chromium and chromedriver (apt-get install chromium chromium-driver).
#
# Usage: bench/dashboard.sh [ROWS] [RUNS]     (default 1000000 and 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${1:-1000000}
RUNS=${2:-5}
PORT=${CLUE_BENCH_PORT:-18181}
command -v chromedriver >/dev/null || { echo "bench/dashboard.sh needs chromedriver: apt-get install chromium chromium-driver" >&2; exit 2; }
cargo build --release --quiet
WORK=$(mktemp -d /tmp/clue-bench-dashboard-XXXXXX)
chmod 755 "$WORK"  # the embedded server, run as postgres when root, must reach its home
DEMO=
cleanup() { [ -n "$DEMO" ] && kill -INT "$DEMO" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# The demo on its own embedded cluster, so the run starts from nothing.
CLUE_HOME=$WORK/home CLUE_LOG=warn target/release/clue demo --rows "$ROWS" --port "$PORT" >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO=$!
for _ in $(seq 1200); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  kill -0 "$DEMO" 2>/dev/null || { cat "$WORK/demo.err" >&2; exit 1; }
  sleep 0.5
done
python3 - "http://127.0.0.1:$PORT/" "$RUNS" "$WORK" <<'PY'
import base64, json, statistics, subprocess, sys, time, urllib.request
url, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
port = 9533
driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def call(method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["value"]
for _ in range(50):
    try: call("GET", "/status"); break
    except Exception: time.sleep(0.1)
first, total, raw_time, raw_bytes = [], [], [], []
try:
    for i in range(runs):
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox",
            "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--window-size=1280,1300",
            f"--user-data-dir={work}/profile{i}"]}}}}
        sid = call("POST", "/session", caps)["sessionId"]
        call("POST", f"/session/{sid}/url", {"url": url})
        for _ in range(300):
            drawn = call("POST", f"/session/{sid}/execute/sync", {"script": "return window.__firstChart === undefined ? null : window.__firstChart", "args": []})
            if drawn is not None: break
            time.sleep(0.05)
        time.sleep(1.0)  # let the other charts finish, then count the bytes
        sent = call("POST", f"/session/{sid}/execute/sync", {"script":
            "return performance.getEntries().filter(e => e.transferSize !== undefined).reduce((n, e) => n + e.transferSize, 0)", "args": []})
        # The same answers as raw JSON: every API call the page made, again, in parallel.
        raw = call("POST", f"/session/{sid}/execute/async", {"script": """
            const done = arguments[arguments.length - 1];
            const before = performance.getEntriesByType('resource').length;
            const t = performance.now();
            Promise.all(window.__calls.map(([p, b]) => fetch(p, b === null ? {cache: 'no-store'} :
                {method: 'POST', cache: 'no-store', headers: {'content-type': 'application/json'}, body: b}).then(r => r.text())))
              .then(() => { const took = performance.now() - t;
                const bytes = performance.getEntriesByType('resource').slice(before).reduce((n, e) => n + e.transferSize, 0);
                done([took, bytes]); });""", "args": []})
        first.append(drawn); total.append(sent); raw_time.append(raw[0]); raw_bytes.append(raw[1])
        if i == 0:
            png = call("GET", f"/session/{sid}/screenshot")
            open("target/bench-dashboard.png", "wb").write(base64.b64decode(png))
        call("DELETE", f"/session/{sid}")
finally:
    driver.kill()
med = statistics.median
print(f"Dashboard first page, {runs} cold loads: first chart drawn at {med(first):.0f} ms (median; worst {max(first):.0f} ms), "
      f"{med(total) / 1024:.0f} KiB transferred (gzip as sent)")
print(f"The same API answers as raw JSON, fetched in parallel from the page: {med(raw_time):.0f} ms, {med(raw_bytes) / 1024:.0f} KiB")
print(f"First chart vs raw JSON: {med(first) / max(med(raw_time), 1):.1f}x the time; bars: under 1000 ms and 1 MB. Screenshot: target/bench-dashboard.png")
PY
