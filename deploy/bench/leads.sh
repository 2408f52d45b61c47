#!/usr/bin/env bash
# Lead CSV import benchmark: rows/s until every lead is visible through the
# query API, next to `psql \copy` of the same file into a plain table, and the
# server's peak memory per run (VmHWM), for each size in SIZES.
#
#   deploy/bench/leads.sh                 # SIZES="100000 1000000"
#   SIZES=100000 deploy/bench/leads.sh    # a quick run
#
# A fresh database and a fresh server per size, so each peak is that import's.
# Bounded: every HTTP call has a time limit, polling gives up after 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-"100000 1000000"}
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
BIN=$CARGO_TARGET_DIR/release/marketing
# SKIP_BUILD=1 measures the release binary already built.
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

printf '%-9s %12s %12s %14s %10s %12s %12s %12s\n' rows "import_s" "visible_s" "rows_per_s" "copy_s" "copy_rows/s" "rss_idle_MiB" "peak_MiB"
for N in $SIZES; do
    FILE=$WORK/leads-$N.csv
    python3 deploy/bench/gen_leads.py "$N" >"$FILE"
    DB=mk_bench_leads_$$_$N
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=warn,command_api=info
    "$BIN" migrate >/dev/null
    KEY=$("$BIN" api-key create --project bench 2>/dev/null | tail -1)
    # Rate limits off: one key measures the server's capacity.
    RATE_LIMIT_PER_SECOND=0 "$BIN" serve 2>>"$CACHE_DIR/bench-leads-serve.log" &
    SERVER=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    API=http://127.0.0.1:$PORT/v1/dev/marketing
    CAMPAIGN=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d '{"name": "Bench"}' "$API/campaigns" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    IDLE=$(kib "$SERVER" VmRSS)

    START=$(now)
    curl -fsS --max-time 900 -H "Authorization: Bearer $KEY" -F "file=@$FILE" \
        "$API/campaigns/$CAMPAIGN/leads/import" >"$WORK/report.json"
    IMPORTED=$(now)
    # Visible through the query API: the last row is found by search, and the
    # campaign's read model holds every row.
    LAST=$((N - 1))
    for _ in $(seq 1 6000); do
        FOUND=$(curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" \
            "$API/campaigns/$CAMPAIGN/leads?search=lead$LAST@&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
        [ "$FOUND" = 1 ] && break
        sleep 0.1
    done
    VISIBLE=$(now)
    PEAK=$(kib "$SERVER" VmHWM)
    COUNT=$(psql -d "$DB" -Atc "SELECT count(*) FROM leads WHERE campaign_id = '$CAMPAIGN'")
    python3 - "$WORK/report.json" "$N" "$COUNT" <<'PY'
import json, sys
report, n, count = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert report["imported"] == n and report["failed"] == 0 and report["duplicates"] == 0, report
assert count == n, f"read model has {count} of {n} leads"
PY

    psql -d "$DB" -qc "CREATE TABLE copy_leads (name text, email text, phone text, source text, status text, notes text, tier text, referral_code text)"
    COPY_START=$(now)
    psql -d "$DB" -qc "\\copy copy_leads FROM '$FILE' WITH (FORMAT csv, HEADER)"
    COPY_END=$(now)

    python3 - "$N" "$START" "$IMPORTED" "$VISIBLE" "$COPY_START" "$COPY_END" "$IDLE" "$PEAK" <<'PY'
import sys
n = int(sys.argv[1]); start, imported, visible, c0, c1 = map(float, sys.argv[2:7]); idle, peak = int(sys.argv[7]), int(sys.argv[8])
print(f"{n:<9} {imported - start:12.2f} {visible - start:12.2f} {n / (visible - start):14.0f} {c1 - c0:10.2f} {n / (c1 - c0):12.0f} {idle / 1024:12.1f} {peak / 1024:12.1f}")
PY
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=""
    rm -f "$FILE"
done
