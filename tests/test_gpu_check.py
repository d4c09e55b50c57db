"""bench/gpu_check.py's CPU side: every part runs at toy sizes (--device cpu --dry-run) and writes
its results, report and loss curve; on a machine without CUDA the real run refuses clearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_on_cpu_writes_every_part(tmp_path):
    gc = load()
    rc = gc.main(["--device", "cpu", "--dry-run", "--updates", "6", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0, {k: v.get("error") for k, v in rec["parts"].items()}
    assert set(rec["parts"]) == {"peak", "conformer", "sdpa", "amp", "nccl", "train"} and rec["dry_run"]
    assert rec["parts"]["peak"]["peak_tflops"] > 0
    row = rec["parts"]["conformer"]["rows"][0]
    assert row["tflop_per_step"] > 0 and 0 < row["mfu"]
    assert rec["parts"]["sdpa"]["MATH"]["ok"]
    assert rec["parts"]["nccl"]["backend"] == "gloo" and rec["parts"]["nccl"]["ok"]
    assert rec["parts"]["train"]["runs"]["cpu"]["updates"] == 6
    curve = (tmp_path / "loss_cpu.tsv").read_text().splitlines()
    assert curve[0] == "step\tloss" and len(curve) == 7
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert "Dry run" in (tmp_path / "results.md").read_text()


def test_synthetic_corpus_batches_like_a_kaldi_dataset():
    gc = load()
    ds = gc.SyntheticASR(5, vocab=12, seed=0)
    b = ds.collate([ds[i] for i in range(5)])
    assert b["feats"].shape == (5, max(ds.lengths), 80) and b["feats_lens"].tolist() == ds.lengths
    real = torch.arange(b["text"].size(1))[None] < b["text_lens"][:, None]
    assert bool((b["text"][real] >= 4).all()) and bool((b["text"][~real] == -1).all())  # no special ids, -1 padding


def test_without_cuda_the_real_run_refuses(tmp_path, capsys):
    if torch.cuda.is_available():
        return
    assert load().main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
