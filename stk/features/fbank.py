"""Kaldi-compatible log-mel filterbanks (torchaudio), global CMVN and SpecAugment.

Features are computed on the fly by datasets, or dumped once to Kaldi ``feats.ark``/``feats.scp``
by ``stk data fbank`` (``kaldiio``); both paths give identical matrices.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from stk.utils import atomic_write_text


@dataclasses.dataclass
class FbankConfig:
    """Kaldi fbank settings (``compute-fbank-feats``)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi produces for ``num_samples`` (snip_edges=True)."""
        win = int(self.sample_rate * self.frame_length_ms / 1000)
        hop = int(self.sample_rate * self.frame_shift_ms / 1000)
        return 0 if num_samples < win else 1 + (num_samples - win) // hop


def compute_fbank(wave: np.ndarray | torch.Tensor, sample_rate: int, conf: FbankConfig) -> torch.Tensor:
    """Samples ``(T,)`` in [-1, 1] -> log-mel features ``(frames, num_mel_bins)`` float32.

    Raises ValueError on a sample-rate mismatch or audio shorter than one window.
    """
    import torchaudio

    if sample_rate != conf.sample_rate:
        raise ValueError(f"sample rate {sample_rate} Hz, expected {conf.sample_rate} Hz (resample the data first)")
    w = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1) * 32768.0  # Kaldi works on int16 scale
    if conf.num_frames(w.size(1)) == 0:
        raise ValueError(f"audio has {w.size(1)} samples, shorter than one {conf.frame_length_ms} ms window")
    return torchaudio.compliance.kaldi.fbank(
        w,
        sample_frequency=conf.sample_rate,
        num_mel_bins=conf.num_mel_bins,
        frame_length=conf.frame_length_ms,
        frame_shift=conf.frame_shift_ms,
        dither=conf.dither,
        energy_floor=0.0,
    )


class GlobalCMVN:
    """Global mean/variance normalisation with statistics accumulated over a training set."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        if mean.shape != std.shape:
            raise ValueError(f"mean {mean.shape} and std {std.shape} differ in shape")
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., F)."""
        return (feats - self.mean) / self.std

    @classmethod
    def from_stats(cls, total: np.ndarray, total_sq: np.ndarray, count: int, floor: float = 1e-5) -> "GlobalCMVN":
        if count <= 0:
            raise ValueError("no frames to compute CMVN statistics from")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, floor)
        return cls(mean, np.sqrt(var))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist()}))

    @classmethod
    def load(cls, path: str | Path) -> "GlobalCMVN":
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


@dataclasses.dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al., 2019) without time warping: iid frequency and time masks."""

    num_freq_masks: int = 2
    freq_mask_width: int = 27
    num_time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.05


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, conf: SpecAugmentConfig) -> torch.Tensor:
    """Mask a padded batch ``(B, T, F)`` in place of a copy; time masks stay inside each length."""
    b, t, f = feats.shape
    x = feats.clone()
    ar_f = torch.arange(f, device=x.device)
    ar_t = torch.arange(t, device=x.device)
    for _ in range(conf.num_freq_masks):
        w = torch.randint(0, conf.freq_mask_width + 1, (b,), device=x.device).clamp(max=f)
        s = (torch.rand(b, device=x.device) * (f - w + 1)).long()
        m = (ar_f[None] >= s[:, None]) & (ar_f[None] < (s + w)[:, None])  # (B, F)
        x = x.masked_fill(m[:, None, :], 0.0)
    for _ in range(conf.num_time_masks):
        max_w = torch.minimum(
            torch.full_like(lengths, conf.time_mask_width), (lengths.float() * conf.time_mask_max_ratio).long()
        )
        w = (torch.rand(b, device=x.device) * (max_w + 1)).long()
        s = (torch.rand(b, device=x.device) * (lengths - w + 1).clamp(min=1)).long()
        m = (ar_t[None] >= s[:, None]) & (ar_t[None] < (s + w)[:, None])  # (B, T)
        x = x.masked_fill(m[:, :, None], 0.0)
    return x
