#!/usr/bin/env bash
# CPU time per request: a measure that does not depend on how busy the shared
# machine is (throughput does). Starts `marketing serve` on a fresh database,
# then for each scenario reads the CPU time (utime + stime, /proc/<pid>/stat)
# of the server, of the Postgres backends connected to this database and of
# the bench client before and after it, and divides by the requests answered.
# pgbench's one-row INSERT and primary-key SELECT are measured the same way
# (its backends and its client), as the raw-Postgres reference.
#   SKIP_BUILD=1 CARGO_TARGET_DIR=... SECONDS_PER_RUN=10 deploy/bench/cpu.sh
# (and the settings of deploy/bench/lib.sh: PROFILE, SKIP_BUILD, MARKETING_BIN)
# What it leaves out: Postgres' shared background processes (WAL writer,
# checkpointer), which every database on the machine shares, and the kernel's
# loopback work charged to no process.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONCURRENCY=${CONCURRENCY:-32}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SCENARIOS=${SCENARIOS:-"create track get"}
. deploy/bench/lib.sh
bench_build bench
LOAD_GENERATOR=$(dirname "$BIN")/marketing-bench
bench_db "mk_cpu_$$"
bench_serve "cpu-serve-$$.log"
psql -d "$DB" -q <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, body jsonb NOT NULL);
INSERT INTO bench_rows (body) SELECT jsonb_build_object('name', 'row ' || g) FROM generate_series(1, 1000) g;
SQL
echo "INSERT INTO bench_rows (body) VALUES ('{\"name\": \"bench\", \"type\": \"sales\"}');" >"$WORK/insert.sql"
printf '\\set id random(1, 1000)\nSELECT body FROM bench_rows WHERE id = :id;\n' >"$WORK/select.sql"

TICK=$(getconf CLK_TCK)
# The client's user and system seconds, from bash's `time`.
TIMEFORMAT='%U %S'
# CPU seconds of the given pids, summed (a pid gone meanwhile counts 0).
cpu_of() {
    local total=0 pid fields
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
# The backends serving this database (their title names it).
backends() {
    local postmaster pid
    postmaster=$(pgrep -o -x postgres)
    for pid in $(pgrep -P "$postmaster"); do
        { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q " $DB " && echo "$pid"
    done
}
# The server's read-after-write wait so far: "seconds writes".
waited() {
    curl -fs --max-time 10 "$BASE/metrics" | awk '
        /^marketing_read_after_write_wait_seconds_sum/ { s = $2 }
        /^marketing_read_after_write_wait_seconds_count/ { c = $2 }
        END { printf "%s %s\n", s + 0, c + 0 }'
}
# Every 0.2 s until killed, "pid ticks" of each backend of this database: a
# backend that exits (pgbench's, at the end of its run) keeps its last sample.
sample_backends() {
    while :; do
        for pid in $(backends); do echo "$pid $(cpu_of "$pid")"; done
        sleep 0.2
    done
}
# The ticks the backends used between two samples files (the first taken
# before the run: a backend absent from it started at 0).
backend_ticks() {
    awk 'NR == FNR { start[$1] = $2; next } { last[$1] = $2 }
         END { for (p in last) t += last[p] - start[p]; print t + 0 }' "$1" "$2"
}
# Runs "$@" (a client whose stdout is its result) and prints one JSON line:
# the result's requests and the CPU microseconds per request of the server,
# the database's backends and the client.
measure() {
    local name=$1 count_from=$2; shift 2
    local pg0 srv0 pg1 srv1 out requests client_ticks wait0 wait1
    wait0=$(waited); srv0=$(cpu_of "$SERVER")
    for pid in $(backends); do echo "$pid $(cpu_of "$pid")"; done >"$WORK/start"
    sample_backends >"$WORK/samples" &
    local sampler=$!
    { time "$@" >"$WORK/out" 2>/dev/null; } 2>"$WORK/time"
    srv1=$(cpu_of "$SERVER"); wait1=$(waited)
    sleep 0.3
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    out=$(cat "$WORK/out")
    pg0=0; pg1=$(backend_ticks "$WORK/start" "$WORK/samples")
    requests=$(python3 -c "import json,re,sys; o=sys.argv[1]; print(json.loads(o)['requests'] if sys.argv[2]=='json' else int(float(re.search(r'number of transactions actually processed: (\d+)', o).group(1))))" "$out" "$count_from")
    client_ticks=$(tail -1 "$WORK/time")
    python3 - "$name" "$requests" "$((srv1 - srv0))" "$((pg1 - pg0))" "$client_ticks" "$TICK" "$out" "$wait0 $wait1" <<'PY'
import json, re, sys
name, requests, srv, pg, client, tick, out, waits = sys.argv[1:]
s0, c0, s1, c1 = map(float, waits.split())
requests, tick = int(requests), int(tick)
user, system = map(float, client.split())
us = lambda ticks: round(ticks / tick * 1e6 / requests, 1)
rate = re.search(r"tps = ([0-9.]+)", out)
rate = float(rate.group(1)) if rate else json.loads(out)["rps"]
latency = {} if rate and out.lstrip()[:1] != "{" else json.loads(out)
print(json.dumps({"run": name, "requests": requests, "per_second": round(rate),
    "server_us": us(int(srv)), "postgres_us": us(int(pg)),
    "client_us": round((user + system) * 1e6 / requests, 1),
    # The mean read-after-write wait of the writes in this run.
    "wait_ms": round((s1 - s0) / (c1 - c0) * 1e3, 2) if c1 > c0 else None,
    "p50_ms": latency.get("p50_ms"), "p99_ms": latency.get("p99_ms"), "errors": latency.get("errors"),
    "loadavg": open("/proc/loadavg").read().split()[0]}))
PY
}
pgbench_run() {
    pgbench -n -c "$CONCURRENCY" -j 2 -T "$SECONDS_PER_RUN" -f "$1" "$DB" 2>/dev/null
}
api_run() {
    "$LOAD_GENERATOR" --url "$BASE" --key "$KEY" --concurrency "$CONCURRENCY" \
        --seconds "$SECONDS_PER_RUN" "$@"
}
# Warms the server's statement caches. The 100 campaigns `track` and `get`
# create first fall inside their windows (1-2% of their CPU).
"$LOAD_GENERATOR" --url "$BASE" --key "$KEY" --scenario create \
    --concurrency 4 --seconds 1 >/dev/null
measure "pgbench insert" text pgbench_run "$WORK/insert.sql"
for scenario in $SCENARIOS; do
    case $scenario in
    create) measure "POST /campaigns" json api_run --scenario create --body-file deploy/bench/seed-campaign.json ;;
    track) measure "POST .../analytics" json api_run --scenario track --preload 100 ;;
    get) measure "GET /campaigns/{id}" json api_run --scenario get --preload 100 ;;
    esac
done
measure "pgbench select" text pgbench_run "$WORK/select.sql"
