"""Unit vocoder (units -> log-mel model): shapes, one training step on tiny tensors, padding
invariance, dimension/units errors, and a tiny `stk train` -> package -> `stk synth units` run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stk.config import ConfigError
from stk.models.unit_vocoder import UnitVocoderModel

TINY = {"num_units": 8, "dim": 16, "unit_layers": 1, "mel_layers": 1, "kernel": 3, "dropout": 0.0}


def tiny(**kw) -> UnitVocoderModel:
    return UnitVocoderModel(vocab_size=5, input_dim=80, **(TINY | kw))


def batch_of(units: list[list[int]], mel_extra: int = 0, n_mels: int = 80) -> dict:
    m = tiny()
    lens = torch.tensor([len(u) for u in units])
    mel_lens = m.mel_lengths(lens) + mel_extra
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(len(units), int(mel_lens.max()), n_mels, generator=g) - 5
    pad = torch.full((len(units), int(lens.max())), -1, dtype=torch.long)
    for i, u in enumerate(units):
        pad[i, : len(u)] = torch.tensor(u)
    return {"feats": feats, "feats_lens": mel_lens, "units": pad, "units_lens": lens,
            "utt_ids": [f"u{i}" for i in range(len(units))]}


def test_shapes_and_lengths():
    m = tiny().eval()
    units = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0], [3, 3, 3, 1, 0, 0, 0, 0]])
    lens = torch.tensor([8, 4])
    mel, mel_lens = m.generate(units, lens)
    assert m.frames_per_unit == 1.25
    assert mel_lens.tolist() == [12, 7] and mel.shape == (2, 12, 80)
    assert torch.all(mel[1, 7:] == 0) and torch.all(mel[1, :7] != 0)
    out = m(batch_of([[1, 2, 3, 4, 5, 6, 7, 0], [3, 3, 3, 1]]))
    assert torch.isfinite(out["loss"]) and out["stats"]["mel_l1"] > 0 and out["weight"] == 19.0


def test_padding_invariance():
    """An utterance gives the same log-mel alone and padded in a batch with a longer one."""
    torch.manual_seed(0)
    m = tiny(attention_layers=1, heads=2, speaker_label="spk", num_labels={"spk": 3}).eval()
    a, b = [1, 2, 3, 4, 5], [7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    alone, alone_lens = m.generate(torch.tensor([a]), torch.tensor([5]), torch.tensor([1]))
    pad = torch.tensor([a + [0] * 7, b])
    both, both_lens = m.generate(pad, torch.tensor([5, 12]), torch.tensor([1, 2]))
    n = int(alone_lens[0])
    assert both_lens[0] == n and both.size(1) > n
    torch.testing.assert_close(both[0, :n], alone[0, :n], rtol=1e-5, atol=1e-5)


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    m = tiny(speaker_label="spk", num_labels={"spk": 2})
    batch = batch_of([[1, 2, 3, 4, 5, 6, 7, 0], [3, 3, 3, 1]]) | {"spk": torch.tensor([0, 1])}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.eval()
    before = m(batch)["loss"].item()
    m.train()
    out = m(batch)
    out["loss"].backward()
    assert m.embed.weight.grad.abs().sum() > 0 and m.speaker.weight.grad.abs().sum() > 0
    opt.step()
    for _ in range(10):
        opt.zero_grad()
        m(batch)["loss"].backward()
        opt.step()
    m.eval()
    assert m(batch)["loss"].item() < before


def test_wrong_dims_and_units_are_errors():
    with pytest.raises(ConfigError, match=r"64 bins.*80-bin"):
        UnitVocoderModel(vocab_size=5, input_dim=64, **TINY)
    with pytest.raises(ConfigError, match="label_vocab"):
        tiny(speaker_label="spk")
    m = tiny()
    with pytest.raises(ValueError, match=r"64 bins, the model predicts 80"):
        m(batch_of([[1, 2, 3]], n_mels=64))
    with pytest.raises(ValueError, match=r"unit id 9 is outside 0\.\.7.*k=8"):
        m.generate(torch.tensor([[1, 9]]), torch.tensor([2]))
    with pytest.raises(ValueError, match=r"'u0' has 16 mel frames but its 3 units"):
        m(batch_of([[1, 2, 3]], mel_extra=10))


CONFIG = """
model:
  name: unit_vocoder
  conf: {num_units: 4, dim: 16, unit_layers: 1, mel_layers: 1, kernel: 3, speaker_label: spk, f0_bins: 82,
         postnet_layers: 1}
data:
  tokenizer: tok/char.model
  fbank: {num_mel_bins: 80}
  label_vocab: {spk: [spk0, spk1]}
  train:
    uv: {data_dir: mel, targets: {}, int_seqs: {units: units, f0: f0bins}, labels: {spk: utt2spk}, batch: {max_frames: 400}}
  valid: {data_dir: mel, targets: {}, int_seqs: {units: units, f0: f0bins}, labels: {spk: utt2spk}}
optim: {name: adam, lr: 0.005, warmup_steps: 2}
trainer: {max_steps: 4, log_interval: 1, keep_nbest: 1, progress: false, tensorboard: false, seed: 1}
"""


def test_tiny_train_package_synth_units(tmp_path, monkeypatch):
    from conftest import make_data_dir

    from stk.cli import app
    from stk.data.kaldi import read_kv, validate_data_dir

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    d = make_data_dir(tmp_path, n=4, name="train")
    for s in (["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "20", "--model-type", "char"],
              ["synth", "mels", "train", "mel"],
              ["units", "fit", "mel", "--features", "mfcc", "--k", "4", "--max-frames", "5000", "--out", "um"],
              ["units", "dump", "mel", "--model", "um"],
              ["data", "pitch", "mel", "--frame-shift-ms", "16", "--bins-per-octave", "24"]):
        r = runner.invoke(app, s)
        assert r.exit_code == 0, r.output
    assert (Path("mel/feats.scp").exists() and Path("mel/utt2num_frames").exists()
            and read_kv("mel/wav.scp") == read_kv(d / "wav.scp"))
    Path("uv.yaml").write_text(CONFIG)
    r = runner.invoke(app, ["train", "--config", "uv.yaml", "--exp-dir", "exp"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["package", "exp", "--weights", "exp/checkpoints/last.pt", "--out", "pkg"])
    assert r.exit_code == 0, r.output
    f0_lines = Path("mel/f0bins").read_text()
    Path("mel/f0bins").unlink()  # the model takes F0 input: its absence is named
    r = runner.invoke(app, ["synth", "units", "mel", "--model", "pkg", "--out", "out"])
    assert r.exit_code == 1 and "f0bins" in r.output and "--bins-per-octave 24" in r.output, r.output
    Path("mel/f0bins").write_text(f0_lines)
    r = runner.invoke(app, ["synth", "units", "mel", "--model", "pkg", "--out", "out", "--json", "rtf.json"])
    assert r.exit_code == 0, r.output
    validate_data_dir("out", expected_rate=16000)
    assert sorted(read_kv("out/text")) == sorted(read_kv(d / "text")) and Path("rtf.json").exists()
    import soundfile as sf

    w, rate = sf.read(read_kv("out/wav.scp")["spk0-utt000"])
    assert rate == 16000 and np.isfinite(w).all() and len(w) > 0.5 * 16000
    # units of another k are an error naming both
    r = runner.invoke(app, ["units", "fit", "mel", "--features", "mfcc", "--k", "6", "--max-frames", "5000", "--out", "um6"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["units", "dump", "mel", "--model", "um6", "--out", "mel/units6"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["synth", "units", "mel", "--model", "pkg", "--out", "out6", "--units-file", "mel/units6"])
    assert r.exit_code == 1 and "k=6" in r.output and "k=4" in r.output, r.output


def test_f0_bins():
    from stk.features.pitch import f0_bins, n_f0_bins

    b = f0_bins(np.array([0.0, 60.0, 120.0, 84.85, 600.0, 5000.0, 30.0]))
    assert b.tolist() == [0, 1, 25, 13, 81, 81, 1]  # 0 unvoiced; 24 bins per octave above 60 Hz; clipped
    assert n_f0_bins() == 82 and b.max() < n_f0_bins()
    with pytest.raises(ValueError, match="bins_per_octave"):
        f0_bins(np.zeros(3), bins_per_octave=0)


def test_f0_input_and_postnet():
    """F0 bins (one per mel frame) change the mel, are required, are checked; the postnet starts as
    the identity, adds a coarse-mel loss, and a few steps lower both."""
    torch.manual_seed(0)
    m = tiny(f0_bins=10, postnet_layers=1).eval()
    units, lens = torch.tensor([[1, 2, 3, 4]]), torch.tensor([4])
    t = int(m.mel_lengths(lens)[0])
    voiced, unvoiced = torch.full((1, t), 5), torch.zeros(1, t, dtype=torch.long)
    a, _ = m.generate(units, lens, f0=voiced)
    b, _ = m.generate(units, lens, f0=unvoiced)
    coarse, final, _ = m.mels(units, lens, f0=voiced)
    assert a.shape == (1, t, 80) and not torch.allclose(a, b) and torch.equal(coarse, final)
    short, _ = m.generate(units, lens, f0=voiced[:, : t - 2])  # edge frames: padded with the last
    torch.testing.assert_close(short, a)
    with pytest.raises(ValueError, match="takes F0 input"):
        m.generate(units, lens)
    with pytest.raises(ValueError, match=r"F0 bin 10 is outside 0\.\.9"):
        m.generate(units, lens, f0=torch.full((1, t), 10))
    batch = batch_of([[1, 2, 3, 4, 5, 6, 7, 0], [3, 3, 3, 1]])
    with pytest.raises(ValueError, match="no 'f0' F0 bins"):
        m(batch)
    f0 = torch.randint(0, 10, (2, int(batch["feats_lens"].max())))
    batch |= {"f0": f0, "f0_lens": batch["feats_lens"].clone()}
    with pytest.raises(ValueError, match="F0 frames"):
        m(batch | {"f0_lens": batch["feats_lens"] + 9})
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = m(batch)["stats"]
    assert before["coarse_l1"] == pytest.approx(before["mel_l1"]) and before["loss"] == pytest.approx(2 * before["mel_l1"])
    m.train()
    for _ in range(10):
        opt.zero_grad()
        m(batch)["loss"].backward()
        opt.step()
    m.eval()
    after = m(batch)["stats"]
    assert after["mel_l1"] < before["mel_l1"] and after["coarse_l1"] < before["coarse_l1"]
    assert m.f0_embed.weight.grad.abs().sum() > 0 and m.postnet_out.weight.abs().sum() > 0
    with pytest.raises(ConfigError, match="f0_bins"):
        tiny(f0_bins=1)
