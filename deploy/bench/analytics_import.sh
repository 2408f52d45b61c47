#!/usr/bin/env bash
# Analytics CSV import benchmark: rows/s until every row is in the summary,
# next to `psql \copy` of the same file into a plain table, and the server's
# peak memory per run (VmHWM), for each size in SIZES ("DAYSxSOURCES").
#
#   deploy/bench/analytics_import.sh              # SIZES="730x10 10000x100" (7,300 and 1,000,000 rows)
#   SIZES=730x10 deploy/bench/analytics_import.sh # a quick run
#   MODE=add deploy/bench/analytics_import.sh     # mode=add instead of the default replace
#
# A fresh database and a fresh server per size, so each peak is that import's.
# Bounded: every HTTP call has a time limit, polling gives up after 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-"730x10 10000x100"}
MODE=${MODE:-replace}
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
# PROFILE=debug measures a debug build (what a developer has at hand; slower).
PROFILE=${PROFILE:-release}
BIN=$CARGO_TARGET_DIR/$PROFILE/marketing
# SKIP_BUILD=1 measures the binary already built.
if [ -z "${SKIP_BUILD:-}" ]; then
    if [ "$PROFILE" = release ]; then cargo build --release --locked -p marketing >/dev/null; else cargo build --locked -p marketing >/dev/null; fi
fi
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

printf '%-9s %-7s %10s %10s %12s %9s %12s %7s %10s %10s %6s\n' rows mode "import_s" "visible_s" "rows_per_s" "copy_s" "copy_rows/s" "ratio" "idle_MiB" "peak_MiB" "load1"
for SIZE in $SIZES; do
    DAYS=${SIZE%x*}; SOURCES=${SIZE#*x}; N=$((DAYS * SOURCES))
    FILE=$WORK/analytics-$N.csv
    python3 deploy/bench/gen_analytics.py "$DAYS" "$SOURCES" >"$FILE"
    DB=mk_bench_analytics_$$_$N
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=warn,command_api=info
    "$BIN" migrate >/dev/null
    KEY=$("$BIN" api-key create --project bench 2>/dev/null | tail -1)
    RATE_LIMIT_PER_SECOND=0 "$BIN" serve 2>>"$CACHE_DIR/bench-analytics-serve.log" &
    SERVER=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    API=http://127.0.0.1:$PORT/v1/dev/marketing
    CAMPAIGN=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d '{"name": "Bench"}' "$API/campaigns" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    IDLE=$(kib "$SERVER" VmRSS)
    LOAD=$(cut -d' ' -f1 /proc/loadavg)

    START=$(now)
    curl -fsS --max-time 900 -H "Authorization: Bearer $KEY" -F "file=@$FILE" \
        "$API/campaigns/$CAMPAIGN/analytics/import?mode=$MODE" >"$WORK/report.json"
    IMPORTED=$(now)
    # Visible through the query API: the summary counts every row.
    for _ in $(seq 1 6000); do
        RECORDS=$(curl -fsS --max-time 30 -H "Authorization: Bearer $KEY" \
            "$API/campaigns/$CAMPAIGN/analytics/summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')
        [ "$RECORDS" = "$N" ] && break
        sleep 0.1
    done
    VISIBLE=$(now)
    PEAK=$(kib "$SERVER" VmHWM)
    python3 - "$WORK/report.json" "$N" "$RECORDS" <<'PY'
import json, sys
report, n, records = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert report["imported"] == n and report["failed"] == 0, report
assert records == n, f"the summary counts {records} of {n} rows"
PY

    psql -d "$DB" -qc "CREATE TABLE copy_analytics (date date, source text, impressions bigint, clicks bigint, conversions bigint, cost numeric, revenue numeric, engagement_rate numeric)"
    COPY_START=$(now)
    psql -d "$DB" -qc "\\copy copy_analytics FROM '$FILE' WITH (FORMAT csv, HEADER)"
    COPY_END=$(now)

    python3 - "$N" "$MODE" "$START" "$IMPORTED" "$VISIBLE" "$COPY_START" "$COPY_END" "$IDLE" "$PEAK" "$LOAD" <<'PY'
import sys
n, mode = int(sys.argv[1]), sys.argv[2]
start, imported, visible, c0, c1 = map(float, sys.argv[3:8])
idle, peak, load = int(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
rate, copy_rate = n / (visible - start), n / (c1 - c0)
print(f"{n:<9} {mode:<7} {imported - start:10.2f} {visible - start:10.2f} {rate:12.0f} {c1 - c0:9.2f} {copy_rate:12.0f} {rate / copy_rate:7.3f} {idle / 1024:10.1f} {peak / 1024:10.1f} {load:>6}")
PY
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=""
    rm -f "$FILE"
done
