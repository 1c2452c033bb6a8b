#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing, bring the local brokers up,
# and send messages through both (Kafka and Mosquitto). Brokers that this script started
# are stopped at the end; pass --keep to leave them running for `supernet` commands.
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "demo: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
deploy/bootstrap.sh || exit 1
supernet=.venv/bin/supernet

was_up=0
$supernet infra status >/dev/null 2>&1 && was_up=1
if [ "$keep" = 0 ] && [ "$was_up" = 0 ]; then
  trap 'exit 130' INT TERM
  trap '$supernet infra down' EXIT
fi
$supernet infra up || exit 1
$supernet infra roundtrip --count "${DEMO_COUNT:-10000}"
