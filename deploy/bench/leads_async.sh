#!/usr/bin/env bash
# Asynchronous lead import benchmark (`Prefer: respond-async`): for each size
# in SIZES, the time to the 202 (upload spooled), to `completed`, and until
# every lead is visible through the query API; rows/s; the server's peak
# memory (VmHWM).
#
#   deploy/bench/leads_async.sh                 # SIZES=1000000
#   SIZES=100000 deploy/bench/leads_async.sh    # a quick run
#   SKIP_BUILD=1 MARKETING_BIN=path/to/marketing deploy/bench/leads_async.sh
#
# A fresh database, media directory and server per size. Bounded: every HTTP
# call has a time limit, polling gives up after 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-1000000}
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
BIN=${MARKETING_BIN:-$CARGO_TARGET_DIR/release/marketing}
# SKIP_BUILD=1 measures the binary already built (MARKETING_BIN: another one).
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p marketing >/dev/null
WORK=$(mktemp -d)
DB=""
SERVER=""
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    [ -n "$DB" ] && psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

printf '%-9s %10s %12s %12s %12s %12s %12s\n' rows "202_s" "completed_s" "visible_s" "rows_per_s" "rss_idle_MiB" "peak_MiB"
for N in $SIZES; do
    FILE=$WORK/leads-$N.csv
    python3 deploy/bench/gen_leads.py "$N" >"$FILE"
    DB=mk_bench_async_$$_$N
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=warn,command_api=info
    export MEDIA_DIR=$WORK/media
    "$BIN" migrate >/dev/null
    KEY=$("$BIN" api-key create --project bench 2>/dev/null | tail -1)
    RATE_LIMIT_PER_SECOND=0 "$BIN" serve 2>>"$CACHE_DIR/bench-leads-async-serve.log" &
    SERVER=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    API=http://127.0.0.1:$PORT/v1/dev/marketing
    CAMPAIGN=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d '{"name": "Bench"}' "$API/campaigns" | field '["id"]')
    IDLE=$(kib "$SERVER" VmRSS)

    START=$(now)
    LOCATION=$(curl -fsS --max-time 600 -o /dev/null -w '%header{location}' -H "Authorization: Bearer $KEY" \
        -H 'Prefer: respond-async' -F "file=@$FILE" "$API/campaigns/$CAMPAIGN/leads/import")
    ACCEPTED=$(now)
    JOB=http://127.0.0.1:$PORT$LOCATION
    for _ in $(seq 1 18000); do
        STATE=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" "$JOB" | field '["state"]')
        [ "$STATE" = completed ] || [ "$STATE" = failed ] && break
        sleep 0.1
    done
    COMPLETED=$(now)
    curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" "$JOB" >"$WORK/job.json"
    LAST=$((N - 1))
    for _ in $(seq 1 18000); do
        FOUND=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" \
            "$API/campaigns/$CAMPAIGN/leads?search=lead$LAST@&limit=1" | field '["data"].__len__()')
        [ "$FOUND" = 1 ] && break
        sleep 0.1
    done
    VISIBLE=$(now)
    PEAK=$(kib "$SERVER" VmHWM)
    COUNT=$(psql -d "$DB" -Atc "SELECT count(*) FROM leads WHERE campaign_id = '$CAMPAIGN'")
    python3 - "$WORK/job.json" "$N" "$COUNT" <<'PY'
import json, sys
job, n, count = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert job["state"] == "completed" and job["imported"] == n and job["failed"] == 0 and job["duplicates"] == 0, job
assert count == n, f"read model has {count} of {n} leads"
PY
    python3 - "$N" "$START" "$ACCEPTED" "$COMPLETED" "$VISIBLE" "$IDLE" "$PEAK" <<'PY'
import sys
n = int(sys.argv[1]); start, accepted, completed, visible = map(float, sys.argv[2:6]); idle, peak = int(sys.argv[6]), int(sys.argv[7])
print(f"{n:<9} {accepted - start:10.2f} {completed - start:12.2f} {visible - start:12.2f} {n / (visible - start):12.0f} {idle / 1024:12.1f} {peak / 1024:12.1f}")
PY
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=""
    rm -rf "$FILE" "$WORK/media"
done
