"""Log-mel spectrograms as speech-output models predict them (the vocoders' input).

One setting for every speech-out path: a TTS or unit-to-mel model predicts :func:`log_mel` frames
of a :class:`MelConfig`, and Griffin-Lim or HiFi-GAN turn them back into a waveform. The defaults
follow SpeechT5's TTS targets at 16 kHz (80 bins, 1024-point FFT, hop 256 = 16 ms, 80–7600 Hz)
with HiFi-GAN's natural-log magnitude mel (``ln(max(mel, 1e-5))``, Slaney mel scale).

These are not the ASR features: those are Kaldi fbanks (``stk/features/fbank.py``, 10 ms hop).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class MelConfig:
    """STFT + mel settings of the log-mels a vocoder reads (``(T, n_mels)`` frames)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 80.0
    f_max: float = 7600.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"MelConfig: sample_rate, n_fft, hop_length and n_mels must be > 0, got {self}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelConfig: win_length {self.win_length} > n_fft {self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"MelConfig: need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")

    def num_frames(self, num_samples: int) -> int:
        """Frames :func:`log_mel` gives for ``num_samples`` (centred STFT)."""
        return num_samples // self.hop_length + 1

    def mel_scale(self) -> torch.nn.Module:
        import torchaudio

        return torchaudio.transforms.MelScale(
            n_mels=self.n_mels, sample_rate=self.sample_rate, f_min=self.f_min, f_max=self.f_max,
            n_stft=self.n_fft // 2 + 1, norm="slaney", mel_scale="slaney")


def log_mel(wave: np.ndarray | torch.Tensor, sample_rate: int, conf: MelConfig | None = None) -> torch.Tensor:
    """Samples ``(N,)`` (or a batch ``(B, N)``) in [-1, 1] -> log-mel ``(T, n_mels)`` (``(B, T, n_mels)``).

    Raises ValueError on a sample-rate mismatch.
    """
    import torchaudio

    conf = conf or MelConfig()
    if sample_rate != conf.sample_rate:
        raise ValueError(f"sample rate {sample_rate} Hz, the mel settings expect {conf.sample_rate} Hz")
    w = torch.as_tensor(wave, dtype=torch.float32)
    spec = torchaudio.transforms.Spectrogram(
        n_fft=conf.n_fft, win_length=conf.win_length, hop_length=conf.hop_length, power=1.0,
        window_fn=torch.hann_window)(w)  # (..., F, T) magnitude
    mel = conf.mel_scale()(spec)  # (..., n_mels, T)
    return mel.clamp(min=conf.log_floor).log().transpose(-1, -2).contiguous()
