"""Smoke run of egs/mini/units, every stage, on the tiny corpus with tiny settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from test_recipes import run_recipe, tiny_corpus  # noqa: F401  (tiny_corpus is a fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.recipe


def test_units_recipe(tmp_path, tiny_corpus):  # noqa: F811
    run_recipe(
        "units", tmp_path, tiny_corpus, "--k", "8", "--sweep-layers", "1 2", "--sweep-frames", "2000",
        "--fit-frames", "4000", "--dev-sets", "real_dev", "--dump-sets", "real_test",
        "--train-opts", "trainer.max_steps=4 trainer.valid_interval_steps=2 model.conf.encoder.num_layers=2 "
                        "data.train.speech.batch.max_frames=3000",
        "--align-opts", "trainer.max_steps=4 trainer.valid_interval_steps=2", train_config=None)
    work = tmp_path / "units"
    res = (work / "exp" / "RESULTS.md").read_text()
    assert not (work / "RESULTS.md").exists()  # a tiny run never writes the committed RESULTS.md
    for row in ("MFCC k-means", r"HuBERT it-1 L[12]"):
        for x in ("synth_test", "real_test"):
            assert re.search(rf"\| {row} \| {x} \| [\d.]+ \| [\d.]+ \| [\d.]+ \[[-\d.]+, [-\d.]+\] \| [\d.]+ \| [\d.]+ \|",
                             res), res
    assert "Layer sweep" in res and "| it-1 L2 | real_dev |" in res
    layer = int((work / "exp" / "hubert_it1" / "best_layer").read_text())
    assert layer in (1, 2)
    info = json.loads((work / "exp" / "units_hubert_it1" / "units.json").read_text())
    assert info["features"] == "hubert" and info["layer"] == layer and info["k"] == 8
    # units of the dumped set: deduplicated, with run lengths, one line per utterance
    units = (work / "data" / "real_test" / "units").read_text().splitlines()
    durs = (work / "data" / "real_test" / "units.dur").read_text().splitlines()
    n_utts = len((work / "data" / "real_test" / "wav.scp").read_text().splitlines())
    assert len(units) == len(durs) == n_utts
    for u, d in zip(units, durs):
        ids, ds = u.split()[1:], d.split()[1:]
        assert len(ids) == len(ds) and all(a != b for a, b in zip(ids, ids[1:])) and all(int(x) < 8 for x in ids)
    # published: units of any data dir are one command away, by store name
    store = tmp_path / "store"
    assert (store / "mini-hubert-units" / "units.json").exists() and (store / "mini-hubert" / "model.yaml").exists()
    env = dict(os.environ, STK_MODEL_STORE=str(store), OMP_NUM_THREADS="1")
    out = tmp_path / "units25"
    p = subprocess.run([str(ROOT / ".venv/bin/stk"), "units", "dump", str(work / "data" / "real_test"), "--model",
                        "mini-hubert-units", "--rate", "25", "--out", str(out)], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(out.read_text().splitlines()) == n_utts
