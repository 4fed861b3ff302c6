#!/usr/bin/env bash
# Production smoke test of the Zot pull-through cache plex renders. NOT run in CI: it needs
# internet access (ghcr.io for the zot image, the upstream for the test image) and docker or
# podman. Run it by hand after changing plex/registry/zot.py or bumping registry.zot.version.
#
#   deploy/registry/zot-smoke.sh [PLEX] [IMAGE]
#
#   PLEX   plex name or file whose registry config is rendered (default: omniplex)
#   IMAGE  image pulled through the cache (default: docker.io/library/busybox:1.36); its
#          registry must be one of the plex's upstreams
#
# Environment:
#   ENGINE           docker or podman (default: whichever is installed, docker first)
#   PLEX             the plex CLI (default: plex, else .venv/bin/plex)
#   PYTHON           a python3 for small JSON edits (default: python3)
#   HOST_PORT        port published on 127.0.0.1 (default: 15000)
#   ZOT_TAG          zot image tag (default: the plex's registry.zot.version)
#   ZOT_CREDENTIALS  a zot credentials.json to mount when the plex names a credentials file;
#                    without it the credentialsFile key is dropped and pulls are anonymous
#
# What it checks, in order:
#   1. `zot verify` accepts the rendered config.json (real image, real parser);
#   2. zot serves /v2/ (HTTP 200) on the rendered port;
#   3. IMAGE pulls through the cache, at the path layout the nodes use (registries.yaml);
#   4. the second pull is a cache hit: zot is restarted on the same storage with every upstream
#      URL pointed at a closed port, the local image copy is removed, and the pull must still
#      succeed with the same manifest digest.
set -euo pipefail

PLEX_NAME=${1:-omniplex}
IMAGE=${2:-docker.io/library/busybox:1.36}
HOST_PORT=${HOST_PORT:-15000}
PYTHON=${PYTHON:-python3}
ZOT_REPO=ghcr.io/project-zot/zot-linux-amd64   # not zot-minimal: it has no sync extension

if [[ -z ${PLEX:-} ]]; then
    if command -v plex >/dev/null; then PLEX=plex; else PLEX=.venv/bin/plex; fi
fi
if [[ -z ${ENGINE:-} ]]; then
    if command -v docker >/dev/null; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    else echo "zot-smoke: needs docker or podman" >&2; exit 2; fi
fi
PULL_ARGS=()
[[ $ENGINE == podman ]] && PULL_ARGS=(--tls-verify=false)   # docker trusts 127.0.0.0/8 over http

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'zot-smoke: FAIL: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d)
NAME=plex-zot-smoke-$$
VOLUME=plex-zot-smoke-$$
cleanup() {
    "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
    "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- render ---------------------------------------------------------------------------------
say "render: $PLEX registry config $PLEX_NAME"
"$PLEX" registry config "$PLEX_NAME" >"$WORK/config.json"
"$PLEX" registry config "$PLEX_NAME" --nodes >"$WORK/registries.json"
"$PYTHON" -c 'import json,sys; sys.exit("extensions" not in json.load(open(sys.argv[1])))' \
    "$WORK/config.json" || fail "plex $PLEX_NAME does not use the zot engine (registry.engine)"

ZOT_TAG=${ZOT_TAG:-$("$PYTHON" - "$PLEX_NAME" <<'EOF' 2>/dev/null || echo v2.1.20
import sys
from plex.cli_app import get_plex
print(get_plex(sys.argv[1]).registry.zot.version)
EOF
)}
ZOT_IMAGE=$ZOT_REPO:$ZOT_TAG

# The port zot listens on inside the container, straight from the rendered config.
PORT=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"]["port"])' \
    "$WORK/config.json")

MOUNTS=(-v "$WORK/config.json:/etc/zot/config.json:ro" -v "$VOLUME:/var/lib/registry")
CREDS_IN=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["extensions"]["sync"].get("credentialsFile", ""))' \
    "$WORK/config.json")
if [[ -n $CREDS_IN ]]; then
    if [[ -n ${ZOT_CREDENTIALS:-} ]]; then
        MOUNTS+=(-v "$ZOT_CREDENTIALS:$CREDS_IN:ro")
    else
        echo "no ZOT_CREDENTIALS given: dropping credentialsFile, pulls are anonymous"
        "$PYTHON" - "$WORK/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
doc = json.load(open(p))
del doc["extensions"]["sync"]["credentialsFile"]
json.dump(doc, open(p, "w"), indent=2)
EOF
    fi
fi

# IMAGE -> registry, repository, tag, and the path prefix nodes use for that registry.
read -r REGISTRY REPO TAG PREFIX < <("$PYTHON" - "$IMAGE" "$WORK/registries.json" <<'EOF'
import json, sys
from urllib.parse import urlsplit
ref, mirrors = sys.argv[1], json.load(open(sys.argv[2]))["mirrors"]
registry, _, rest = ref.partition("/")
repo, _, tag = rest.rpartition(":")
if registry not in mirrors:
    sys.exit(f"{registry} is not an upstream of the plex: {', '.join(mirrors)}")
path = urlsplit(mirrors[registry]["endpoint"][0]).path  # /v2/<destination> for zot
prefix = path.removeprefix("/v2").strip("/")
print(registry, repo, tag, prefix or "-")
EOF
) || fail "cannot map $IMAGE onto the plex's mirrors"
[[ $PREFIX == - ]] && fail "the plex's mirror layout is not zot's (no /v2/<name> path)"
LOCAL=127.0.0.1:$HOST_PORT/$PREFIX/$REPO:$TAG
MANIFEST_URL=http://127.0.0.1:$HOST_PORT/v2/$PREFIX/$REPO/manifests/$TAG
ACCEPT='application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

start_zot() {
    "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
    "$ENGINE" run -d --name "$NAME" -p "127.0.0.1:$HOST_PORT:$PORT" "${MOUNTS[@]}" \
        --entrypoint /usr/bin/zot "$ZOT_IMAGE" serve /etc/zot/config.json >/dev/null
    for _ in $(seq 60); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HOST_PORT/v2/" || true)
        [[ $code == 200 ]] && return 0
        sleep 1
    done
    "$ENGINE" logs "$NAME" | tail -30 >&2
    fail "/v2/ did not answer 200 within 60 s (last: $code)"
}

digest() {
    curl -sfI -H "Accept: $ACCEPT" "$MANIFEST_URL" | tr -d '\r' \
        | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

# --- 1. verify ------------------------------------------------------------------------------
say "1. zot verify ($ZOT_IMAGE)"
"$ENGINE" pull -q "$ZOT_IMAGE" >/dev/null || fail "cannot pull $ZOT_IMAGE"
"$ENGINE" run --rm "${MOUNTS[@]}" --entrypoint /usr/bin/zot "$ZOT_IMAGE" \
    verify /etc/zot/config.json || fail "zot verify rejected the rendered config"

# --- 2. serve -------------------------------------------------------------------------------
say "2. serve on 127.0.0.1:$HOST_PORT (container port $PORT)"
start_zot
echo "/v2/ -> 200; /readyz -> $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HOST_PORT/readyz" || true)"

# --- 3. first pull (miss: zot syncs from the upstream) ----------------------------------------
say "3. pull $LOCAL (first: from $REGISTRY)"
t0=$(date +%s)
"$ENGINE" pull "${PULL_ARGS[@]}" "$LOCAL" >/dev/null || fail "first pull through the cache failed"
echo "first pull took $(( $(date +%s) - t0 )) s"
FIRST=$(digest)
[[ -n $FIRST ]] || fail "no manifest digest for $MANIFEST_URL"
echo "digest $FIRST"
curl -s "http://127.0.0.1:$HOST_PORT/v2/_catalog"; echo

# --- 4. second pull (hit: upstreams unreachable) ----------------------------------------------
say "4. pull again with every upstream unreachable (must be a cache hit)"
"$PYTHON" - "$WORK/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
doc = json.load(open(p))
for reg in doc["extensions"]["sync"]["registries"]:
    reg["urls"] = ["http://127.0.0.1:9"]  # discard port: nothing listens there
    reg["maxRetries"] = 0
json.dump(doc, open(p, "w"), indent=2)
EOF
start_zot
"$ENGINE" rmi -f "$LOCAL" >/dev/null 2>&1 || true
t0=$(date +%s)
"$ENGINE" pull "${PULL_ARGS[@]}" "$LOCAL" >/dev/null || fail "second pull was not served from the cache"
echo "second pull took $(( $(date +%s) - t0 )) s"
SECOND=$(digest)
[[ $SECOND == "$FIRST" ]] || fail "digest changed between pulls: $FIRST -> $SECOND"
"$ENGINE" rmi -f "$LOCAL" >/dev/null 2>&1 || true

say "OK: zot $ZOT_TAG caches $REGISTRY for plex $PLEX_NAME (digest $FIRST)"
