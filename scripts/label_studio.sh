#!/usr/bin/env bash
# Install (once) and run a headless Label Studio for lineguard's labeling tests and demo.
#
# Label Studio lives in its own venv (.venv-labelstudio) because its pins clash with ours. The
# server starts with a known user and legacy API token, telemetry and version checks off, bound
# to 127.0.0.1, and this script waits until the API answers that token. On success it prints
# shell lines to eval, e.g.:
#
#   eval "$(scripts/label_studio.sh start)"   # sets LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ...
#   scripts/label_studio.sh stop
#
# Settings (environment): LS_PORT (8089), LS_DATA_DIR (var/label-studio), LS_USER, LS_PASSWORD,
# LS_TOKEN, LS_VENV (.venv-labelstudio), LS_START_TIMEOUT (300 s). The first start migrates the
# database (~35 s); a copy of a migrated data dir starts in ~4 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LS_VENV:-$ROOT/.venv-labelstudio}
PORT=${LS_PORT:-8089}
DATA=${LS_DATA_DIR:-$ROOT/var/label-studio}
LS_USER=${LS_USER:-admin@lineguard.local}
LS_PASSWORD=${LS_PASSWORD:-lineguard-admin-pw}
# Legacy tokens are 40 characters; this one spells "lineguard-test-token" in hex.
LS_TOKEN=${LS_TOKEN:-6c696e6567756172642d746573742d746f6b656e}
TIMEOUT=${LS_START_TIMEOUT:-300}
URL="http://127.0.0.1:$PORT"
PIDFILE="$DATA/label-studio.pid"
LOG="$DATA/label-studio.log"

NAME="Label Studio"
# shellcheck source=scripts/lib/service.sh
source "$ROOT/scripts/lib/service.sh"

say() { echo "label_studio.sh: $*" >&2; }

install() {
    if [[ -x "$VENV/bin/label-studio" ]]; then
        return
    fi
    say "installing Label Studio into $VENV (about 1 GB, 1.5-2 min)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "label-studio==1.23.2"
}

answers() {
    curl -sf -o /dev/null -H "Authorization: Token $LS_TOKEN" "$URL/api/projects?page_size=1"
}

print_env() {
    echo "export LABEL_STUDIO_URL=$URL"
    echo "export LABEL_STUDIO_API_KEY=$LS_TOKEN"
    echo "export LABEL_STUDIO_DATA_DIR=$DATA"
    echo "export LABEL_STUDIO_BIN=$VENV/bin/label-studio"
}

start() {
    install
    mkdir -p "$DATA/media"
    if running && answers; then
        say "already running at $URL (pid $(cat "$PIDFILE"))"
        print_env
        return
    fi
    if answers; then
        say "port $PORT already serves a Label Studio not started from $DATA; pick another LS_PORT"
        exit 1
    fi
    say "starting Label Studio at $URL with data in $DATA (log: $LOG)"
    env \
        LABEL_STUDIO_USERNAME="$LS_USER" \
        LABEL_STUDIO_PASSWORD="$LS_PASSWORD" \
        LABEL_STUDIO_USER_TOKEN="$LS_TOKEN" \
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
        LABEL_STUDIO_BASE_DATA_DIR="$DATA" \
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$DATA" \
        SENTRY_DSN= \
        FRONTEND_SENTRY_DSN= \
        LATEST_VERSION_CHECK=false \
        COLLECT_ANALYTICS=false \
        setsid "$VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 -p "$PORT" \
        >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    wait_until_up
    print_env
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    install) install ;;
    env) print_env ;;
    *)
        echo "usage: $0 [start|stop|install|env]" >&2
        exit 2
        ;;
esac
