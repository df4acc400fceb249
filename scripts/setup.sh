#!/usr/bin/env bash
# One-time, idempotent set-up of everything the project needs on a Debian machine:
#   * R with quadprog and jsonlite (Debian packages) for the calibration stage;
#   * a virtual environment in .venv with torch (CPU build, installed first and alone),
#     every pinned dependency from requirements.lock, and this project (editable).
# A second call checks stamps and returns in about a second.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# Debian packages: scripts/apt-runtime.txt (also used by the Docker image) and
# scripts/apt-dev.txt (tests and docs only). One package a line, # for comments.
mapfile -t APT_PACKAGES < <(cat scripts/apt-runtime.txt scripts/apt-dev.txt | sed 's/#.*//' | awk 'NF')

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

missing_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$pkg")
done
if [ ${#missing_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
fi

stamp_hash=$(cat requirements.lock pyproject.toml scripts/setup.sh scripts/apt-*.txt | sha256sum | cut -d' ' -f1)
stamp="$VENV/.tsa_kedro_setup"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_hash" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, alone, so that no resolver ever pulls a CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps -e .
echo "$stamp_hash" > "$stamp"
log "environment ready in $VENV"
