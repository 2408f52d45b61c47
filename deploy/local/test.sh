#!/usr/bin/env bash
# Runs every check CI runs, on a fresh machine or a warm one:
#   1. starts Postgres if it is down;
#   2. installs the system packages the build needs if missing (librdkafka's,
#      and protoc for the KurrentDB test double);
#   3. installs (once, cached) and starts the Kafka-protocol broker `tansu` on loopback,
#      and installs (once, cached) the S3-compatible server `s3s-fs` that tests start;
#   4. drops test databases left over from earlier runs (not those of a suite
#      running beside this one);
#   5. cargo fmt --check, cargo clippy -D warnings, the deployment files
#      (deploy/local/validate-deploy.sh), and every test;
#   6. schemathesis against a live server (deploy/local/schemathesis.sh), with the
#      log in Postgres and again in KurrentDB (the gRPC test double);
#   7. the web console in headless Chromium (deploy/local/console-test.sh).
# Build artefacts and the broker and S3 binaries live in a cache outside the checkout
# ($MARKETING_CACHE_DIR, default /var/tmp/marketing-cache), so a fresh clone
# reuses a warm build.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://$PGUSER@$PGHOST:$PGPORT/postgres}

log() { printf '\n==> %s\n' "$*"; }

# --- Postgres -------------------------------------------------------------
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
    log "Postgres is down; starting it"
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    else
        echo "Postgres is not running on $PGHOST:$PGPORT and pg_ctlcluster is missing" >&2
        exit 1
    fi
    for _ in $(seq 1 60); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
    pg_isready -h "$PGHOST" -p "$PGPORT"
fi

# --- system packages for the build ------------------------------------------------
# The publisher's rdkafka builds librdkafka from source (./configure && make): it
# needs a C compiler, make, pkg-config and the OpenSSL headers (TLS to real
# clusters); zlib is used from the system when present. No cmake needed.
# The KurrentDB test double (crates/test-support) generates its gRPC server from
# the client's .proto files with protoc, which needs the well-known types.
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if command -v pkg-config >/dev/null; then
    pkg-config --exists openssl || missing+=(libssl-dev)
    pkg-config --exists zlib || missing+=(zlib1g-dev)
else
    missing+=(libssl-dev zlib1g-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Kafka-protocol broker (tansu) ---------------------------------------------
TANSU="$CACHE_DIR/tansu/bin/tansu"
if [ ! -x "$TANSU" ]; then
    log "installing tansu 0.6.0 into $CACHE_DIR/tansu (one-off, several minutes)"
    cargo install tansu --version 0.6.0 --locked --features dynostore --root "$CACHE_DIR/tansu"
fi
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
KAFKA_PORT=$(free_port)
log "starting tansu on 127.0.0.1:$KAFKA_PORT"
"$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$CACHE_DIR/tansu-test.log" 2>&1 &
TANSU_PID=$!
trap 'kill "$TANSU_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break
    sleep 0.2
done
export KAFKA_TEST_BROKERS="127.0.0.1:$KAFKA_PORT"
# Tests that restart the broker start their own copy with this binary.
export TANSU_BIN="$TANSU"

# --- S3-compatible server (s3s-fs) ----------------------------------------------
# crates/marketing/tests/split_roles_s3.rs runs the roles as separate processes
# with their media in a real S3 server on loopback; each test starts its own
# (test_support::s3) from this binary. s3s-fs rather than moto's server mode:
# it keeps each object as a plain file under its root, so the test also sees
# what reached the store, not only what the API answers; it comes from the
# registry cargo already uses (no Python venv); one small binary, built once.
# 0.14.1: the newest release whose rust-version this toolchain meets.
S3S_FS="$CACHE_DIR/s3s-fs/bin/s3s-fs"
if [ ! -x "$S3S_FS" ]; then
    log "installing s3s-fs 0.14.1 into $CACHE_DIR/s3s-fs (one-off: 3 CPU-minutes, 7 min on a loaded 2-core machine)"
    cargo install s3s-fs --version 0.14.1 --locked --features binary --root "$CACHE_DIR/s3s-fs"
fi
export S3_SERVER_BIN="$S3S_FS"

# --- leftovers from earlier runs -------------------------------------------
# Another suite may be running on the same Postgres (a second checkout, a
# developer's run beside CI): its databases are never dropped from under it.
# A test's database always has a connection while the test runs, but not in
# the milliseconds between CREATE DATABASE and the first connect, or while a
# test restarts its server: so only databases with no session that were
# created (their PG_VERSION file written) more than 10 minutes ago go, and
# without FORCE, so one that gained a session meanwhile is refused and kept.
log "dropping leftover test databases"
leftovers=$(psql -d postgres -Atc "
    SELECT d.datname FROM pg_database d
    WHERE d.datname LIKE 'mk\_test\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)
      AND coalesce((pg_stat_file('base/' || d.oid || '/PG_VERSION', true)).modification,
                   '-infinity') < now() - interval '10 minutes'")
if [ -n "$leftovers" ]; then
    printf '%s\n' "$leftovers" |
        xargs -P 4 -I{} psql -d postgres -qc 'DROP DATABASE IF EXISTS "{}"' 2>/dev/null || true
fi
echo "$(printf '%s' "$leftovers" | grep -c . || true) idle for 10 minutes or more, dropped;" \
    "$(psql -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname LIKE 'mk\_test\_%'") remain (in use or new)"

# --- checks ---------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "deployment files (compose schema, Kubernetes schemas, nginx -t)"
deploy/local/validate-deploy.sh
log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests: run them first, so the last word is the
    # summary of the whole suite.
    cargo test --workspace --locked --doc
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
log "schemathesis"
deploy/local/schemathesis.sh
log "schemathesis with the log in KurrentDB (the sanctioned gRPC test double)"
# The same generated requests against `marketing serve` with EVENT_STORE_URL
# pointing at `kurrentdb-double` (memory only; no KurrentDB server can run on
# the project machines): every endpoint on the second backend.
cargo build --locked -p test-support --bin kurrentdb-double
KURRENT_PORT=$(free_port)
"$CARGO_TARGET_DIR/debug/kurrentdb-double" --listen "127.0.0.1:$KURRENT_PORT" >"$CACHE_DIR/kurrentdb-double-test.log" 2>&1 &
DOUBLE_PID=$!
trap 'kill "$TANSU_PID" "$DOUBLE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$KURRENT_PORT") 2>/dev/null && break
    sleep 0.2
done
EVENT_STORE_URL="kurrentdb://127.0.0.1:$KURRENT_PORT?tls=false" deploy/local/schemathesis.sh
kill "$DOUBLE_PID" 2>/dev/null || true
log "console (browser)"
deploy/local/console-test.sh
