#!/usr/bin/env bash
# Asynchronous lead import benchmark (`Prefer: respond-async`), with the
# server killed mid-way: for each size in SIZES,
#   1. posts a file with a known number of invalid and duplicate rows and
#      times the 202 (the upload spooled);
#   2. polls the job and prints its progress;
#   3. SIGKILLs the server once the job itself reports KILL_AT of the rows
#      (by its count, not by time), and starts a new one on the same database
#      and media directory;
#   4. waits for the end state and until every imported lead is in the read
#      model;
#   5. checks, by SQL and HTTP: the job `completed` with the file's exact
#      counts, taken over once; as many leads in the read model, distinct by
#      email, as `LeadCreated` events (distinct streams) and email claims in
#      the log as the job imported; an error row per bad row, and the errors
#      CSV download with exactly those rows;
#   6. loads the same file with `psql \copy` into a plain table (same run).
# Prints rows/s before the kill and after the takeover, the time the dead
# server's lease held the job, each server's peak memory (VmHWM) and the load.
#
#   deploy/bench/leads_async.sh                        # SIZES=1000000
#   SIZES=20000 deploy/bench/leads_async.sh            # a quick run
#   KILL_AT=0 deploy/bench/leads_async.sh              # no kill
#   LEAD_IMPORT_LEASE_MS=5000 deploy/bench/leads_async.sh   # a shorter takeover
#   SKIP_BUILD=1 MARKETING_BIN=path/to/marketing deploy/bench/leads_async.sh
#
# A fresh database, media directory and server per size. Bounded: every HTTP
# call has a time limit, every wait gives up after 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-1000000}
# 1 row in 1,000 invalid, 1 in 997 a duplicate: 1,000 and 1,002 of a million.
INVALID_EVERY=${INVALID_EVERY:-1000}
DUPLICATE_EVERY=${DUPLICATE_EVERY:-997}
KILL_AT=${KILL_AT:-0.5}
DEADLINE_S=1800
. deploy/bench/lib.sh
bench_build

# The job as "state rows imported duplicates failed" (one GET).
job_counts() {
    curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" "$BASE$LOCATION" |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j["rows"], j["imported"], j["duplicates"], j["failed"])'
}
# Seconds since $1, two decimals; `gt A B`: whether A > B (awk, not python:
# this runs on every poll of a loaded machine).
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
sql() { psql -d "$DB" -Atc "$1"; }

for N in $SIZES; do
    FILE=$WORK/leads-$N.csv
    python3 deploy/bench/gen_leads.py "$N" --invalid-every "$INVALID_EVERY" \
        --duplicate-every "$DUPLICATE_EVERY" --counts "$WORK/counts" >"$FILE"
    read -r INVALID DUPLICATES <"$WORK/counts"
    VALID=$((N - INVALID - DUPLICATES))
    KILL_ROWS=$(python3 -c "print(int($N * $KILL_AT))")
    echo "# $N rows ($(du -h "$FILE" | cut -f1)): $VALID valid, $INVALID invalid, $DUPLICATES duplicates; kill at ${KILL_ROWS} rows"
    bench_db "mk_bench_async_$$_$N"
    export MEDIA_DIR=$WORK/media
    bench_serve bench-leads-async-serve.log
    CAMPAIGN=$(bench_campaign Bench)
    IDLE=$(kib "$SERVER" VmRSS)
    LOAD_START=$(load1)

    START=$(now)
    STATUS=$(curl -sS --max-time 600 -D "$WORK/headers" -o "$WORK/accepted.json" -w '%{http_code}' \
        -H "Authorization: Bearer $KEY" -H 'Prefer: respond-async' -F "file=@$FILE" \
        "$API/campaigns/$CAMPAIGN/leads/import")
    ACCEPTED=$(now)
    [ "$STATUS" = 202 ] || { echo "expected 202, got $STATUS: $(cat "$WORK/accepted.json")" >&2; exit 1; }
    LOCATION=$(awk 'tolower($1) == "location:" { print $2 }' "$WORK/headers" | tr -d '\r')
    echo "# 202 after $(awk -v a="$ACCEPTED" -v b="$START" 'BEGIN { printf "%.2f", a - b }') s, Location: $LOCATION"

    KILLED="" KILL_T="" PEAK_KILLED=0 RESTARTED="" AT_RESTART="" RESUMED="" LAST_PRINT=0
    while :; do
        read -r STATE ROWS IMPORTED DUPS FAILED < <(job_counts)
        T=$(since "$START")
        if gt "$T" "$(awk -v l="$LAST_PRINT" 'BEGIN { print l + 5 }')"; then
            echo "  t=${T}s state=$STATE rows=$ROWS imported=$IMPORTED duplicates=$DUPS failed=$FAILED"
            LAST_PRINT=$T
        fi
        [ "$STATE" = completed ] || [ "$STATE" = failed ] && break
        if [ -z "$KILLED" ] && [ "$KILL_ROWS" -gt 0 ] && [ "$ROWS" -ge "$KILL_ROWS" ]; then
            PEAK_KILLED=$(kib "$SERVER" VmHWM)
            bench_stop KILL
            KILL_T=$(now)
            KILLED=$ROWS
            echo "  t=${T}s SIGKILL at rows=$ROWS (the job's own count); restarting"
            bench_serve bench-leads-async-serve.log
            RESTARTED=$(now)
            # What the dead server had committed: at least what was seen.
            read -r _ AT_RESTART _ _ _ < <(job_counts)
            echo "  t=$(since "$START")s new server up; the job shows rows=$AT_RESTART (committed before the kill)"
            continue
        fi
        if [ -n "$KILLED" ] && [ -z "$RESUMED" ] && [ "$ROWS" -gt "$AT_RESTART" ]; then
            RESUMED=$(now)
            echo "  t=${T}s taken over: rows=$ROWS"
        fi
        if gt "$T" "$DEADLINE_S"; then
            echo "the job did not end within $DEADLINE_S s" >&2
            exit 1
        fi
        sleep 0.5
    done
    COMPLETED=$(now)
    curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" "$BASE$LOCATION" >"$WORK/job.json"
    echo "  t=$(since "$START")s $(cat "$WORK/job.json")"
    # Visible: every imported lead in the read model (no read-after-write wait
    # on a job: the projector catches up on its own).
    for _ in $(seq 1 $((DEADLINE_S * 10))); do
        [ "$(sql "SELECT count(*) FROM leads WHERE campaign_id = '$CAMPAIGN'")" -ge "$VALID" ] && break
        sleep 0.1
    done
    VISIBLE=$(now)
    PEAK=$(kib "$SERVER" VmHWM)
    LOAD_END=$(load1)

    # The checks: the job's counts, the read model, the log, the error rows.
    LEADS=$(sql "SELECT count(*) || ' ' || count(DISTINCT body->>'email') FROM leads WHERE campaign_id = '$CAMPAIGN'")
    LOGGED=$(sql "SELECT count(*) || ' ' || count(DISTINCT stream_id) FROM events WHERE event_type = 'LeadCreated' AND metadata->>'campaign_id' = '$CAMPAIGN'")
    CLAIMS=$(sql "SELECT count(*) FROM lead_email_claims WHERE campaign_id = '$CAMPAIGN'")
    ATTEMPTS=$(sql "SELECT attempts FROM lead_imports WHERE campaign_id = '$CAMPAIGN'")
    ERROR_ROWS=$(sql "SELECT count(*) || ' ' || count(DISTINCT line) FROM lead_import_errors e JOIN lead_imports i ON i.id = e.import_id WHERE i.campaign_id = '$CAMPAIGN'")
    curl -fsS --max-time 120 -H "Authorization: Bearer $KEY" "$BASE$LOCATION/errors?format=csv" >"$WORK/errors.csv"
    curl -fsS --max-time 120 -H "Authorization: Bearer $KEY" "$BASE$LOCATION/errors?format=csv&kind=invalid" >"$WORK/invalid.csv"
    python3 - "$WORK/job.json" "$N" "$VALID" "$INVALID" "$DUPLICATES" "$LEADS" "$LOGGED" "$CLAIMS" \
        "$ATTEMPTS" "$ERROR_ROWS" "$WORK/errors.csv" "$WORK/invalid.csv" "${KILLED:-0}" <<'PY'
import csv, json, sys
job = json.load(open(sys.argv[1]))
n, valid, invalid, duplicates = map(int, sys.argv[2:6])
leads, distinct_emails = map(int, sys.argv[6].split())
logged, logged_streams = map(int, sys.argv[7].split())
claims, attempts = int(sys.argv[8]), int(sys.argv[9])
error_rows, error_lines = map(int, sys.argv[10].split())
def data_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1
csv_rows, csv_invalid = data_rows(sys.argv[11]), data_rows(sys.argv[12])
killed = int(sys.argv[13]) > 0
checks = [
    ("job completed", job["state"] == "completed", job["state"]),
    ("job rows = file rows", job["rows"] == n, f'{job["rows"]} / {n}'),
    ("job imported = valid rows", job["imported"] == valid, f'{job["imported"]} / {valid}'),
    ("job failed = invalid rows", job["failed"] == invalid, f'{job["failed"]} / {invalid}'),
    ("job duplicates = duplicate rows", job["duplicates"] == duplicates, f'{job["duplicates"]} / {duplicates}'),
    ("read model leads = imported, distinct emails", leads == distinct_emails == job["imported"], f"{leads} leads, {distinct_emails} distinct emails"),
    ("log LeadCreated = imported, distinct streams", logged == logged_streams == job["imported"], f"{logged} events, {logged_streams} streams"),
    ("email claims = imported", claims == job["imported"], f"{claims}"),
    ("taken over once" if killed else "one attempt", attempts == (2 if killed else 1), f"attempts={attempts}"),
    ("error rows = bad rows, one per line", error_rows == error_lines == invalid + duplicates, f"{error_rows} rows, {error_lines} lines"),
    ("errors CSV rows = bad rows", csv_rows == invalid + duplicates, f"{csv_rows}"),
    ("errors CSV kind=invalid rows = invalid rows", csv_invalid == invalid, f"{csv_invalid}"),
]
for name, ok, detail in checks:
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY

    COPY_S=$(bench_copy "copy_leads (name text, email text, phone text, source text, status text, notes text, tier text, referral_code text)" "$FILE")
    python3 - "$N" "$START" "$ACCEPTED" "${KILL_T:-0}" "${KILLED:-0}" "${AT_RESTART:-0}" "${RESTARTED:-0}" \
        "${RESUMED:-0}" "$COMPLETED" "$VISIBLE" "$COPY_S" "$IDLE" "$PEAK_KILLED" "$PEAK" "$LOAD_START/$LOAD_END" <<'PY'
import sys
n = int(sys.argv[1])
start, accepted, kill_t = map(float, sys.argv[2:5])
killed_rows, at_restart = int(sys.argv[5]), int(sys.argv[6])
restarted, resumed, completed, visible, copy_s = map(float, sys.argv[7:12])
idle, peak_killed, peak = (int(v) / 1024 for v in sys.argv[12:15])
load = sys.argv[15]
copy_rate = n / copy_s
print(f"rows={n} 202_s={accepted - start:.2f} completed_s={completed - start:.2f} visible_s={visible - start:.2f} "
      f"overall_rows/s={n / (visible - start):.0f}")
if kill_t:
    before = at_restart / (kill_t - accepted)
    after = (n - at_restart) / (completed - resumed) if resumed else float("nan")
    print(f"  before the kill: {at_restart} rows committed in {kill_t - accepted:.2f} s = {before:.0f} rows/s "
          f"(killed when the job showed {killed_rows})")
    print(f"  lease held by the dead server: {resumed - restarted:.2f} s after the restart"
          if resumed else "  the job ended before its count moved again")
    if resumed:
        print(f"  after the takeover: {n - at_restart} rows in {completed - resumed:.2f} s = {after:.0f} rows/s")
else:
    print(f"  job: {n / (completed - accepted):.0f} rows/s from the 202 to completed")
print(f"  \\copy of the same file: {copy_s:.2f} s = {copy_rate:.0f} rows/s; ratio {n / (visible - start) / copy_rate:.4f}")
print(f"  server RSS idle {idle:.1f} MiB; peak {peak_killed:.1f} MiB (killed server), {peak:.1f} MiB (the one that finished); load1 {load}")
PY
    bench_stop
    bench_drop
    rm -rf "$FILE" "$WORK/media"
done
