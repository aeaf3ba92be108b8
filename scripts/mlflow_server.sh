#!/usr/bin/env bash
# Install (once) and run an MLflow tracking server for lineguard's MLflow registry back-end tests.
#
# MLflow's server is a large install, so it lives in its own venv (.venv-mlflow) like Label
# Studio; lineguard itself needs only the client (mlflow-skinny, the `registry-mlflow` extra). The
# backend store is a PostgreSQL database this script creates (fresh on every start) on the server
# at MLFLOW_PG (trust auth; a SQLite file, with a warning, where none answers), artifacts go to a
# folder under the data dir, and the server binds to 127.0.0.1. On success it prints shell lines to eval:
#
#   eval "$(scripts/mlflow_server.sh start)"   # sets LINEGUARD_TEST_MLFLOW_URL
#   scripts/mlflow_server.sh stop
#
# Settings (environment): MLFLOW_PORT (5055), MLFLOW_DATA_DIR (var/mlflow), MLFLOW_VENV
# (.venv-mlflow), MLFLOW_PG (postgresql://root@127.0.0.1:5432), MLFLOW_DB (lineguard_mlflow_PORT),
# MLFLOW_START_TIMEOUT (120 s).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MLFLOW_VENV:-$ROOT/.venv-mlflow}
PORT=${MLFLOW_PORT:-5055}
DATA=${MLFLOW_DATA_DIR:-$ROOT/var/mlflow}
PG=${MLFLOW_PG:-postgresql://root@127.0.0.1:5432}
DB=${MLFLOW_DB:-lineguard_mlflow_$PORT}
TIMEOUT=${MLFLOW_START_TIMEOUT:-120}
URL="http://127.0.0.1:$PORT"
PIDFILE="$DATA/mlflow.pid"
LOG="$DATA/mlflow.log"

NAME="MLflow"
# shellcheck source=scripts/lib/service.sh
source "$ROOT/scripts/lib/service.sh"

say() { echo "mlflow_server.sh: $*" >&2; }

install() {
    if [[ -x "$VENV/bin/mlflow" ]] && "$VENV/bin/python" -c "import psycopg2" 2>/dev/null; then
        return
    fi
    say "installing MLflow into $VENV (a few hundred MB, 1-2 min)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "mlflow>=3,<4" "psycopg2-binary>=2.9"
}

answers() {
    curl -sf -o /dev/null "$URL/health"
}

print_env() {
    echo "export LINEGUARD_TEST_MLFLOW_URL=$URL"
}

# Every start gets an empty backend store, so test runs never see each other's models. Prints the
# store's URI: the PostgreSQL database, or (no PostgreSQL answering at MLFLOW_PG) a SQLite file,
# said loudly, so a machine without PostgreSQL still tests against a real MLflow server.
fresh_database() {
    if psql "$PG/postgres" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >&2; then
        echo "${PG/postgresql:/postgresql+psycopg2:}/$DB"
    else
        say "WARNING: no PostgreSQL at $PG; the backend store is SQLite ($DATA/mlflow.db) this time"
        rm -f "$DATA/mlflow.db"
        echo "sqlite:///$DATA/mlflow.db"
    fi
}

start() {
    install
    mkdir -p "$DATA"
    if running && answers; then
        say "already running at $URL (pid $(cat "$PIDFILE"))"
        print_env
        return
    fi
    if answers; then
        say "port $PORT already serves something not started from $DATA; pick another MLFLOW_PORT"
        exit 1
    fi
    local store
    store=$(fresh_database)
    rm -rf "$DATA/artifacts"
    say "starting MLflow at $URL, backend store ${store%%://*}, artifacts in $DATA/artifacts (log: $LOG)"
    env MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
        setsid "$VENV/bin/mlflow" server \
        --backend-store-uri "$store" \
        --artifacts-destination "$DATA/artifacts" \
        --host 127.0.0.1 --port "$PORT" --workers 2 \
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
