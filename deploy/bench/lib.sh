# What the server benchmarks (leads.sh, leads_async.sh, analytics_import.sh,
# isolation.sh) share, sourced by each after `set -euo pipefail` and `cd` to the checkout:
# the cache and target directories, the build (or SKIP_BUILD), a fresh
# database with a key, a server on a free port, cleanup on any exit, and the
# clock, memory and load helpers.
#
# Settings every script takes:
#   PROFILE=release|debug   which build to measure (default release)
#   SKIP_BUILD=1            measure the binary already built
#   MARKETING_BIN=path      measure another binary (implies nothing is built)
#   CARGO_TARGET_DIR        where the build goes (default $MARKETING_CACHE_DIR/target)
#
# Bounded: every helper that waits gives up after a deadline.

CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
PROFILE=${PROFILE:-release}
BIN=${MARKETING_BIN:-$CARGO_TARGET_DIR/$PROFILE/marketing}

# bench_build [PACKAGE...]: builds `marketing`, and the other packages named
# (isolation.sh also needs `bench` for its load generator).
bench_build() {
    [ -z "${SKIP_BUILD:-}" ] && [ -z "${MARKETING_BIN:-}" ] || return 0
    local packages=(-p marketing)
    for package in "$@"; do packages+=(-p "$package"); done
    if [ "$PROFILE" = release ]; then
        cargo build --release --locked "${packages[@]}" >/dev/null
    else
        cargo build --locked "${packages[@]}" >/dev/null
    fi
}

WORK=$(mktemp -d)
DB=""
SERVER=""
bench_cleanup() {
    bench_stop
    bench_drop
    rm -rf "$WORK"
    echo "# $(basename "$0") end: $(uptime)"
}
trap bench_cleanup EXIT
# The machine is shared: its load is part of every figure.
echo "# $(basename "$0") start: $(uptime)"

now() { date +%s.%N; }
# A field of /proc/PID/status in KiB (VmRSS, VmHWM).
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# A JSON value from stdin: `field '["id"]'`.
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# CPU ticks (user + system, 1/CLK_TCK s) of each PID given, as "PID TICKS"
# lines; a PID that is gone is left out.
cpu_ticks() {
    local p
    for p in "$@"; do
        awk -v p="$p" '{ print p, $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true
    done
}
# The Postgres backends of $DB's clients (the server's pool): their CPU is
# the database's share of a request, whatever else runs on the machine.
db_backends() {
    psql -d postgres -Atc "SELECT pid FROM pg_stat_activity
        WHERE datname = '$DB' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
}
# cpu_seconds BEFORE AFTER: CPU seconds spent between two cpu_ticks outputs
# (a PID absent from BEFORE started after it: all its ticks count).
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { before[$1] = $2; next }
        { total += $2 - before[$1] } END { printf "%.2f\n", total / hz }' "$1" "$2"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# bench_db NAME: a fresh, migrated database $DB (exported as DATABASE_URL)
# and an API key $KEY of project `bench`.
bench_db() {
    DB=$1
    export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB
    "$BIN" migrate >/dev/null
    KEY=$("$BIN" api-key create --project bench 2>/dev/null | tail -1)
}

# bench_serve LOG: `marketing serve` on a free port of 127.0.0.1, stderr
# appended to $CACHE_DIR/LOG, rate limits off (one key measures the server's
# capacity, not a client's limit); sets $SERVER (its pid), $PORT, $BASE and
# $API, and returns once /healthz answers.
bench_serve() {
    PORT=$(free_port)
    LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=${RUST_LOG:-warn,command_api=info} RATE_LIMIT_PER_SECOND=0 \
        "$BIN" serve 2>>"$CACHE_DIR/$1" &
    SERVER=$!
    BASE=http://127.0.0.1:$PORT
    API=$BASE/v1/dev/marketing
    for _ in $(seq 1 600); do
        curl -fs --max-time 2 "$BASE/healthz" >/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || { echo "marketing serve exited; see $CACHE_DIR/$1" >&2; return 1; }
        sleep 0.1
    done
    echo "marketing serve did not become healthy in 60 s" >&2
    return 1
}

# bench_stop [SIGNAL]: stops the server (SIGTERM unless told) and reaps it.
bench_stop() {
    if [ -n "$SERVER" ]; then
        kill "-${1:-TERM}" "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=""
    fi
}

bench_drop() {
    if [ -n "$DB" ]; then
        psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
        DB=""
    fi
}

# bench_campaign NAME: creates a campaign, prints its id.
bench_campaign() {
    curl -fsS --max-time 10 -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
        -d "{\"name\": \"$1\"}" "$API/campaigns" | field '["id"]'
}

# bench_copy TABLE_DDL FILE: seconds `psql \copy` takes to load FILE (CSV
# with a header) into a fresh plain table in $DB, the raw-Postgres baseline
# measured in the same run.
bench_copy() {
    local table=${1%% *} start end
    psql -d "$DB" -qc "CREATE TABLE $1"
    start=$(now)
    psql -d "$DB" -qc "\\copy $table FROM '$2' WITH (FORMAT csv, HEADER)"
    end=$(now)
    python3 -c "print(f'{$end - $start:.3f}')"
}
