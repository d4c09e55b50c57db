"""egs/voxpopuli/maestro through every stage on the VoxPopuli fixture in the corpus's real layout
(tests/fixtures/voxpopuli: transcribed_data/<lang>/asr_<split>.tsv; the 16 kHz Ogg Vorbis
segments are written here, in a tmp dir), with the tiny configs (--size tiny); then a re-run
skips every stage."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "voxpopuli"
pytestmark = pytest.mark.recipe
ARGS = ("--size", "tiny", "--langs", "de,fr", "--vocab-size", "40", "--beam-size", "2")


@pytest.fixture(scope="module")
def voxpopuli_root(tmp_path_factory) -> Path:
    """A copy of the fixture with a 16 kHz Ogg Vorbis segment (tones + noise, 2-3 s: long enough
    for a CTC alignment of the BPE transcript) for every TSV row."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("voxpopuli")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True)
    for tsv in sorted(root.glob("transcribed_data/*/asr_*.tsv")):
        with open(tsv, encoding="utf-8", newline="") as f:
            ids = [r["id"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
        for i, seg in enumerate(ids):
            rng = np.random.default_rng(i)
            t = np.arange(int((2.0 + 0.4 * i) * 16000)) / 16000
            x = 0.3 * np.sin(2 * np.pi * (170 + 45 * i) * t) + 0.02 * rng.standard_normal(len(t))
            path = tsv.parent / seg[:4] / f"{seg}.ogg"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, x.astype(np.float32), 16000, format="OGG", subtype="VORBIS")
    return root


def run_recipe(work: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    if not work.exists():
        shutil.copytree(ROOT / "egs" / "voxpopuli" / "maestro", work, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp", "RESULTS.md"))
        (work / "utils").unlink()
        (work / "utils").symlink_to(ROOT / "utils")
    env = {k: v for k, v in os.environ.items() if k != "VOXPOPULI"}
    env.update(STK_ROOT=str(ROOT), STK_MODEL_STORE=str(work.parent / "store"), OMP_NUM_THREADS="2")
    proc = subprocess.run(["bash", "run.sh", "--corpus-dir", str(root), *ARGS, *args], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_maestro_recipe(voxpopuli_root, tmp_path):
    """Prepare -> fbank -> BPE -> CTC alignment + durations -> MAESTRO pre-training -> RNN-T ASR
    (scratch and from MAESTRO) -> package + beam decoding -> jiwer WER -> model store; re-run."""
    import jiwer

    tr = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    norm = lambda s: tr(s)  # noqa: E731 -- stk score's default (jiwer) normaliser
    work = tmp_path / "maestro"
    run_recipe(work, voxpopuli_root)
    exp = work / "exp"
    durs = (work / "dump" / "train" / "durations").read_text().splitlines()
    assert len(durs) == len((work / "dump" / "train" / "text").read_text().splitlines()) == 5
    log = (exp / "pretrain_maestro" / "train.log").read_text()
    for loss in ("contrastive=", "rnnt=", "mm=", "duration=", "amlm="):
        assert loss in log, loss
    assert "init: loaded" in (exp / "maestro_asr" / "log" / "train.log").read_text()
    refs = dict(line.split(" ", 1) for line in (work / "data" / "test" / "text").read_text().splitlines())
    assert len(refs) == 2
    for row in ("scratch", "maestro"):
        d = exp / f"{row}_asr" / "decode_test"
        hyps = dict(line.partition(" ")[::2] for line in (d / "hyp").read_text().splitlines())
        assert sorted(hyps) == sorted(refs)
        score = json.loads((d / "score.json").read_text())
        ids = sorted(refs)
        wer = jiwer.wer([norm(refs[u]) for u in ids], [norm(hyps[u]) for u in ids])
        assert score["wer"] == pytest.approx(100 * wer, abs=0.01) and set(score["by_lang"]) == {"de", "fr"}
    results = (exp / "RESULTS.md").read_text()
    assert "## Environment" in results and "| maestro |" in results and "| scratch |" in results
    assert "WER de" in results and not (work / "RESULTS.md").exists()
    assert (work.parent / "store" / "voxpopuli-maestro" / "model.safetensors").is_file()
    # a re-run with the same options redoes nothing
    kept = [exp / "RESULTS.md", exp / "maestro_asr" / "decode_test" / "hyp", work / "dump" / "train" / "durations",
            exp / "pretrain_maestro" / "model.avg1.safetensors"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    t0 = time.time()
    proc = run_recipe(work, voxpopuli_root)
    assert time.time() - t0 < 30
    for s in (0, 1, 2, 3, 6, 7, 8):
        assert re.search(rf"Stage {s}: done already", proc.stderr), (s, proc.stderr[-3000:])
    assert proc.stderr.count("done already") >= 12 and " train exp/" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in kept} == before


def init_shapes(path: Path, vocab: int = 100) -> tuple[dict[str, tuple[int, ...]], int]:
    """The encoder.* and rnnt.* tensor shapes and the parameter count of a config's model (`meta`)."""
    import torch

    from stk.config import load_config
    from stk.experiment import ExperimentConfig, build_model

    cfg = load_config(ExperimentConfig, path)  # typed: an unknown key fails here
    with torch.device("meta"):
        model = build_model(cfg.model, vocab_size=vocab, input_dim=cfg.data.fbank.num_mel_bins)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(("encoder.", "rnnt."))}
    return shapes, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("pre,fine", [
    ("conf/pretrain.yaml", "conf/finetune_asr.yaml"),
    ("conf/pretrain_tiny.yaml", "conf/finetune_asr_tiny.yaml"),
    ("../../../conf/pretrain/maestro_0.6b.yaml", "conf/finetune_asr_0.6b.yaml"),
])
def test_init_source_matches_the_asr_model(pre, fine):
    """Stage 5's `init` copies every encoder and RNN-T tensor of the ASR model from MAESTRO: the
    pre-training config's model has each with the same shape (and the same 4x subsampling as the
    alignment model, whose durations are in its frames)."""
    from stk.config import load_yaml

    here = ROOT / "egs" / "voxpopuli" / "maestro"
    src, _ = init_shapes(here / pre)
    dst, n = init_shapes(here / fine)
    assert any(k.startswith("rnnt.") for k in dst) and {k: src.get(k) for k in dst} == dst
    factor = lambda p: load_yaml(p)["model"]["conf"]["encoder"].get("subsampling_factor", 4)  # noqa: E731
    for align in ("conf/align.yaml", "conf/align_tiny.yaml"):
        assert load_yaml(here / align)["model"]["conf"]["encoder"]["conf"]["subsampling_factor"] == 4
    assert factor(here / pre) == 4
    if "tiny" not in pre:
        assert n > 20e6
