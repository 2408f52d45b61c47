#!/usr/bin/env bash
# The HTTP benchmark of run.sh twice in one go: first with the log in Postgres,
# then with the log in KurrentDB served by the project's gRPC *test double*
# (`kurrentdb-double`, memory only; the sanctioned double, since no KurrentDB
# server can run on the project machines). The second run says what this
# backend's code costs (the real client, gRPC on loopback, the store's reads
# and hash chain, the log index), not what a real KurrentDB server does.
# Same knobs as run.sh (CONCURRENCY, SECONDS_PER_RUN, SKIP_BUILD, PEER_SCRIPT).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --locked -p marketing -p bench -p test-support --bin kurrentdb-double >/dev/null
    export SKIP_BUILD=1
fi
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "== log in Postgres"
deploy/bench/run.sh

KPORT=$(free_port)
"$CARGO_TARGET_DIR/release/kurrentdb-double" --listen "127.0.0.1:$KPORT" >"$CACHE_DIR/bench-kurrentdb-double.log" 2>&1 &
DOUBLE=$!
trap 'kill "$DOUBLE" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.1; done
echo "== log in KurrentDB (the test double on 127.0.0.1:$KPORT)"
# The peer ran beside the first run already.
PEER_SCRIPT=/nonexistent EVENT_STORE_URL="kurrentdb://127.0.0.1:$KPORT?tls=false" deploy/bench/run.sh
