#!/usr/bin/env bash
# Verifies one webhook delivery with the independent `standardwebhooks`
# package from PyPI, in a private virtualenv under the build cache (created
# once, guarded by a lock so parallel tests share it). Reads a JSON object
# {"secret", "headers", "body" (base64)} on stdin; exits 0 only if the package
# accepts the delivery. Missing python3 or pip is an error, never a skip.
set -euo pipefail
CACHE="${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}"
VENV="$CACHE/venv-standardwebhooks"
VERSION=1.0.0
mkdir -p "$CACHE"
exec 9>"$CACHE/venv-standardwebhooks.lock"
flock 9
if ! "$VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==$VERSION"
fi
exec 9>&-
exec "$VENV/bin/python" -c '
import base64, json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
Webhook(request["secret"]).verify(base64.b64decode(request["body"]), request["headers"])
print("verified")
'
