#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, starts the test
# brokers (their own ports and state directory, so a running demo is never touched),
# runs ruff, mypy, the import-layer contracts (import-linter) and pytest, and stops the
# brokers it started, even when tests fail.
# Arguments go to pytest, e.g. `make test ARGS="-k kafka -x"`.
set -uo pipefail
cd "$(dirname "$0")/.."
deploy/bootstrap.sh || exit 1

export SUPERNET_STATE_DIR="${SUPERNET_TEST_STATE_DIR:-$PWD/.supernet/test}"
export SUPERNET_KAFKA_PORT="${SUPERNET_TEST_KAFKA_PORT:-29092}"
export SUPERNET_KAFKA_CONTROLLER_PORT="${SUPERNET_TEST_KAFKA_CONTROLLER_PORT:-29093}"
export SUPERNET_MQTT_PORT="${SUPERNET_TEST_MQTT_PORT:-21883}"
export SUPERNET_PROMETHEUS_PORT="${SUPERNET_TEST_PROMETHEUS_PORT:-29090}"
supernet=.venv/bin/supernet

trap 'exit 130' INT TERM
trap '$supernet infra down' EXIT
$supernet infra up || exit 1

rc=0
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check . || rc=1
echo "== mypy" && .venv/bin/mypy || rc=1
echo "== import layers" && .venv/bin/lint-imports --no-cache || rc=1
echo "== pytest" && .venv/bin/python -m pytest "$@" || rc=1
exit $rc
