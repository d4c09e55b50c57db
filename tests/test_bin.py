"""bin/stk runs the checkout's CLI without an activated venv; recipes' path.sh put it on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    return env


def test_bin_stk_runs_without_venv_on_path():
    env = _bare_env()
    env["STK_PYTHON"] = sys.executable
    out = subprocess.run([str(ROOT / "bin" / "stk"), "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "decode" in out.stdout and "train" in out.stdout


def test_bin_stk_names_the_setup_command_without_python(tmp_path):
    env = _bare_env()
    env["STK_PYTHON"] = str(tmp_path / "no-python")
    out = subprocess.run([str(ROOT / "bin" / "stk"), "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "tools/setup.sh" in out.stderr


def test_recipe_path_sh_puts_bin_on_path():
    env = _bare_env()
    env["STK_PYTHON"] = sys.executable
    for path_sh in sorted(ROOT.glob("egs/*/*/path.sh")):
        out = subprocess.run(["bash", "-c", f". {path_sh} && command -v stk && echo $OMP_WAIT_POLICY"],
                             env=env, capture_output=True, text=True, cwd=path_sh.parent)
        assert out.returncode == 0, (path_sh, out.stderr)
        assert out.stdout.splitlines() == [str(ROOT / "bin" / "stk"), "PASSIVE"], path_sh
