"""39-dimensional MFCC + Δ + ΔΔ (torchaudio's Kaldi MFCC): HuBERT's iteration-0 k-means features.

As the HuBERT recipe: 13 cepstra from ``torchaudio.compliance.kaldi.mfcc`` (25 ms windows every
10 ms, 23 mel bins, no energy term), with first and second order deltas
(``torchaudio.functional.compute_deltas``, window 5). Unlike the HuBERT recipe the cepstra are
mean-normalised per utterance (``cmn=True``): the mini corpus mixes recording conditions, and
without it the level term c0 alone put almost every real-speech frame in one cluster. Frame counts equal the fbank's
(:class:`~stk.features.fbank.FbankConfig`, ``snip_edges``), so MFCC frames line up with model input.
"""

from __future__ import annotations

import numpy as np
import torch

MFCC_DIM = 39
MFCC_RATE = 100  # frames per second


def compute_mfcc(wave: np.ndarray | torch.Tensor, sample_rate: int, *, deltas: bool = True, cmn: bool = True,
                 expected_rate: int = 16000) -> torch.Tensor:
    """Samples ``(N,)`` in [-1, 1] -> ``(T, 39)`` float32 (``(T, 13)`` with ``deltas=False``).

    Raises ValueError on a sample-rate mismatch or audio shorter than one 25 ms window.
    """
    import torchaudio

    if sample_rate != expected_rate:
        raise ValueError(f"sample rate {sample_rate} Hz, expected {expected_rate} Hz (resample the data first)")
    w = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1) * 32768.0
    if w.size(1) < int(0.025 * sample_rate):
        raise ValueError(f"audio has {w.size(1)} samples, shorter than one 25 ms window")
    m = torchaudio.compliance.kaldi.mfcc(w, sample_frequency=sample_rate, use_energy=False, dither=0.0,
                                         energy_floor=0.0)  # (T, 13)
    if cmn:
        m = m - m.mean(0, keepdim=True)
    if not deltas:
        return m
    d1 = torchaudio.functional.compute_deltas(m.t().unsqueeze(0)).squeeze(0).t()
    d2 = torchaudio.functional.compute_deltas(d1.t().unsqueeze(0)).squeeze(0).t()
    return torch.cat([m, d1, d2], dim=1)
