#!/usr/bin/env bash
# Benchmark harness: the API against raw Postgres, same machine, same run.
#   POST /campaigns          vs  pgbench one-row INSERT per transaction
#   GET  /campaigns/{id}     vs  pgbench primary-key SELECT
# Both at the same concurrency (default 32). Prints one JSON line per run and
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

cargo build --release --locked -p marketing -p bench >/dev/null
BIN=$CARGO_TARGET_DIR/release
export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB LISTEN_ADDR=127.0.0.1:$PORT RUST_LOG=warn
cleanup() {
    [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT

"$BIN/marketing" migrate >/dev/null 2>&1
KEY=$("$BIN/marketing" api-key create --project bench 2>/dev/null | tail -1)
"$BIN/marketing" serve 2>"$CACHE_DIR/bench-serve.log" &
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
    --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN")
PG_SELECT=$(pg_tps "$WORK/select.sql")
API_GET=$("$BIN/marketing-bench" --url "http://127.0.0.1:$PORT" --key "$KEY" --scenario get \
    --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN")

echo "pgbench insert tps: $PG_INSERT"
echo "api create: $API_CREATE"
echo "pgbench pk-select tps: $PG_SELECT"
echo "api get: $API_GET"
python3 - "$PG_INSERT" "$API_CREATE" "$PG_SELECT" "$API_GET" <<'PY'
import json, sys
pg_insert, create, pg_select, get = float(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
print(f"POST /campaigns: {create['rps']:.0f} req/s = {create['rps'] / pg_insert:.2f} x pgbench insert ({pg_insert:.0f} tps); p50 {create['p50_ms']:.1f} ms, p99 {create['p99_ms']:.1f} ms, errors {create['errors']}")
print(f"GET /campaigns/id: {get['rps']:.0f} req/s = {get['rps'] / pg_select:.2f} x pgbench pk select ({pg_select:.0f} tps); p50 {get['p50_ms']:.1f} ms, p99 {get['p99_ms']:.1f} ms, errors {get['errors']}")
PY
