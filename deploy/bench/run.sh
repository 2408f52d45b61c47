#!/usr/bin/env bash
# Benchmark harness: the API against raw Postgres and the peer, same machine,
# same run.
#   POST /campaigns (seed body)      vs  pgbench one-row INSERT per transaction
#   POST /campaigns/{id}/analytics   vs  the same pgbench INSERT
#   GET  /campaigns/{id}             vs  pgbench primary-key SELECT
#   both POST and GET                vs  the peer, cqrs-es + postgres-es doing the
#                                        same job as a library call (PEER_SCRIPT,
#                                        default ../shared/peers/run.sh beside this
#                                        checkout; skipped when it is not there)
# All at the same concurrency (default 32). Prints one JSON line per run and
# the ratios. Machines are shared and noisy: compare ratios, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONCURRENCY=${CONCURRENCY:-32}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
DB=mk_bench_$$
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# SKIP_BUILD=1 measures the binaries already in $CARGO_TARGET_DIR/release.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p marketing -p bench >/dev/null
BIN=$CARGO_TARGET_DIR/release
export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=warn
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT

"$BIN/marketing" migrate >/dev/null 2>&1
KEY=$("$BIN/marketing" api-key create --project bench 2>/dev/null | tail -1)
# Rate limits off: one key measures the server's capacity, not a client's limit.
RATE_LIMIT_PER_SECOND=0 "$BIN/marketing" serve 2>"$CACHE_DIR/bench-serve.log" &
SERVER=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

# Raw Postgres baselines in the same database.
psql -d "$DB" -q <<'SQL'
CREATE TABLE bench_rows (id bigserial PRIMARY KEY, body jsonb NOT NULL);
INSERT INTO bench_rows (body) SELECT jsonb_build_object('name', 'row ' || g) FROM generate_series(1, 1000) g;
SQL
WORK=$(mktemp -d)
echo "INSERT INTO bench_rows (body) VALUES ('{\"name\": \"bench\", \"type\": \"sales\"}');" >"$WORK/insert.sql"
printf '\\set id random(1, 1000)\nSELECT body FROM bench_rows WHERE id = :id;\n' >"$WORK/select.sql"
pg_tps() {
    pgbench -n -c "$CONCURRENCY" -j 2 -T "$SECONDS_PER_RUN" -f "$1" "$DB" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

PG_INSERT=$(pg_tps "$WORK/insert.sql")
API_CREATE=$("$BIN/marketing-bench" --url "http://127.0.0.1:$PORT" --key "$KEY" --scenario create \
    --body-file deploy/bench/seed-campaign.json --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN")
API_TRACK=$("$BIN/marketing-bench" --url "http://127.0.0.1:$PORT" --key "$KEY" --scenario track \
    --preload 100 --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN")
PG_SELECT=$(pg_tps "$WORK/select.sql")
API_GET=$("$BIN/marketing-bench" --url "http://127.0.0.1:$PORT" --key "$KEY" --scenario get \
    --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN")

# The peer, on a database of its own, after our server is idle.
PEER_SCRIPT=${PEER_SCRIPT:-../shared/peers/run.sh}
PEER_OUT=
if [ -x "$PEER_SCRIPT" ]; then
    psql -d postgres -qc "CREATE DATABASE ${DB}_peer"
    PEER_OUT=$(CONNS="$CONCURRENCY" SECS="$SECONDS_PER_RUN" "$PEER_SCRIPT" \
        "postgres://$PGUSER@$PGHOST:5432/${DB}_peer" 2>/dev/null || true)
    psql -d postgres -qc "DROP DATABASE IF EXISTS ${DB}_peer WITH (FORCE)"
else
    echo "peer: $PEER_SCRIPT not found; skipped" >&2
fi

echo "pgbench insert tps: $PG_INSERT"
echo "api create: $API_CREATE"
echo "api track: $API_TRACK"
echo "pgbench pk-select tps: $PG_SELECT"
echo "api get: $API_GET"
[ -n "$PEER_OUT" ] && echo "$PEER_OUT"
python3 - "$PG_INSERT" "$API_CREATE" "$PG_SELECT" "$API_GET" "$API_TRACK" "$PEER_OUT" <<'PY'
import json, re, sys
pg_insert, create, pg_select, get, track = (float(sys.argv[1]), json.loads(sys.argv[2]),
    float(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5]))
peer = {kind: float(rate) for kind, rate in re.findall(r"(create|view load): ([0-9.]+)/s", sys.argv[6])}
def line(what, run, base, base_name, peer_rate):
    text = (f"{what}: {run['rps']:.0f} req/s = {run['rps'] / base:.2f} x {base_name} ({base:.0f} tps)")
    if peer_rate:
        text += f" = {run['rps'] / peer_rate:.2f} x peer ({peer_rate:.0f}/s)"
    print(text + f"; p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, errors {run['errors']}")
line("POST /campaigns", create, pg_insert, "pgbench insert", peer.get("create"))
line("POST /campaigns/id/analytics", track, pg_insert, "pgbench insert", None)
line("GET /campaigns/id", get, pg_select, "pgbench pk select", peer.get("view load"))
PY
