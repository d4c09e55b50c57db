"""egs/librispeech/asr/run.sh through every stage (prepare, 3-way speed perturbation, fbank + CMVN, unigram tokenizer, Conformer
CTC/attention and transducer training, averaging, packaging, decoding of the four dev/test sets,
WER table) with the tiny configs, on a LibriSpeech fixture in the real layout built at test time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from test_corpus_librispeech import LAYOUT, make_librispeech

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "librispeech" / "asr"
TEST_SETS = ("dev_clean", "dev_other", "test_clean", "test_other")
pytestmark = pytest.mark.recipe


def _copy_recipe(tmp_path: Path) -> Path:
    work = tmp_path / "asr"
    shutil.copytree(RECIPE, work, symlinks=True, ignore=shutil.ignore_patterns("data", "dump", "exp", "RESULTS.md"))
    (work / "utils").unlink()
    (work / "utils").symlink_to(ROOT / "utils")
    return work


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, STK_ROOT=str(ROOT), STK_MODEL_STORE=str(tmp_path / "store"), OMP_NUM_THREADS="2")
    env.pop("LIBRISPEECH", None)
    return env


def _losses(log: str) -> tuple[list[float], list[float]]:
    train = [float(x) for x in re.findall(r" step \d+ lr \S+ loss ([\d.]+)", log)]
    valid = [float(x) for x in re.findall(r"valid epoch \d+ step \d+: .*?loss=([\d.]+)", log)]
    return train, valid


def test_librispeech_recipe_all_stages(tmp_path):
    corpus = make_librispeech(tmp_path / "corpus")
    work = _copy_recipe(tmp_path)
    t0 = time.time()
    proc = subprocess.run(["bash", "run.sh", "--size", "tiny", "--corpus-dir", str(corpus),
                           "--asr-beam-size", "2", "--rnnt-beam-size", "2", "--speed-perturb", "0.9,1.0,1.1"],
                          cwd=work, env=_env(tmp_path), capture_output=True, text=True)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    # stage 0: every part prepared, the three training parts combined
    n_train = sum(n for p, chapters in LAYOUT.items() if p.startswith("train") for *_, n in chapters)
    assert len((work / "data/train/wav.scp").read_text().splitlines()) == n_train
    # --speed-perturb 0.9,1.0,1.1: 0.9/1.0/1.1 copies, trained on
    sp = (work / "data/train_sp/utt2spk").read_text().splitlines()
    assert len(sp) == 3 * n_train and sum(u.startswith("sp0.9-") for u in sp) == n_train
    assert (work / "dump/train_sp/feats.scp").is_file()
    # stages 1-2
    assert (work / "dump/cmvn.json").is_file() and (work / "dump/dev_clean/feats.scp").is_file()
    assert (work / "data/token/unigram5000.model").is_file() and (work / "data/token/unigram500.model").is_file()
    for system, method in (("asr_train_conformer_tiny", "attention"), ("rnnt_train_rnnt_tiny", "rnnt_beam")):
        exp = work / "exp" / system
        # stage 3: the tiny models learned something in 12 updates (measured: train loss -13 % / -23 %)
        train, valid = _losses((exp / "train.log").read_text())
        assert len(train) >= 2 and train[-1] <= 0.95 * train[0], (system, train)
        assert len(valid) == 2 and valid[-1] < valid[0], (system, valid)
        # stage 4
        assert (exp / "model.avg1.safetensors").is_file() and (exp / "package/model.yaml").is_file()
        # stage 5: one hypothesis per utterance of every test set
        for x in TEST_SETS:
            want = sorted(line.split()[0] for line in (work / "data" / x / "wav.scp").read_text().splitlines())
            hyp = (exp / f"decode_{method}_{x}" / "hyp").read_text().splitlines()
            assert sorted(line.split()[0] for line in hyp) == want, (system, x)
            assert (exp / f"decode_{method}_{x}" / "score.json").is_file()
    # stage 6: the WER table in the usual layout, under exp/ only
    results = (work / "exp/RESULTS.md").read_text()
    assert "| | dev-clean | dev-other | test-clean | test-other |" in results, results
    for row in ("asr_train_conformer_tiny attention", "rnnt_train_rnnt_tiny rnnt_beam"):
        assert re.search(rf"\| {row} \|( [\d.]+ \|){{4}}", results), results
    assert "## Environment" in results
    assert not (work / "RESULTS.md").exists()
    print(f"librispeech tiny recipe, every stage: {seconds:.0f} s")


def test_librispeech_recipe_needs_a_corpus(tmp_path):
    work = _copy_recipe(tmp_path)
    proc = subprocess.run(["bash", "run.sh", "--size", "tiny"], cwd=work, env=_env(tmp_path),
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no LibriSpeech corpus: set LIBRISPEECH in db.sh" in proc.stderr + proc.stdout
