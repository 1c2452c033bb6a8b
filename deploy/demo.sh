#!/usr/bin/env bash
# The main job, from a fresh clone: install what is missing (deploy/bootstrap.sh), then
# `supernet demo`: bring the local brokers up, generate the network, start a fleet of 2
# workers and the carriers (a busy carrier goes offline halfway), run a minute of load,
# print the summary computed from the receipts and write plots to out/demo/. Everything
# it started is stopped at the end; --keep leaves the brokers running. Other options
# (--rate, --duration, --workers, --out, --seed, --no-economics ...) go to `supernet demo`.
set -uo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# //'
               echo "Options: .venv/bin/supernet demo --help"; exit 0 ;;
  esac
done
deploy/bootstrap.sh || exit 1
exec .venv/bin/supernet demo "$@"
