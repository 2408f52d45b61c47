#!/usr/bin/env bash
# Tests the running service against its own OpenAPI document with
# schemathesis (every phase: examples, coverage, fuzzing, stateful), and fails
# on any failure it reports. `deploy/local/test.sh` runs it after the cargo
# tests; alone (Postgres up, as test.sh leaves it):
#
#   deploy/local/schemathesis.sh
#
# It
#   1. installs schemathesis (pinned) into a venv under the cache dir, once;
#   2. builds the `marketing` binary (a no-op after test.sh) and starts
#      `marketing serve` on a free port, on a database of its own;
#   3. seeds a project: an API key, a campaign with a task, a content item and
#      a lead, and one more of each (campaign too) for the DELETE operations;
#   4. runs schemathesis with deploy/local/schemathesis.toml (fixed seed,
#      bounded examples), those ids and that key;
#   5. stops the server and drops the database.
# Reports (JUnit, and the server's log) go to $CARGO_TARGET_DIR/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

SCHEMATHESIS_VERSION=4.32.5
CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
OUT=$CARGO_TARGET_DIR/schemathesis
mkdir -p "$CACHE_DIR" "$OUT"

# shellcheck source=lib/serve-for-test.sh
. "$ROOT/deploy/local/lib/serve-for-test.sh"

# --- schemathesis, in a private venv -------------------------------------------
# One venv per version, built under a lock so parallel runs do not collide; a
# stamp written last marks it complete (an interrupted install is redone).
VENV=$CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION
ST=$VENV/bin/schemathesis
if [ ! -e "$VENV/.installed" ]; then
    (
        flock 9
        if [ ! -e "$VENV/.installed" ]; then
            log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV (one-off)"
            rm -rf "$VENV"
            python3 -m venv "$VENV"
            "$VENV/bin/pip" install --quiet --disable-pip-version-check \
                "schemathesis==$SCHEMATHESIS_VERSION"
            touch "$VENV/.installed"
        fi
    ) 9>"$CACHE_DIR/schemathesis.lock"
fi
"$ST" --version

# --- the server -----------------------------------------------------------------------
# Rate limits off: schemathesis sends requests as fast as it can and is not
# about limits (tests/api/rate_limits.rs is); a 429 would only cut its runs
# short. The key it gets has every scope (created without --scope).
serve_for_test schemathesis "$OUT/server.log" RATE_LIMIT_PER_SECOND=0 RATE_LIMIT_BURST=0

# --- a seeded project ------------------------------------------------------------------
KEY=$("$MARKETING" api-key create --project acme --name schemathesis | tail -1)
API=$BASE/v1/dev/marketing
# POSTs a JSON body, prints the created resource's id.
create() {
    curl -sf -X POST "$API$1" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -d "$2" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
# Under one campaign: a task, a content item and a lead, and a second of each
# for the DELETE operations, so deleting does not take the other operations'
# resources away; and a second campaign to delete.
# The content item has a media file (a 1x1 PNG), so the media download has
# something to serve.
PNG=$MEDIA/seed.png
python3 -c 'import base64, sys; sys.stdout.buffer.write(base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="))' >"$PNG"
children() {
    local content
    content=$(curl -sf -X POST "$API/campaigns/$1/content" -H "Authorization: Bearer $KEY" \
        -F title="Seeded post" -F content_type=blog -F "media=@$PNG;type=image/png")
    echo "$(create "/campaigns/$1/tasks" '{"title": "Seeded task"}')" \
        "$(printf '%s' "$content" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" \
        "$(create "/campaigns/$1/leads" "{\"email\": \"seed-$2@example.com\"}")" \
        "$(printf '%s' "$content" | python3 -c 'import json, sys; print(json.load(sys.stdin)["media"]["sha256"])')"
}
CAMPAIGN='{"name": "Schemathesis", "type": "sales", "total_budget": 1000}'
ST_CAMPAIGN_ID=$(create /campaigns "$CAMPAIGN")
ST_DELETED_CAMPAIGN_ID=$(create /campaigns "$CAMPAIGN")
read -r ST_TASK_ID ST_CONTENT_ID ST_LEAD_ID ST_MEDIA_SHA256 < <(children "$ST_CAMPAIGN_ID" kept)
read -r ST_DELETED_TASK_ID ST_DELETED_CONTENT_ID ST_DELETED_LEAD_ID _ < <(children "$ST_CAMPAIGN_ID" deleted)
export ST_KEY=$KEY \
    ST_DELETED_CAMPAIGN_ID ST_DELETED_TASK_ID ST_DELETED_CONTENT_ID ST_DELETED_LEAD_ID
echo "seeded campaign $ST_CAMPAIGN_ID, task $ST_TASK_ID, content $ST_CONTENT_ID, lead $ST_LEAD_ID"

# --- schemathesis ------------------------------------------------------------------------
# The configuration, with the seeded ids as dictionaries.
CONFIG=$OUT/schemathesis.toml
{
    cat "$ROOT/deploy/local/schemathesis.toml"
    for pair in campaign_ids:$ST_CAMPAIGN_ID task_ids:$ST_TASK_ID content_ids:$ST_CONTENT_ID \
        lead_ids:$ST_LEAD_ID lead_emails:seed-kept@example.com media_sha256s:$ST_MEDIA_SHA256; do
        printf '\n[dictionaries.%s]\nvalues = ["%s"]\n' "${pair%%:*}" "${pair#*:}"
    done
} >"$CONFIG"

log "schemathesis $SCHEMATHESIS_VERSION against $BASE"
started=$(date +%s)
status=0
"$ST" --config-file "$CONFIG" run "$BASE/openapi.json" \
    --url "$BASE" --no-color \
    --report junit --report-junit-path "$OUT/junit.xml" || status=$?
echo "schemathesis took $(($(date +%s) - started)) s, exit status $status"
if [ "$status" -ne 0 ]; then
    echo "the server's log: $OUT/server.log" >&2
    tail -50 "$OUT/server.log" >&2
fi
exit "$status"
