#!/usr/bin/env bash
# Analytics CSV import benchmark: rows/s until every row is in the summary,
# next to `psql \copy` of the same file into a plain table, and the server's
# peak memory per run (VmHWM), and the CPU time per row of the server and of
# the database's backends serving it (/proc/PID/stat: independent of what
# else runs on the machine), for each size in SIZES ("DAYSxSOURCES").
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
. deploy/bench/lib.sh
bench_build

printf '%-9s %-7s %10s %10s %12s %9s %12s %7s %10s %10s %10s %10s %s\n' rows mode "import_s" "visible_s" "rows_per_s" "copy_s" "copy_rows/s" "ratio" "idle_MiB" "peak_MiB" "server_us" "pg_us" "load1(start/end)"
for SIZE in $SIZES; do
    DAYS=${SIZE%x*}; SOURCES=${SIZE#*x}; N=$((DAYS * SOURCES))
    FILE=$WORK/analytics-$N.csv
    python3 deploy/bench/gen_analytics.py "$DAYS" "$SOURCES" >"$FILE"
    bench_db "mk_bench_analytics_$$_$N"
    bench_serve bench-analytics-serve.log
    CAMPAIGN=$(bench_campaign Bench)
    IDLE=$(kib "$SERVER" VmRSS)
    LOAD=$(load1)

    cpu_ticks "$SERVER" >"$WORK/server.before"
    cpu_ticks $(db_backends) >"$WORK/pg.before"
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
    cpu_ticks "$SERVER" >"$WORK/server.after"
    cpu_ticks $(db_backends) >"$WORK/pg.after"
    SERVER_CPU=$(cpu_seconds "$WORK/server.before" "$WORK/server.after")
    PG_CPU=$(cpu_seconds "$WORK/pg.before" "$WORK/pg.after")
    PEAK=$(kib "$SERVER" VmHWM)
    LOAD="$LOAD/$(load1)"
    python3 - "$WORK/report.json" "$N" "$RECORDS" <<'PY'
import json, sys
report, n, records = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
assert report["imported"] == n and report["failed"] == 0, report
assert records == n, f"the summary counts {records} of {n} rows"
PY

    COPY_S=$(bench_copy "copy_analytics (date date, source text, impressions bigint, clicks bigint, conversions bigint, cost numeric, revenue numeric, engagement_rate numeric)" "$FILE")
    python3 - "$N" "$MODE" "$START" "$IMPORTED" "$VISIBLE" "$COPY_S" "$IDLE" "$PEAK" "$LOAD" "$SERVER_CPU" "$PG_CPU" <<'PY'
import sys
n, mode = int(sys.argv[1]), sys.argv[2]
start, imported, visible, copy_s = map(float, sys.argv[3:7])
idle, peak, load = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
server_us, pg_us = (float(s) * 1e6 / n for s in sys.argv[10:12])
rate, copy_rate = n / (visible - start), n / copy_s
print(f"{n:<9} {mode:<7} {imported - start:10.2f} {visible - start:10.2f} {rate:12.0f} {copy_s:9.2f} {copy_rate:12.0f} {rate / copy_rate:7.3f} {idle / 1024:10.1f} {peak / 1024:10.1f} {server_us:10.1f} {pg_us:10.1f} {load}")
PY
    bench_stop
    bench_drop
    rm -f "$FILE"
done
