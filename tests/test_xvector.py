"""x-vector speaker encoder: shapes, padding, AAM, EER; a tiny `stk train` -> package ->
`stk speaker embed|eval` run on synthetic "speakers" (pitch range + vocal-tract resonances)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stk.cli import app
from stk.config import ConfigError
from stk.metrics_speech import eer, verification_trials
from stk.models.xvector import XVectorModel

runner = CliRunner()
SR = 16000
SPEAKERS = {"a": (110.0, (500.0, 1500.0)), "b": (210.0, (800.0, 2300.0)), "c": (150.0, (350.0, 2900.0))}


def test_shapes_padding_and_errors():
    torch.manual_seed(0)
    m = XVectorModel(vocab_size=10, input_dim=20, num_labels={"spk": 3}, channels=16, pool_channels=24, embed_dim=8)
    m.eval()
    x = torch.randn(3, 50, 20)
    lens = torch.tensor([50, 30, 12])
    e = m.embed(x, lens)
    assert e.shape == (3, 8) and m.logits(x, lens).shape == (3, 3) and m.classify(x, lens).shape == (3,)
    alone = m.embed(x[1:2, :30], lens[1:2])
    assert torch.allclose(alone, e[1:2], atol=1e-5)  # padding beyond the length does not matter
    att = XVectorModel(vocab_size=10, input_dim=20, num_labels={"spk": 3}, channels=16, pool_channels=24,
                       embed_dim=8, pooling="attentive", margin=0.2)
    att.eval()
    assert torch.allclose(att.embed(x[1:2, :30], lens[1:2]), att.embed(x, lens)[1:2], atol=1e-5)
    y = torch.tensor([0, 1, 2])
    with_margin, plain = att.logits(x, lens, y), att.logits(x, lens)
    assert torch.all(with_margin.gather(1, y[:, None]) < plain.gather(1, y[:, None]))  # margin lowers the target
    out = att.train()({"feats": x, "feats_lens": lens, "spk": y})
    out["loss"].backward()
    assert out["loss"].item() > 0 and att.embedding.weight.grad is not None
    with pytest.raises(ConfigError, match="data.label_vocab.spk"):
        XVectorModel(vocab_size=10, input_dim=20, num_labels={"intent": 3})
    with pytest.raises(ValueError, match="labels"):
        m({"feats": x, "feats_lens": lens})


def test_eer_known_values():
    assert eer(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0])) == 0.0
    assert eer(np.array([0.9, 0.2, 0.8, 0.1]), np.array([1, 1, 0, 0])) == 50.0
    assert eer(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 100.0
    s, t = verification_trials({"u1": np.array([1.0, 0]), "u2": np.array([2.0, 0.1]), "u3": np.array([0, 1.0])},
                               {"u1": "a", "u2": "a", "u3": "b"})
    assert t.tolist() == [1, 0, 0] and s[0] > 0.99 and abs(s[1]) < 1e-9
    with pytest.raises(ValueError, match="target and non-target"):
        eer(np.array([0.1, 0.2]), np.array([1, 1]))


def speaker_wav(path: Path, spk: str, seed: int) -> Path:
    import soundfile as sf
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    f0, formants = SPEAKERS[spk]
    n = int((0.5 + 0.3 * rng.random()) * SR)
    f = f0 * (1 + 0.08 * rng.standard_normal()) * (1 + 0.05 * np.sin(2 * np.pi * 3 * np.arange(n) / SR))
    phase = np.cumsum(2 * np.pi * f / SR)
    src = np.sign(np.sin(phase)) + 0.05 * rng.standard_normal(n)
    y = src
    for fc in formants:
        r = math.exp(-math.pi * 120.0 / SR)
        y = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * fc * (1 + 0.03 * rng.standard_normal()) / SR), r * r], y)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.5 * y / np.max(np.abs(y))).astype(np.float32), SR, subtype="PCM_16")
    return path


CONFIG = """
model:
  name: xvector
  conf: {channels: 32, pool_channels: 48, embed_dim: 16, label: spk}
data:
  tokenizer: tok/char.model
  cmvn: dump/cmvn.json
  label_vocab: {spk: [a, b, c]}
  train:
    spk: {data_dir: dump/train, targets: {}, labels: {spk: utt2spk}, batch: {max_frames: 800}}
  valid: {data_dir: dump/train, targets: {}, labels: {spk: utt2spk}}
optim: {lr: 0.005, warmup_steps: 5}
trainer: {max_epochs: 12, log_interval: 10, keep_nbest: 1, progress: false, tensorboard: false, seed: 1}
"""


def test_tiny_training_embed_eval(tmp_path, monkeypatch):
    from stk.data.kaldi import write_data_dir

    monkeypatch.chdir(tmp_path)
    for name, seeds in (("train", range(6)), ("test", range(100, 103))):
        wav, spk, text = {}, {}, {}
        for s in SPEAKERS:
            for i in seeds:
                u = f"{s}-{i:03d}"
                wav[u] = str(speaker_wav(tmp_path / "wav" / f"{u}.wav", s, seed=i * 7 + ord(s)))
                spk[u], text[u] = s, "a b c"
        write_data_dir(tmp_path / name, wav_scp=wav, utt2spk=spk, text=text)
    for s in (["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "10", "--model-type", "char"],
              ["data", "fbank", "train", "dump/train"],
              ["data", "cmvn", "dump/train", "--out", "dump/cmvn.json"]):
        r = runner.invoke(app, s)
        assert r.exit_code == 0, r.output
    Path("xv.yaml").write_text(CONFIG)
    r = runner.invoke(app, ["train", "--config", "xv.yaml", "--exp-dir", "exp"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["package", "exp", "--weights", "exp/checkpoints/last.pt", "--out", "pkg"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["speaker", "embed", "test", "--model", "pkg", "--out-dir", "emb"])
    assert r.exit_code == 0, r.output
    import kaldiio

    x = dict(kaldiio.load_scp("emb/xvector.scp").items())
    assert len(x) == 9 and next(iter(x.values())).shape == (16,)
    assert set(dict(kaldiio.load_scp("emb/spk_xvector.scp").items())) == {"a", "b", "c"}
    r = runner.invoke(app, ["speaker", "eval", "test", "--model", "pkg", "--json", "eval.json"])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(Path("eval.json").read_text())
    # three clearly different synthetic voices: chance is 33 % ID accuracy and ~50 % EER
    assert res["id_acc"] >= 66.0 and res["eer"] < 30.0, res
    r = runner.invoke(app, ["speaker", "embed", "test", "--model", "nope"])
    assert r.exit_code == 1
