#!/usr/bin/env bash
# Replay speed on a log of EVENTS events (default 1,000,000): 70% CampaignCreated
# (one stream each) and 30% CampaignStatusChanged on those streams. Compares
# `marketing replay` with a raw Postgres pass over the same events (CREATE TABLE
# AS SELECT of every event's data) in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${EVENTS:-1000000}
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
DB=mk_bench_replay_$$
export DATABASE_URL=postgres://$PGUSER@$PGHOST:5432/$DB RUST_LOG=warn
trap 'psql -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true' EXIT
# SKIP_BUILD=1 measures the release binary already built.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p marketing >/dev/null
BIN=$CARGO_TARGET_DIR/release/marketing
"$BIN" migrate >/dev/null 2>&1

CREATES=$((EVENTS * 7 / 10))
CHANGES=$((EVENTS - CREATES))
echo "generating $CREATES CampaignCreated + $CHANGES CampaignStatusChanged events"
psql -d "$DB" -q <<SQL
CREATE TEMP TABLE ids AS SELECT g, gen_random_uuid() AS id FROM generate_series(1, $CREATES) g;
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at)
SELECT gen_random_uuid(), 'campaign-' || id, 0, 'CampaignCreated', 1,
       jsonb_build_object('campaign_id', id, 'project', 'bench', 'status', 'draft',
           'details', jsonb_build_object('name', 'campaign ' || g, 'description', NULL, 'type', 'sales',
               'start_date', NULL, 'end_date', NULL, 'total_budget', 1000.00, 'target_audience', NULL,
               'goals', NULL, 'channels', '[]'::jsonb, 'kpis', '[]'::jsonb)),
       '{}'::jsonb, now()
FROM ids ORDER BY g;
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at)
SELECT gen_random_uuid(), 'campaign-' || id, 1, 'CampaignStatusChanged', 1,
       jsonb_build_object('campaign_id', id, 'from', 'draft', 'to', 'active'), '{}'::jsonb, now()
FROM ids WHERE g <= $CHANGES ORDER BY g;
SQL

START=$(date +%s.%N)
psql -d "$DB" -qc "CREATE TABLE raw_pass AS SELECT stream_id, event_type, data FROM events ORDER BY tx_id, position"
RAW=$(python3 -c "import time; print(time.time() - $START)")

START=$(date +%s.%N)
"$BIN" replay --projection campaigns
REPLAY=$(python3 -c "import time; print(time.time() - $START)")
ROWS=$(psql -d "$DB" -Atc "SELECT count(*) FROM campaigns")
python3 - "$EVENTS" "$RAW" "$REPLAY" "$ROWS" <<'PY'
import sys
events, raw, replay, rows = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"raw Postgres pass: {events / raw:,.0f} events/s ({raw:.1f} s)")
print(f"marketing replay:  {events / replay:,.0f} events/s ({replay:.1f} s) -> {rows:,} campaigns; {replay / raw:.1f}x the raw pass")
PY
