#!/usr/bin/env bash
# The web console's end-to-end test in a real browser: headless Chromium
# (Debian's package) driven by Playwright (playwright-core from npm, pinned in
# deploy/local/console-e2e/package-lock.json). `deploy/local/test.sh` runs it
# after schemathesis; alone (Postgres up):
#
#   deploy/local/console-test.sh
#
# It
#   1. installs chromium with apt if it is missing, and the npm packages of
#      deploy/local/console-e2e (`npm ci`) under the cache dir, once per lock
#      file, both under a flock so parallel runs share one install;
#   2. checks that the vendored Chart.js is byte for byte the pinned package's;
#   3. builds the `marketing` binary (a no-op after test.sh) and starts
#      `marketing serve` on a free port, on a database of its own;
#   4. creates an API key in each of two projects and runs
#      deploy/local/console-e2e/console.test.cjs with Node.
# Screenshots go to $CARGO_TARGET_DIR/console/screenshots; CONSOLE_SCREENSHOTS=docs/console
# writes them where docs/console.md shows them (to refresh the committed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
OUT=$CARGO_TARGET_DIR/console
SHOTS=${CONSOLE_SCREENSHOTS:-$OUT/screenshots}
case "$SHOTS" in /*) ;; *) SHOTS=$ROOT/$SHOTS ;; esac
mkdir -p "$CACHE_DIR" "$OUT" "$SHOTS"

# shellcheck source=lib/serve-for-test.sh
. "$ROOT/deploy/local/lib/serve-for-test.sh"

# --- the browser ------------------------------------------------------------------
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    (
        flock 9
        if [ ! -x "$CHROMIUM" ]; then
            log "installing chromium (apt, one-off)"
            SUDO=
            [ "$(id -u)" -eq 0 ] || SUDO=sudo
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
        fi
    ) 9>"$CACHE_DIR/chromium.lock"
fi
"$CHROMIUM" --version 2>/dev/null || true

# --- playwright-core and chart.js, pinned by the lock file ---------------------------
# One install per lock file content; a stamp written last marks it complete.
E2E=$ROOT/deploy/local/console-e2e
LOCK_SUM=$(sha256sum "$E2E/package-lock.json" | cut -c1-16)
NPM_DIR=$CACHE_DIR/console-e2e-$LOCK_SUM
if [ ! -e "$NPM_DIR/.installed" ]; then
    (
        flock 9
        if [ ! -e "$NPM_DIR/.installed" ]; then
            log "installing the console test's npm packages into $NPM_DIR (one-off)"
            rm -rf "$NPM_DIR"
            mkdir -p "$NPM_DIR"
            cp "$E2E/package.json" "$E2E/package-lock.json" "$NPM_DIR/"
            (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
            touch "$NPM_DIR/.installed"
        fi
    ) 9>"$CACHE_DIR/console-e2e.lock"
fi
# The committed Chart.js must be the pinned package's file, unchanged.
cmp "$NPM_DIR/node_modules/chart.js/dist/chart.umd.min.js" "$ROOT/crates/console/assets/vendor/chart.umd.min.js"
cmp "$NPM_DIR/node_modules/chart.js/LICENSE.md" "$ROOT/crates/console/assets/vendor/chart.js-LICENSE.md"

# --- the server ------------------------------------------------------------------
serve_for_test console "$OUT/server.log"

KEY_A=$(RUST_LOG=warn "$MARKETING" api-key create --project acme --name marketer | tail -1)
KEY_B=$(RUST_LOG=warn "$MARKETING" api-key create --project rival --name outsider | tail -1)

# --- the browser test -------------------------------------------------------------
log "console browser test against $BASE"
started=$(date +%s)
status=0
NODE_PATH=$NPM_DIR/node_modules CONSOLE_BASE=$BASE KEY_A=$KEY_A KEY_B=$KEY_B \
    CHROMIUM=$CHROMIUM SHOTS=$SHOTS \
    node "$E2E/console.test.cjs" || status=$?
echo "console test took $(($(date +%s) - started)) s, exit status $status; screenshots in $SHOTS"
if [ "$status" -ne 0 ]; then
    echo "the server's log: $OUT/server.log" >&2
    tail -30 "$OUT/server.log" >&2
fi
exit "$status"
