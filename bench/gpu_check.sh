#!/usr/bin/env bash
# bench/gpu_check.sh -- the prepared GPU check, as one command for a lent GPU machine:
#   OUT=/path/to/out bash bench/gpu_check.sh [--threads 16] [--updates 300]
# Runs bench/gpu_check.py with the checkout's venv under a 590 s limit (results under $OUT/gpu_check,
# written after every part, so a timeout still leaves the parts that finished).
# CPU smoke of the script itself: bash bench/gpu_check.sh --device cpu --dry-run --out /tmp/gc
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec timeout 590 "${STK_PYTHON:-${root}/.venv/bin/python}" "${root}/bench/gpu_check.py" "$@"
