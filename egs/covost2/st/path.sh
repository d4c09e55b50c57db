# Environment for this recipe: stk on PATH (bin/stk runs the checkout's venv) and thread settings.
STK_ROOT=${STK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
[ -x "${STK_PYTHON:-$STK_ROOT/.venv/bin/python}" ] || { echo "stk's venv not found: run 'bash tools/setup.sh' in $STK_ROOT" >&2; exit 1; }
export PATH="$STK_ROOT/bin:$STK_ROOT/.venv/bin:$PATH"
# Default OpenMP spin-waits; with the other core busy a step became 13x slower.
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
export STK_NUM_THREADS=${STK_NUM_THREADS:-$OMP_NUM_THREADS}
