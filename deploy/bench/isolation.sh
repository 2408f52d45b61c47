#!/usr/bin/env bash
# Isolation benchmark: what one tenant's big lead import does to everyone
# else's writes. Campaign `POST` latency (p50/p90/p99/max) at a fixed rate,
# first on an idle server, then while a ROWS-row lead import (default
# 1,000,000) of another project is being projected, on the same server.
#
#   deploy/bench/isolation.sh                               # 1M rows, 50 req/s, 30 s
#   ROWS=100000 RATE=20 SECONDS_PER_RUN=10 deploy/bench/isolation.sh
#   SKIP_BUILD=1 CARGO_TARGET_DIR=<dir with release binaries> deploy/bench/isolation.sh
#
# The load is open-loop (`marketing-bench --rate`): each request is due at a
# fixed time and its latency counts from then, so a stalled server is charged
# for the requests it held back. The loaded run starts once the leads read
# model has its first rows, and the script reports how many it had at the
# start and end of the run: a run that outlives the projection says so.
# Machines are shared and noisy: the idle run, in the same conditions, is the
# comparison; `uptime` is printed beside each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-1000000}
RATE=${RATE:-50}
CONCURRENCY=${CONCURRENCY:-16}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
. deploy/bench/lib.sh
bench_build bench
LOADGEN=$(dirname "$BIN")/marketing-bench
IMPORT=""
# The import in flight too, before what lib.sh cleans up.
isolation_cleanup() {
    [ -n "$IMPORT" ] && kill "$IMPORT" 2>/dev/null && wait "$IMPORT" 2>/dev/null || true
    bench_cleanup
}
trap isolation_cleanup EXIT
leads() { psql -d "$DB" -Atc "SELECT count(*) FROM leads"; }

echo "generating $ROWS leads"
python3 deploy/bench/gen_leads.py "$ROWS" >"$WORK/leads.csv"
# Two tenants: one imports (lib.sh's key, project `bench`), the other only
# creates campaigns.
bench_db "mk_bench_isolation_$$"
IMPORTER=$KEY
WRITER=$("$BIN" api-key create --project writer 2>/dev/null | tail -1)
# The import's own time limit raised so that a slow machine finishes it
# (rate limits are off in every benchmark server: the load is the server's,
# not one client's).
RUST_LOG=${RUST_LOG:-warn} LEAD_IMPORT_TIMEOUT_MS=3600000 bench_serve bench-isolation-serve.log
CAMPAIGN=$(curl -fsS --max-time 10 -H "Authorization: Bearer $IMPORTER" -H 'content-type: application/json' \
    -d '{"name": "Import target"}' "$API/campaigns" | field '["id"]')

load() {
    "$LOADGEN" --url "$BASE" --key "$WRITER" --scenario create \
        --body-file deploy/bench/seed-campaign.json --rate "$RATE" --concurrency "$CONCURRENCY" \
        --seconds "$SECONDS_PER_RUN"
}

echo "idle:   $(uptime)"
IDLE=$(load)
echo "idle:   $IDLE"

START=$(date +%s.%N)
curl -fsS --max-time 3600 -H "Authorization: Bearer $IMPORTER" -F "file=@$WORK/leads.csv" \
    "$API/campaigns/$CAMPAIGN/leads/import" >"$WORK/report.json" &
IMPORT=$!
# Wait for the projection to be under way: the first leads in the read model.
for _ in $(seq 1 3000); do
    [ "$(leads)" -gt 0 ] && break
    sleep 0.2
done
BEFORE=$(leads)
BEFORE_AT=$(date +%s.%N)
echo "import: $(uptime)"
LOADED=$(load)
AFTER=$(leads)
AFTER_AT=$(date +%s.%N)
echo "import: $LOADED"
echo "import: $(uptime)"
wait "$IMPORT"
IMPORT=""
IMPORTED_AT=$(date +%s.%N)
python3 - "$WORK/report.json" "$ROWS" <<'PY'
import json, sys
report, n = json.load(open(sys.argv[1])), int(sys.argv[2])
assert report["imported"] == n and report["failed"] == 0, report
PY
# Until every lead is projected, for the import's rate during the run.
for _ in $(seq 1 18000); do
    [ "$(leads)" -ge "$ROWS" ] && break
    sleep 0.2
done
VISIBLE_AT=$(date +%s.%N)

python3 - "$IDLE" "$LOADED" "$ROWS" "$BEFORE" "$AFTER" "$START" "$BEFORE_AT" "$AFTER_AT" "$IMPORTED_AT" "$VISIBLE_AT" <<'PY'
import json, sys
idle, loaded = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows, before, after = map(int, sys.argv[3:6])
start, before_at, after_at, imported_at, visible_at = map(float, sys.argv[6:11])
for name, run in (("idle", idle), ("during import", loaded)):
    print(f"POST /campaigns {name}: {run['requests']} ok, {run['errors']} errors at {run['rate']:.0f}/s; "
          f"p50 {run['p50_ms']:.1f} ms, p90 {run['p90_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, max {run['max_ms']:.1f} ms "
          f"(from when due); sent to answered p50 {run.get('service_p50_ms', 0):.1f} ms, p99 {run.get('service_p99_ms', 0):.1f} ms; "
          f"{run['seconds']:.0f} s to send them")
print(f"leads projected: {before:,} when the loaded run started ({before_at - start:.1f} s into the import), "
      f"{after:,} when it ended ({after_at - start:.1f} s); import answered at {imported_at - start:.1f} s, "
      f"all {rows:,} visible at {visible_at - start:.1f} s ({rows / (visible_at - start):,.0f} rows/s)")
if after >= rows:
    print("WARNING: the projection finished during the loaded run; part of it was not under import")
PY
