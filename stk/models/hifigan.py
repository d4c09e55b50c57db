"""HiFi-GAN mel vocoder (Kong et al., 2020) as a registered model that ``stk train`` trains.

Data: a data dir whose ``feats.scp`` holds the **waveform cut into frames of ``hop_length``
samples** (``stk synth frames DATA_DIR OUT``: a ``(T, 256)`` float matrix per utterance at 16 kHz),
so the toolkit's datasets, length buckets and batch budgets work unchanged; the config sets
``data.fbank.num_mel_bins`` to the frame width (the toolkit passes it as ``input_dim``) and no CMVN::

    model: {name: hifigan, conf: {generator: {channels: 128}, segment_frames: 32}}
    data: {tokenizer: ..., fbank: {num_mel_bins: 256}, train: {wav: {data_dir: dump/frames_train, targets: {}}}}
    optim: {name: adamw, lr: 0.0002, betas: [0.8, 0.99], weight_decay: 0.01, grad_clip: 0}

Each step crops ``segment_frames`` frames per utterance, computes the log-mel
(:class:`stk.features.mel.MelConfig`), generates the waveform and scores it with the multi-period +
multi-scale discriminators: LSGAN losses, feature matching (x2) and mel L1 (x45), as in the paper.

**One optimiser, simultaneous update.** The paper alternates: a discriminator step, then a
generator step against the updated discriminator. Here one backward pass of
``loss_D(real, G(s).detach()) + loss_G`` updates both, the generator's adversarial and
feature-matching terms going through the discriminator with its parameters frozen
(``requires_grad`` off for that pass), so each loss reaches only its own network; Adam(W) is
per-parameter, so one optimiser with the paper's settings equals two. What differs is that the
generator is scored by the discriminator of the same step (simultaneous gradient descent, as many
GAN trainers do), not the freshly updated one. The global gradient-norm clip would mix the two
networks: set ``optim.grad_clip: 0`` (the paper does not clip).

Validation reports the mel L1 (``loss`` = ``mel_l1`` there); ``vocode(mel)`` is inference.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stk.features.mel import MelConfig
from stk.models import MODELS, StkModel
from stk.modules.hifigan import (
    Generator,
    MultiDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without accumulating gradients into its parameters (inputs still get them)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class LogMel(nn.Module):
    """Batched :func:`stk.features.mel.log_mel` without the trailing frame: (B, N) -> (B, n_mels, N // hop)."""

    def __init__(self, conf: MelConfig) -> None:
        super().__init__()
        import torchaudio

        self.conf = conf
        self.spec = torchaudio.transforms.Spectrogram(n_fft=conf.n_fft, win_length=conf.win_length,
                                                      hop_length=conf.hop_length, power=1.0, window_fn=torch.hann_window)
        self.mel = conf.mel_scale()
        for m in (self.spec, self.mel):  # recomputed from the config: keep them out of the state dict
            for name, buf in list(m.named_buffers(recurse=False)):
                m.register_buffer(name, buf, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n = wave.size(-1) // self.conf.hop_length
        return self.mel(self.spec(wave)).clamp(min=self.conf.log_floor).log()[..., :n]


@MODELS.register("hifigan")
class HifiGanModel(StkModel):
    """HiFi-GAN generator + MPD/MSD discriminators trained on waveform-frame data dirs.

    Args:
        vocab_size: set by the toolkit (unused).
        input_dim: set by the toolkit from ``data.fbank.num_mel_bins``: samples per data frame; must
            equal ``mel.hop_length``.
        generator: :class:`stk.modules.hifigan.Generator` keyword arguments (``n_mels`` comes from ``mel``).
        discriminator: :class:`stk.modules.hifigan.MultiDiscriminator` keyword arguments.
        mel: :class:`stk.features.mel.MelConfig` fields (default: stk's vocoder log-mel).
        segment_frames: mel frames per training crop (32 x 256 = 8192 samples, as the paper).
        mel_weight, fm_weight, adv_weight: loss weights (45, 2, 1 as the paper).
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None, mel: dict[str, Any] | None = None, segment_frames: int = 32,
        mel_weight: float = 45.0, fm_weight: float = 2.0, adv_weight: float = 1.0,
    ) -> None:
        super().__init__()
        from stk.config import ConfigError, check_call_kwargs, from_dict

        self.mel_config = from_dict(MelConfig, mel or {}, "model.conf.mel")
        if input_dim != self.mel_config.hop_length:
            raise ConfigError(
                f"hifigan: data frames hold {input_dim} samples (data.fbank.num_mel_bins) but the mel hop is "
                f"{self.mel_config.hop_length}; train on `stk synth frames` data dirs with num_mel_bins = hop_length")
        if segment_frames < 4:
            raise ConfigError(f"model.conf.segment_frames must be >= 4, got {segment_frames}")
        gkw = check_call_kwargs(Generator, generator or {}, "model.conf.generator")
        if "n_mels" in gkw:
            raise ConfigError("model.conf.generator.n_mels is set from model.conf.mel.n_mels, remove it")
        self.generator = Generator(n_mels=self.mel_config.n_mels, **gkw)
        if self.generator.hop != self.mel_config.hop_length:
            raise ConfigError(f"hifigan: the generator upsamples x{self.generator.hop}, the mel hop is "
                              f"{self.mel_config.hop_length}: make prod(upsample_rates) equal it")
        self.discriminator = MultiDiscriminator(**check_call_kwargs(MultiDiscriminator, discriminator or {},
                                                                    "model.conf.discriminator"))
        self.log_mel = LogMel(self.mel_config)
        self.segment_frames = segment_frames
        self.mel_weight, self.fm_weight, self.adv_weight = mel_weight, fm_weight, adv_weight

    def min_input_length(self) -> int:
        return 1

    def crop(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, T, hop) waveform frames -> (B, segment_frames * hop) crops (random in training, from the
        start in eval); utterances shorter than a segment are zero-padded."""
        b, _, hop = feats.shape
        seg = self.segment_frames
        out = feats.new_zeros(b, seg, hop)
        for i in range(b):
            n = int(lens[i])
            start = int(torch.randint(0, n - seg + 1, ()).item()) if self.training and n > seg else 0
            k = min(seg, n)
            out[i, :k] = feats[i, start:start + k]
        return out.reshape(b, seg * hop)

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, T, n_mels) -> waveform (B, T * hop)."""
        return self.generator(mel.transpose(1, 2)).squeeze(1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats, lens = batch["feats"], batch["feats_lens"]
        if feats.size(-1) != self.mel_config.hop_length:
            raise ValueError(f"hifigan: batch frames are {feats.size(-1)} wide, expected {self.mel_config.hop_length} "
                             "samples (use `stk synth frames` data dirs)")
        real = self.crop(feats, lens)  # (B, N)
        mel = self.log_mel(real)  # (B, n_mels, T)
        fake = self.generator(mel)  # (B, 1, N)
        mel_l1 = F.l1_loss(self.log_mel(fake.squeeze(1)), mel)
        weight = float(feats.size(0))
        if not self.training:
            return {"loss": mel_l1, "stats": {"loss": mel_l1.item(), "mel_l1": mel_l1.item()}, "weight": weight}
        real = real.unsqueeze(1)
        real_out, real_fmap = self.discriminator(real)
        fake_out_d, _ = self.discriminator(fake.detach())
        loss_d = discriminator_loss(real_out, fake_out_d)
        with frozen(self.discriminator):
            fake_out, fake_fmap = self.discriminator(fake)
        adv = generator_adv_loss(fake_out)
        fm = feature_matching_loss(real_fmap, fake_fmap)
        loss_g = self.adv_weight * adv + self.fm_weight * fm + self.mel_weight * mel_l1
        loss = loss_d + loss_g
        stats = {"loss": loss.item(), "loss_d": loss_d.item(), "loss_g": loss_g.item(), "adv": adv.item(),
                 "fm": fm.item(), "mel_l1": mel_l1.item()}
        return {"loss": loss, "stats": stats, "weight": weight}
