"""Faults and bad inputs: nothing lost, nothing silently wrong, one-line errors instead of tracebacks.

Each test here failed on the code before issue 13 was fixed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def test_atomic_write_honours_the_umask(tmp_path):
    from stk.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
        os.umask(0o002)
        from stk.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "c.pt", {"x": 1})
        assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o664
    finally:
        os.umask(old)
