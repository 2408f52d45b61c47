#!/usr/bin/env bash
# Validates the deployment files offline (part of deploy/local/test.sh):
#   - deploy/docker-compose*.yml against the Compose specification's JSON
#     schema (the copy check-jsonschema ships as `vendor.compose-spec`);
#   - deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate,
#     which ships them), strictly: an unknown field is an error;
#   - deploy/gateway/default.conf.template with `nginx -t`, rendered as the
#     nginx image renders it, on Debian's nginx package unpacked into the cache
#     (apt-get download + dpkg-deb -x: no service is installed or started).
# The tools live in the cache dir (installed once, under flock, so parallel
# runs share one install). That the manifests name only roles, settings and
# ports the binary has is crates/marketing/tests/manifests.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE_DIR=${MARKETING_CACHE_DIR:-/var/tmp/marketing-cache}
mkdir -p "$CACHE_DIR"
CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version whose schemas the manifests must satisfy.
KUBERNETES_VERSION=1.33.0
VENV="$CACHE_DIR/deploy-validate-$CHECK_JSONSCHEMA_VERSION-$KUBERNETES_VALIDATE_VERSION"

(
    flock 9
    # A venv cannot be moved (its scripts name its path): built in place,
    # marked complete last, so a run that died midway is redone.
    if [ ! -f "$VENV/.complete" ]; then
        echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check \
            "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
        touch "$VENV/.complete"
    fi
) 9>"$CACHE_DIR/deploy-validate.lock"

echo "compose files against the Compose specification schema"
# LEAD_KEY_ENCRYPTION_KEY is interpolated by compose, not by the schema check.
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec \
    deploy/docker-compose.yml deploy/docker-compose.kurrent.yml

echo "Kubernetes manifests against the Kubernetes $KUBERNETES_VERSION schemas"
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_VERSION" deploy/k8s/*.yaml

echo "gateway config with nginx -t"
NGINX_ROOT="$CACHE_DIR/nginx-deb"
(
    flock 9
    if [ ! -x "$NGINX_ROOT/usr/sbin/nginx" ]; then
        SUDO=
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        if ! apt-cache show nginx >/dev/null 2>&1; then
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        fi
        work=$(mktemp -d)
        (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root nginx)
        rm -rf "$NGINX_ROOT.partial"
        dpkg-deb -x "$work"/nginx_*.deb "$NGINX_ROOT.partial"
        rm -rf "$work"
        # The shared libraries it links (usually present already).
        if ldd "$NGINX_ROOT.partial/usr/sbin/nginx" | grep -q "not found"; then
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                libpcre2-8-0 libssl3 zlib1g libcrypt1
        fi
        mv "$NGINX_ROOT.partial" "$NGINX_ROOT"
    fi
) 9>"$CACHE_DIR/nginx.lock"
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
mkdir -p "$check/logs"
# Render as the nginx image does (envsubst of the variables it is given), with
# the compose values; nginx -t does not resolve upstreams named by variables.
NGINX_RESOLVER=127.0.0.11 COMMAND_API=command-api:8080 QUERY_API=query-api:8080 python3 - \
    deploy/gateway/default.conf.template "$check/default.conf" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
names = ("NGINX_RESOLVER", "COMMAND_API", "QUERY_API")
used = set(re.findall(r"\$\{(\w+)\}", text))
unknown = used - set(names)
if unknown:
    sys.exit(f"the gateway template uses variables the layouts do not set: {sorted(unknown)}")
for name in names:
    text = text.replace("${" + name + "}", os.environ[name])
open(sys.argv[2], "w").write(text)
PY
# The image's main config, reduced to what the template needs around it.
cat >"$check/nginx.conf" <<CONF
pid $check/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $check/body;
    proxy_temp_path $check/proxy;
    fastcgi_temp_path $check/fastcgi;
    uwsgi_temp_path $check/uwsgi;
    scgi_temp_path $check/scgi;
    include $check/default.conf;
}
CONF
"$NGINX_ROOT/usr/sbin/nginx" -t -q -p "$check" -c "$check/nginx.conf" -e stderr
echo "deploy/ is valid"
