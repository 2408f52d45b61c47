#!/usr/bin/env bash
# Runs the whole service on this machine, with no Docker: starts Postgres if it
# is down, builds the release binary, and runs `marketing serve` (which creates
# the database if needed and applies migrations). Defaults (docs/operations.md):
# DATABASE_URL=postgres://postgres@127.0.0.1:5432/marketing, LISTEN_ADDR=127.0.0.1:8080.
# Set KAFKA_BROKERS to also publish events to Kafka.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting Postgres"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

cargo build --release --locked -p marketing
BIN="$CARGO_TARGET_DIR/release/marketing"
"$BIN" migrate
cat <<MSG

Create an API key (the secret is the last line printed):
    $BIN api-key create --project demo --name local
Then, for example:
    curl -H "Authorization: Bearer <secret>" http://${LISTEN_ADDR:-127.0.0.1:8080}/v1/dev/marketing/campaigns

MSG
exec "$BIN" serve
