# Sourced by the scripts that test a live server (deploy/local/schemathesis.sh,
# deploy/local/console-test.sh): builds `marketing` and starts `marketing
# serve` on a free loopback port, on a database of its own, and on exit stops
# it and drops the database.
#
#   serve_for_test <name> <log file> [VAR=value ...]
#
# The VAR=value pairs are extra environment for the server. Needs
# CARGO_TARGET_DIR and PGHOST, PGPORT, PGUSER. Sets MARKETING (the binary),
# BASE (the server's URL), MEDIA (its media directory, removed on exit),
# SERVER_PID, and exports DATABASE_URL, so the binary's one-shot commands
# (`api-key create`) work on the same database.

log() { printf '\n==> %s\n' "$*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_test_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${TEST_DB:-}" ]; then
        psql -d postgres -qc "DROP DATABASE IF EXISTS \"$TEST_DB\" WITH (FORCE)" 2>/dev/null || true
    fi
    if [ -n "${MEDIA:-}" ]; then rm -rf "$MEDIA"; fi
}

serve_for_test() {
    local name=$1 log_file=$2 port
    shift 2
    log "building marketing"
    cargo build --locked -p marketing --bin marketing
    MARKETING=$CARGO_TARGET_DIR/debug/marketing
    port=$(free_port)
    # mk_test_: a run that dies before its cleanup leaves a database that
    # test.sh's leftover sweep removes.
    TEST_DB=mk_test_${name}_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
    MEDIA=$(mktemp -d)
    export DATABASE_URL=postgres://$PGUSER@$PGHOST:$PGPORT/$TEST_DB
    SERVER_PID=
    trap stop_test_server EXIT

    log "starting marketing serve on 127.0.0.1:$port (database $TEST_DB)"
    env LISTEN_ADDR="127.0.0.1:$port" MEDIA_DIR="$MEDIA" RUST_LOG="${RUST_LOG:-warn}" "$@" \
        "$MARKETING" serve >"$log_file" 2>&1 &
    SERVER_PID=$!
    BASE=http://127.0.0.1:$port
    # The server creates and migrates its database before it is ready: a
    # generous deadline, for a loaded machine.
    local deadline=$((SECONDS + 180))
    until curl -sf "$BASE/readyz" >/dev/null; do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log_file"; exit 1; }
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "marketing serve was not ready within 180 s; its log: $log_file" >&2
            tail -30 "$log_file" >&2
            exit 1
        fi
        sleep 0.2
    done
}
