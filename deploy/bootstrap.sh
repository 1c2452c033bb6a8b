#!/usr/bin/env bash
# Installs what supernet needs on a fresh Debian machine, and nothing twice:
#   - Debian packages: Java 17 and Maven (to assemble Kafka), Mosquitto and its clients,
#     kcat, Prometheus (with promtool);
#   - a virtual environment in .venv with supernet and its test tools (pip install -e).
# Kafka's jars come from Maven Central on the first `supernet infra up` (cached after).
# Re-running is quick: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v kcat >/dev/null || need+=(kcat)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "bootstrap: installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  # DEBCONF_NOWARNINGS: no "delaying package configuration" notice where apt-utils is absent
  $sudo env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: supernet needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$python" -m venv .venv || {
    echo "bootstrap: '$python -m venv' failed; on Debian install python3-venv" >&2
    exit 1
  }
fi
stamp=.venv/.supernet-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" >"$stamp"
fi
