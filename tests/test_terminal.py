"""The terminal: one console for logs and bars, no bars off a terminal, one help line per command,
validation numbered by the epoch it follows, loss.png with the learning rate and task metrics."""

from __future__ import annotations

import inspect
import os
import struct
import subprocess
import sys
from pathlib import Path

import typer

from conftest import make_data_dir
from stk.cli import app


def test_help_lists_each_command_in_one_line():
    root = typer.main.get_command(app)
    bad = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0].strip()
        if "\n" in first or not first:
            bad.append(" ".join(path))

    walk(root, ["stk"])
    assert not bad, f"first docstring paragraph is not one line (the --help list line): {bad}"
    out = subprocess.run([sys.executable, "-m", "stk.cli", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "300"}, check=True).stdout
    rows = [l for l in out.splitlines() if l.startswith("│ ")]
    names = [r.split()[1] for r in rows if len(r.split()) > 1]
    assert "decode" in names and "align" in names
    assert len(rows) == len(names)  # no continuation lines in the command list


def test_no_progress_bar_frames_in_a_log_file(tmp_path):
    d = make_data_dir(tmp_path, n=3)
    log = tmp_path / "fbank.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "stk.cli", "data", "fbank", str(d), str(tmp_path / "dump")],
                       stderr=f, stdout=subprocess.DEVNULL, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "\r" not in text and "━" not in text and "\x1b[" not in text, text
    assert " INFO stk.data: " in text and "3 utterances" in text  # a plain log line, not rich's wrapped layout


def test_bars_and_log_lines_share_one_console(monkeypatch):
    import stk.console as c

    monkeypatch.setattr(c, "is_tty", lambda: False)
    p = c.progress()
    assert p.disable and p.console is c.console()
    monkeypatch.setattr(c, "is_tty", lambda: True)
    p = c.progress()
    assert not p.disable and p.console is c.console()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_validation_epoch_numbering_and_loss_png_panels(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_trainer import run_toy

    from stk.checkpoint import load_checkpoint

    exp = tmp_path / "exp"
    run_toy(exp, max_epochs=2, valid_interval_steps=0)
    log = (exp / "train.log").read_text()
    assert "valid epoch 1 step" in log and "valid epoch 2 step" in log and "valid epoch 3" not in log
    hist = load_checkpoint(exp / "checkpoints" / "last.pt")["trainer"]["history"]
    assert hist["lr"] and hist["valid/mse"] and any(k.startswith("train/") and k.endswith("/mse") for k in hist)
    w, h = _png_size(exp / "loss.png")
    assert h > 1.4 * w  # three stacked panels (two would be about square): loss, learning rate, task metrics
