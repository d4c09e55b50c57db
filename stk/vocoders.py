"""Vocoders: log-mel (or a waveform, or units) -> waveform, as plain callables on numpy arrays.

- :class:`GriffinLimVocoder` (``griffin-lim``): least-squares inverse mel + Griffin-Lim (torchaudio).
- :class:`WorldVocoder` (``world``): WORLD analysis–synthesis (pyworld) of a waveform.
- :class:`HifiGanVocoder` (``hifigan``): a packaged ``hifigan`` model (``stk/models/hifigan.py``).
- :class:`UnitVocoder`: a packaged ``unit_vocoder`` (units -> log-mel) + one of the mel vocoders.

:mod:`stk.synthesis` runs them over data dirs and writes the generated speech as a Kaldi data dir.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from stk.features.mel import MelConfig

SAMPLE_RATE = 16000  # stk's speech rate (generated speech is written at this rate)


class MelVocoder(Protocol):
    """Log-mel ``(T, n_mels)`` of ``mel_config`` -> samples ``(N,)`` at ``mel_config.sample_rate``."""

    mel_config: MelConfig

    def __call__(self, mel: np.ndarray) -> np.ndarray: ...


def check_mel(mel: np.ndarray, conf: MelConfig, who: str = "vocoder") -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] != conf.n_mels:
        raise ValueError(f"{who}: expects log-mels (T, {conf.n_mels}), got shape {tuple(mel.shape)} "
                         f"({mel.shape[-1] if mel.ndim else 0} bins vs the vocoder's {conf.n_mels})")
    if mel.shape[0] < 2:
        raise ValueError(f"{who}: needs at least 2 mel frames, got {mel.shape[0]}")
    return mel


class GriffinLimVocoder:
    """Log-mel -> waveform without training: least-squares inverse mel + Griffin-Lim.

    Args:
        mel_config: the mel settings the input was made with.
        n_iter: Griffin-Lim iterations (32: the measured default; 100 was no better here).
        momentum: fast Griffin-Lim momentum (0.99).
        num_threads: torch threads while vocoding (None: leave as is).
    """

    def __init__(self, *, mel_config: MelConfig | None = None, n_iter: int = 32, momentum: float = 0.99) -> None:
        import torch
        import torchaudio

        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.mel_config = c = mel_config or MelConfig()
        self.inv_mel = torchaudio.transforms.InverseMelScale(
            n_stft=c.n_fft // 2 + 1, n_mels=c.n_mels, sample_rate=c.sample_rate, f_min=c.f_min, f_max=c.f_max,
            norm="slaney", mel_scale="slaney", driver="gelsd")
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=c.n_fft, win_length=c.win_length, hop_length=c.hop_length, power=1.0, n_iter=n_iter,
            momentum=momentum, window_fn=torch.hann_window, rand_init=False)

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """``(T, n_mels)`` log-mel -> ``(hop * (T - 1),)`` samples."""
        import torch

        mel = check_mel(mel, self.mel_config, "griffin-lim")
        with torch.no_grad():
            m = torch.tensor(mel).exp().T  # (n_mels, T) magnitude mel
            spec = self.inv_mel(m).clamp(min=0.0)  # (F, T)
            wave = self.griffin_lim(spec)
        return wave.numpy()


def import_pyworld():  # noqa: ANN201
    """pyworld, imported quietly (0.3.5 imports the deprecated pkg_resources)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pyworld
    return pyworld


def world_analysis(wave: np.ndarray, sample_rate: int, *, frame_period_ms: float = 5.0,
                   f0_method: Literal["dio", "harvest"] = "dio", f0_floor: float = 60.0,
                   f0_ceil: float = 600.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD analysis (pyworld): ``(N,)`` -> F0 ``(T,)`` Hz (0 unvoiced), spectral envelope ``(T, F)``,
    aperiodicity ``(T, F)``, one frame every ``frame_period_ms``."""
    pyworld = import_pyworld()
    x = np.ascontiguousarray(wave, dtype=np.float64)
    if f0_method == "harvest":
        f0, t = pyworld.harvest(x, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms)
    elif f0_method == "dio":
        f0, t = pyworld.dio(x, sample_rate, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms)
        f0 = pyworld.stonemask(x, f0, t, sample_rate)
    else:
        raise ValueError(f"f0_method must be dio or harvest, got {f0_method!r}")
    sp = pyworld.cheaptrick(x, f0, t, sample_rate)
    ap = pyworld.d4c(x, f0, t, sample_rate)
    return f0, sp, ap


class WorldVocoder:
    """WORLD analysis–synthesis of a waveform (pyworld): the parametric copy-synthesis path.

    Args:
        sample_rate: rate of the input and output.
        frame_period_ms: analysis frame period.
        f0_method: ``dio`` (DIO + StoneMask, fast) or ``harvest`` (slower, fewer voicing errors).
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, frame_period_ms: float = 5.0,
                 f0_method: Literal["dio", "harvest"] = "dio") -> None:
        if frame_period_ms <= 0:
            raise ValueError(f"frame_period_ms must be > 0, got {frame_period_ms}")
        if f0_method not in ("dio", "harvest"):
            raise ValueError(f"f0_method must be dio or harvest, got {f0_method!r}")
        self.sample_rate, self.frame_period_ms, self.f0_method = sample_rate, frame_period_ms, f0_method

    def synthesize(self, f0: np.ndarray, sp: np.ndarray, ap: np.ndarray) -> np.ndarray:
        y = import_pyworld().synthesize(np.ascontiguousarray(f0, np.float64), np.ascontiguousarray(sp, np.float64),
                               np.ascontiguousarray(ap, np.float64), self.sample_rate, self.frame_period_ms)
        return y.astype(np.float32)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``(N,)`` samples -> resynthesised ``(≈N,)`` samples."""
        f0, sp, ap = world_analysis(wave, self.sample_rate, frame_period_ms=self.frame_period_ms,
                                    f0_method=self.f0_method)
        return self.synthesize(f0, sp, ap)


VOCODERS = ("griffin-lim", "world", "hifigan")


class HifiGanVocoder:
    """A packaged ``hifigan`` model (``stk package``) as a :class:`MelVocoder`."""

    def __init__(self, model: str, *, device: str = "cpu") -> None:
        from stk.package import load_package

        self.lm = load_package(model, device=device)
        if not hasattr(self.lm.model, "vocode"):
            raise ValueError(f"{model}: not a vocoder package (the model has no vocode)")
        self.mel_config: MelConfig = self.lm.model.mel_config
        self.device = device

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """``(T, n_mels)`` log-mel -> ``(T * hop,)`` samples."""
        import torch

        mel = check_mel(mel, self.mel_config, "hifigan")
        with torch.inference_mode():
            return self.lm.model.vocode(torch.tensor(mel, device=self.device)[None])[0].cpu().numpy()


class UnitVocoder:
    """A packaged ``unit_vocoder`` model (units -> log-mel, ``stk/models/unit_vocoder.py``) followed by
    a mel vocoder (Griffin-Lim by default, or a packaged HiFi-GAN): frame units -> samples.

    Args:
        model: the unit-to-mel package (dir or model-store name).
        mel_vocoder: a :class:`MelVocoder` of the same mel settings (default: Griffin-Lim with
            ``n_iter``/``momentum``).
    """

    def __init__(self, model: str, *, mel_vocoder: MelVocoder | None = None, n_iter: int = 32,
                 momentum: float = 0.99, device: str = "cpu") -> None:
        from stk.package import load_package

        self.lm = load_package(model, device=device)
        m = self.lm.model
        if not hasattr(m, "generate") or not hasattr(m, "num_units"):
            raise ValueError(f"{model}: not a unit-vocoder package (model {self.lm.meta.model.name!r})")
        self.mel_config: MelConfig = m.mel_config
        self.num_units: int = m.num_units
        self.mel_vocoder = mel_vocoder or GriffinLimVocoder(mel_config=self.mel_config, n_iter=n_iter,
                                                            momentum=momentum)
        if self.mel_vocoder.mel_config != self.mel_config:
            raise ValueError(f"{model} predicts log-mels of {self.mel_config}, the mel vocoder reads "
                             f"{self.mel_vocoder.mel_config}")
        label = getattr(m, "speaker_label", None)
        self.speakers = {s: i for i, s in enumerate(self.lm.meta.label_vocab.get(label, []))} if label else {}
        self.f0_bins: int = int(getattr(m, "f0_bins", 0))  # > 0: the model also reads F0 bins (f0bins)
        self.device = device

    def mel(self, units: list[int] | np.ndarray, speaker: str | None = None,
            f0: list[int] | np.ndarray | None = None) -> np.ndarray:
        """``(U,)`` frame units [+ ``(T,)`` F0 bins, one per mel frame, for a model with F0 input] ->
        ``(T, n_mels)`` log-mel (an unknown or absent speaker uses the model's unknown-speaker embedding)."""
        import torch

        u = torch.as_tensor(np.asarray(units, dtype=np.int64), device=self.device)
        if u.dim() != 1 or u.numel() == 0:
            raise ValueError(f"expected a non-empty (U,) sequence of units, got shape {tuple(u.shape)}")
        spk = torch.tensor([self.speakers.get(speaker, -1) if speaker is not None else -1], device=self.device)
        f = None if f0 is None else torch.as_tensor(np.asarray(f0, dtype=np.int64), device=self.device)[None]
        with torch.inference_mode():
            mel, _ = self.lm.model.generate(u[None], torch.tensor([u.numel()], device=self.device), spk,
                                            **({"f0": f} if self.f0_bins else {}))
        return mel[0].cpu().numpy()

    def __call__(self, units: list[int] | np.ndarray, speaker: str | None = None,
                 f0: list[int] | np.ndarray | None = None) -> np.ndarray:
        """``(U,)`` frame units [+ F0 bins] -> samples at ``mel_config.sample_rate``."""
        return self.mel_vocoder(self.mel(units, speaker, f0))
