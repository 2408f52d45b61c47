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
. deploy/bench/lib.sh
bench_build

printf '%-9s %12s %12s %14s %10s %12s %7s %12s %12s %s\n' rows "import_s" "visible_s" "rows_per_s" "copy_s" "copy_rows/s" "ratio" "rss_idle_MiB" "peak_MiB" "load1(start/end)"
for N in $SIZES; do
    FILE=$WORK/leads-$N.csv
    python3 deploy/bench/gen_leads.py "$N" >"$FILE"
    bench_db "mk_bench_leads_$$_$N"
    bench_serve bench-leads-serve.log
    CAMPAIGN=$(bench_campaign Bench)
    IDLE=$(kib "$SERVER" VmRSS)
    LOAD=$(load1)

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
    LOAD="$LOAD/$(load1)"
    COUNT=$(psql -d "$DB" -Atc "SELECT count(*) FROM leads WHERE campaign_id = '$CAMPAIGN'")
    python3 - "$WORK/report.json" "$N" "$COUNT" <<'PY'
import json, sys
report, n, count = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert report["imported"] == n and report["failed"] == 0 and report["duplicates"] == 0, report
assert count == n, f"read model has {count} of {n} leads"
PY

    COPY_S=$(bench_copy "copy_leads (name text, email text, phone text, source text, status text, notes text, tier text, referral_code text)" "$FILE")
    python3 - "$N" "$START" "$IMPORTED" "$VISIBLE" "$COPY_S" "$IDLE" "$PEAK" "$LOAD" <<'PY'
import sys
n = int(sys.argv[1]); start, imported, visible, copy_s = map(float, sys.argv[2:6]); idle, peak = int(sys.argv[6]), int(sys.argv[7])
rate, copy_rate = n / (visible - start), n / copy_s
print(f"{n:<9} {imported - start:12.2f} {visible - start:12.2f} {rate:14.0f} {copy_s:10.2f} {copy_rate:12.0f} {rate / copy_rate:7.3f} {idle / 1024:12.1f} {peak / 1024:12.1f} {sys.argv[8]}")
PY
    bench_stop
    bench_drop
    rm -f "$FILE"
done
