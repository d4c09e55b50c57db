"""utils/lib/decode.sh: --nj parallel decoding (split with `stk data split`, ${decode_cmd} JOB=1:N, merge).

`stk decode` is replaced by a fake on PATH that writes each utterance's reference text upper-cased
(and records its arguments); `stk data split` is the real command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_STK = """\
#!/usr/bin/env bash
# fake stk: `decode DATA --out HYP ARGS...` writes DATA's text upper-cased; anything else -> real stk
if [ "$1" = decode ]; then
  data=$2; shift 2
  out=; args=()
  while [ $# -gt 0 ]; do
    if [ "$1" = --out ]; then out=$2; shift 2; else args+=("$1"); shift; fi
  done
  [ -n "${FAIL_ON:-}" ] && grep -q "${FAIL_ON}" "$data/wav.scp" && { echo "fake failure" >&2; exit 3; }
  echo "${args[*]} threads=${OMP_NUM_THREADS}" >> "$(dirname "$out")/args.txt"
  awk '{u=$1; $1=""; print u toupper($0)}' "$data/text" > "$out"
  exit 0
fi
exec "%s" "$@"
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stk = bindir / "stk"
    stk.write_text(FAKE_STK % (Path(sys.executable).parent / "stk"))
    stk.chmod(0o755)
    data = tmp_path / "data" / "test"
    data.mkdir(parents=True)
    utts = [f"spk{i % 3}-u{i:02d}" for i in range(10)]
    (data / "wav.scp").write_text("".join(f"{u} /nonexistent/{u}.wav\n" for u in sorted(utts)))
    (data / "text").write_text("".join(f"{u} words of {u}\n" for u in sorted(utts)))
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(utts)))
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    return tmp_path


def run(recipe: Path, nj: int, env: dict | None = None) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        set -euo pipefail
        . utils/lib/decode.sh
        decode_cmd=utils/run.sh
        stk_decode_nj {nj} data/test exp/decode_test --model M --method ctc_beam --device cpu
    """)
    full = {**os.environ, "PATH": f"{recipe / 'bin'}:{os.environ['PATH']}", "OMP_NUM_THREADS": "4", **(env or {})}
    return subprocess.run(["bash", "-c", script], cwd=recipe, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("nj", [1, 3])
def test_split_decode_merge(recipe: Path, nj: int):
    res = run(recipe, nj)
    assert res.returncode == 0, res.stderr
    hyp = (recipe / "exp/decode_test/hyp").read_text().splitlines()
    ref = (recipe / "data/test/text").read_text().splitlines()
    assert hyp == [f"{line.split()[0]} {' '.join(line.split()[1:]).upper()}" for line in ref]
    args = (recipe / "exp/decode_test/args.txt").read_text().splitlines()
    assert len(args) == nj
    assert all(a.startswith("--model M --method ctc_beam --device cpu") for a in args)
    assert all(a.endswith(f"threads={4 // nj}") for a in args)
    logs = sorted(p.name for p in (recipe / "exp/decode_test/log").iterdir())
    assert logs == (["decode.log"] if nj == 1 else [f"decode.{j}.log" for j in range(1, nj + 1)])
    assert not list((recipe / "exp/decode_test").glob("hyp.*"))


def test_a_failed_job_fails_the_stage(recipe: Path):
    res = run(recipe, 3, env={"FAIL_ON": "spk0-u09"})
    assert res.returncode != 0
    assert not (recipe / "exp/decode_test/hyp").exists()
