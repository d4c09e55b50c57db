#!/usr/bin/env bash
# Install ESPnet 202511 as the optional peer for bench/ into stk's existing .venv,
# without replacing torch 2.14.1 / torchaudio 2.11.0.
#
#   bash tools/install_peer.sh          # install (a second run checks and installs nothing)
#   PEER_FORCE=1 bash tools/install_peer.sh   # reinstall even if the peer already imports
#
# Why not `pip install espnet`: espnet 202511 requires `setuptools<74` while torch >= 2.13 needs
# `setuptools>=77.0.3`, and its ranged `torch>=1.11` lets pip swap the pinned torch for another
# build. So this script (1) reads espnet's own requirements from the wheel's metadata, (2) swaps
# the setuptools requirement for `setuptools>=77.0.3,<81`, relaxes espnet's exact
# `sentencepiece==0.2.0` pin to the version stk already has, (3) installs them under a
# constraints file that pins torch, torchaudio, numpy and sentencepiece to what the venv holds,
# and (4) installs espnet itself with `--no-deps`. It then checks that the peer imports and that
# torch/torchaudio are unchanged and their C++ ops still load.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=.venv/bin/python
pip=(.venv/bin/pip --disable-pip-version-check)
espnet_version=202511
torch_version=2.14.1
torchaudio_version=2.11.0

log() { echo "[install_peer] $*" >&2; }
[ -x "$py" ] || { log "no .venv here; run tools/setup.sh first"; exit 1; }

check_peer() {
  "$py" - <<'EOF'
import importlib.metadata as md
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder  # noqa: F401
from espnet.nets.beam_search import BeamSearch  # noqa: F401
assert md.version("espnet") == "202511", md.version("espnet")
EOF
}

check_torch() {
  "$py" - "$torch_version" "$torchaudio_version" <<'EOF'
import sys
import torch, torchaudio
from torchaudio.functional import forced_align, rnnt_loss  # noqa: F401 (C++ ops load)
tv, tav = torch.__version__.split("+")[0], torchaudio.__version__.split("+")[0]
if (tv, tav) != (sys.argv[1], sys.argv[2]):
    sys.exit(f"torch {torch.__version__} / torchaudio {torchaudio.__version__}, expected {sys.argv[1]} / {sys.argv[2]}")
x = torch.randn(1, 5, 4).log_softmax(-1)
forced_align(x, torch.tensor([[1, 2]], dtype=torch.int32), blank=0)
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}: ops load")
EOF
}

check_torch >&2 || { log "torch/torchaudio are not the expected pair before installing; fix the base venv first"; exit 1; }
if [ "${PEER_FORCE:-0}" != 1 ] && check_peer 2>/dev/null; then
  log "espnet $espnet_version already installed and importable; nothing to do"
  exit 0
fi

start=$(date +%s)
size_before=$(du -sm .venv | cut -f1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "downloading espnet==$espnet_version (wheel only) to read its requirements"
"${pip[@]}" download -q --no-deps "espnet==$espnet_version" -d "$work" 2>&1 | grep -v "is ignored" >&2 || true
wheel=$(ls "$work"/espnet-"$espnet_version"-*.whl)

# Requirements (no extras) from the wheel's METADATA, with the two conflicting pins replaced,
# and a constraints file that keeps stk's core packages at the versions the venv holds.
"$py" - "$wheel" "$work/requirements.txt" "$work/constraints.txt" "$torch_version" "$torchaudio_version" <<'EOF'
import email.parser
import importlib.metadata as md
import sys
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

wheel, req_out, con_out, torch_v, ta_v = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
overrides = {
    "setuptools": "setuptools>=77.0.3,<81",  # torch >= 2.13 needs >= 77.0.3; espnet says < 74
    "torch": f"torch=={torch_v}",
    "sentencepiece": "sentencepiece>=0.2",  # espnet pins ==0.2.0; keep stk's newer 0.2.x
}
reqs = []
for line in meta.get_all("Requires-Dist") or []:
    r = Requirement(line)
    if r.marker is not None and "extra" in str(r.marker):
        continue
    reqs.append(overrides.get(canonicalize_name(r.name), str(r)))
pins = [f"torch=={torch_v}", f"torchaudio=={ta_v}"]
for name in ("numpy", "sentencepiece"):
    try:
        pins.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
open(req_out, "w").write("\n".join(reqs) + "\n")
open(con_out, "w").write("\n".join(pins) + "\n")
EOF
log "constraints: $(tr '\n' ' ' < "$work/constraints.txt")"
log "installing espnet's requirements ($(wc -l < "$work/requirements.txt") packages, some build from source)"
"${pip[@]}" install -q -r "$work/requirements.txt" -c "$work/constraints.txt" 2>&1 | grep -v "is ignored" >&2 || true
log "installing espnet==$espnet_version --no-deps"
"${pip[@]}" install -q --no-deps "$wheel" 2>&1 | grep -v "is ignored" >&2 || true

check_peer || { log "espnet does not import after installing"; exit 1; }
check_torch >&2 || { log "torch/torchaudio changed or broke; reinstall them with tools/setup.sh"; exit 1; }
if ! "${pip[@]}" check >"$work/pip-check.txt" 2>&1; then
  log "pip check (espnet's own setuptools/sentencepiece pins are expected here):"
  sed 's/^/[install_peer]   /' "$work/pip-check.txt" >&2
fi
size_after=$(du -sm .venv | cut -f1)
log "done in $(( $(date +%s) - start )) s; .venv grew by $(( size_after - size_before )) MB (now ${size_after} MB)"
