#!/usr/bin/env bash
# Set up stk on a fresh machine: Debian packages + a virtual environment in .venv.
# Idempotent: a second run checks and installs nothing new.
#   bash tools/setup.sh            # base install (+ pytest)
#   STK_PEER=1 bash tools/setup.sh # also the ESPnet peer for bench/ (see bench/README.md)
#   STK_JUDGES=1 bash tools/setup.sh # also the judges of generated speech (tools/install_judges.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

apt_pkgs="espeak-ng sox"
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$py" -m venv .venv
fi
stamp=.venv/.stk-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] pip install -e .[test,whisper,lhotse,export] (torch 2.14.1 + torchaudio 2.11.0, pinned)" >&2
  .venv/bin/pip install -q --upgrade "setuptools>=77.0.3,<81" wheel 2>&1 | grep -v "is ignored" >&2 || true
  .venv/bin/pip install -q -e ".[test,whisper,lhotse,export]" 2>&1 | grep -v "is ignored" >&2 || true
  .venv/bin/python -c "import torch, torchaudio; from torchaudio.functional import rnnt_loss, forced_align; import stk" \
    || { echo "[setup] the venv is broken: torch/torchaudio ops do not import" >&2; exit 1; }
  touch "$stamp"
fi
if [ "${STK_PEER:-0}" = 1 ]; then bash tools/install_peer.sh; fi
if [ "${STK_JUDGES:-0}" = 1 ]; then bash tools/install_judges.sh; fi  # Whisper/resemblyzer/PESQ/STOI judges
echo "[setup] ready: source .venv/bin/activate" >&2
