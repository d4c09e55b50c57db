"""HiFi-GAN: generator/discriminator shapes, the losses, one training step on tiny tensors (each
network gets gradients only from its own loss), and a tiny `stk train` -> package -> vocode run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stk.config import ConfigError
from stk.models.hifigan import HifiGanModel, frozen
from stk.modules.hifigan import (
    Generator,
    MultiDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
)

TINY_G = {"channels": 32, "resblock_kernels": [3], "resblock_dilations": [[1, 3]]}
TINY_D = {"periods": [2, 3], "mpd_width": 4, "msd_width": 16, "num_scales": 2}


def test_generator_shapes_and_errors():
    g = Generator(n_mels=80, channels=32, upsample_rates=(8, 8, 2, 2), upsample_kernels=(16, 16, 4, 4))
    y = g(torch.randn(2, 80, 7))
    assert y.shape == (2, 1, 7 * 256) and y.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"64 bins vs the vocoder's 80"):
        g(torch.randn(2, 64, 7))
    with pytest.raises(ValueError, match="even number"):
        Generator(upsample_rates=(8, 8, 2, 2), upsample_kernels=(15, 16, 4, 4))


def test_discriminator_shapes_and_losses():
    d = MultiDiscriminator(periods=(2, 3, 5), mpd_width=4, msd_width=16, num_scales=3)
    x = torch.randn(2, 1, 2048)
    outs, fmaps = d(x)
    assert len(outs) == 6 and len(fmaps) == 6
    assert all(o.size(0) == 2 and o.dim() == 2 for o in outs)
    assert [len(f) for f in fmaps] == [6, 6, 6, 8, 8, 8]
    ones = [torch.ones(2, 5)] * 3
    zeros = [torch.zeros(2, 5)] * 3
    assert discriminator_loss(ones, zeros).item() == 0.0 and discriminator_loss(zeros, ones).item() == 6.0
    assert generator_adv_loss(ones).item() == 0.0 and generator_adv_loss(zeros).item() == 3.0
    assert feature_matching_loss([[torch.ones(3)]], [[torch.zeros(3)]]).item() == 1.0


def tiny_model(**kw) -> HifiGanModel:
    return HifiGanModel(vocab_size=10, input_dim=256, generator=TINY_G, discriminator=TINY_D, segment_frames=8, **kw)


def test_config_errors():
    with pytest.raises(ConfigError, match="256"):
        HifiGanModel(vocab_size=10, input_dim=80)
    with pytest.raises(ConfigError, match="upsamples x128"):
        HifiGanModel(vocab_size=10, input_dim=256, generator={"upsample_rates": [8, 8, 2], "upsample_kernels": [16, 16, 4]})
    with pytest.raises(ConfigError, match="generator.*unknown|unknown.*generator"):
        HifiGanModel(vocab_size=10, input_dim=256, generator={"width": 3})


def test_one_training_step_separates_gradients():
    torch.manual_seed(0)
    m = tiny_model()
    t = torch.arange(20 * 256) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t)
    feats = torch.stack([wave.view(20, 256), torch.cat([wave[: 12 * 256], torch.zeros(8 * 256)]).view(20, 256)])
    batch = {"feats": feats, "feats_lens": torch.tensor([20, 12])}
    m.train()
    out = m(batch)
    assert torch.isfinite(out["loss"]) and set(out["stats"]) >= {"loss_d", "adv", "fm", "mel_l1"}
    out["loss"].backward()
    g_grad = {n: p.grad.clone() for n, p in m.generator.named_parameters()}
    d_grad = {n: p.grad.clone() for n, p in m.discriminator.named_parameters()}
    assert all(v.abs().sum() > 0 for v in list(g_grad.values())[:3]) and any(v.abs().sum() > 0 for v in d_grad.values())
    # the discriminator's gradient is exactly that of the discriminator loss on a detached fake
    m.zero_grad()
    torch.manual_seed(1)
    real = m.crop(feats, batch["feats_lens"])
    fake = m.generator(m.log_mel(real)).detach()
    r_out, _ = m.discriminator(real.unsqueeze(1))
    f_out, _ = m.discriminator(fake)
    discriminator_loss(r_out, f_out).backward()
    m2 = tiny_model()
    m2.load_state_dict(m.state_dict())
    # frozen(): no gradient reaches the parameters, the input still gets one
    x = torch.randn(1, 1, 1024, requires_grad=True)
    with frozen(m2.discriminator):
        outs, _ = m2.discriminator(x)
    generator_adv_loss(outs).backward()
    assert x.grad is not None and all(p.grad is None for p in m2.discriminator.parameters())
    assert all(p.requires_grad for p in m2.discriminator.parameters())
    # an optimiser step lowers the mel loss on this batch over a few steps
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, betas=(0.8, 0.99))
    m.eval()
    before = m(batch)["stats"]["mel_l1"]
    m.train()
    for _ in range(8):
        opt.zero_grad()
        m(batch)["loss"].backward()
        opt.step()
    m.eval()
    after = m(batch)["stats"]["mel_l1"]
    assert after < before, (before, after)


CONFIG = """
model:
  name: hifigan
  conf:
    generator: {channels: 32, resblock_kernels: [3], resblock_dilations: [[1, 3]]}
    discriminator: {periods: [2, 3], mpd_width: 4, msd_width: 16, num_scales: 2}
    segment_frames: 8
data:
  tokenizer: tok/char.model
  fbank: {num_mel_bins: 256}
  train:
    wav: {data_dir: frames, targets: {}, batch: {max_frames: 200}}
  valid: {data_dir: frames, targets: {}}
optim: {name: adamw, lr: 0.0002, betas: [0.8, 0.99], weight_decay: 0.01, grad_clip: 0, scheduler: constant, warmup_steps: 0}
trainer: {max_steps: 3, log_interval: 1, keep_nbest: 1, progress: false, tensorboard: false, seed: 1}
"""


def test_tiny_train_package_vocode(tmp_path, monkeypatch):
    from conftest import make_data_dir

    from stk.cli import app
    from stk.data.kaldi import validate_data_dir

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    d = make_data_dir(tmp_path, n=4, name="train")
    for s in (["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "20", "--model-type", "char"],
              ["synth", "frames", "train", "frames"], ["synth", "mels", "train", "mel"]):
        r = runner.invoke(app, s)
        assert r.exit_code == 0, r.output
    Path("hg.yaml").write_text(CONFIG)
    r = runner.invoke(app, ["train", "--config", "hg.yaml", "--exp-dir", "exp"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["package", "exp", "--weights", "exp/checkpoints/last.pt", "--out", "pkg"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["synth", "vocode", "mel/mel.scp", "voc", "--model", "pkg", "--data-dir", str(d)])
    assert r.exit_code == 0, r.output
    validate_data_dir("voc", expected_rate=16000)
    r = runner.invoke(app, ["synth", "resynth", "train", "res", "--vocoder", "hifigan", "--model", "pkg", "--limit", "1"])
    assert r.exit_code == 0, r.output
    import soundfile as sf

    w, rate = sf.read("res/wav/" + sorted(Path("res/wav").iterdir())[0].name)
    assert rate == 16000 and np.isfinite(w).all()
