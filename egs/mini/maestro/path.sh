# Environment for this recipe: stk's virtualenv and thread settings.
STK_ROOT=${STK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
if [ -f "$STK_ROOT/.venv/bin/activate" ]; then . "$STK_ROOT/.venv/bin/activate"; fi
command -v stk >/dev/null || { echo "stk not found: run 'bash tools/setup.sh' in $STK_ROOT" >&2; exit 1; }
# Default OpenMP spin-waits; with the other core busy a step became 13x slower.
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
export STK_NUM_THREADS=${STK_NUM_THREADS:-$OMP_NUM_THREADS}
