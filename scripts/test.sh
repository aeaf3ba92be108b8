#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: check the real peers the tests talk to, start Label
# Studio (scripts/label_studio.sh) and an MLflow tracking server on a fresh PostgreSQL database
# (scripts/mlflow_server.sh; each installed into its own venv on first use), run pytest with every
# test required to run, and stop what this script started.
#
#   scripts/test.sh .venv/bin/pytest [pytest args...]
#   scripts/test.sh --packages-only    (make install: the build needs some of them, e.g. PyGObject's)
#
# A missing Debian package is installed when running as root, otherwise the run stops before
# pytest with the command that installs it; a test that is
# skipped anyway fails the session (LINEGUARD_REQUIRE_ALL=1, see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
pytest_bin=${1:?usage: scripts/test.sh PYTEST [ARGS...]}
shift

need_apt=()
for pair in mosquitto:mosquitto mosquitto_passwd:mosquitto-clients promtool:prometheus \
  prometheus:prometheus openssl:openssl curl:curl chromium:chromium chromedriver:chromium-driver \
  arv-fake-gv-camera-0.8:aravis-tools arv-tool-0.8:aravis-tools-cli pkg-config:pkg-config \
  psql:postgresql-client; do
  command -v "${pair%%:*}" >/dev/null || need_apt+=("${pair#*:}")
done
# Packages without a command: Aravis' introspection data, and what PyGObject (extra gige) builds on.
for package in gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev; do
  dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing ${need_apt[*]} (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${need_apt[*]}; install with: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi
[ "$pytest_bin" = --packages-only ] && exit 0

started_ls=""
started_mlflow=""
cleanup() {
  [ -n "$started_ls" ] && scripts/label_studio.sh stop >/dev/null 2>&1 || true
  [ -n "$started_mlflow" ] && scripts/mlflow_server.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [ -z "${LABEL_STUDIO_URL:-}" ]; then
  eval "$(scripts/label_studio.sh start)"
  started_ls=1
fi
if [ -z "${LINEGUARD_TEST_MLFLOW_URL:-}" ]; then
  eval "$(scripts/mlflow_server.sh start)"
  started_mlflow=1
fi

LINEGUARD_REQUIRE_ALL=1 "$pytest_bin" --durations=15 "$@"
