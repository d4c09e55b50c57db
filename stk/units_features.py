"""Frame features for discrete units: MFCC + Δ + ΔΔ (100/s) or a layer of a packaged HuBERT model
(50/s), mean-pooled to the units' rate (50 or 25/s), read from a data dir with stk's bad-input
policy (:func:`iter_features`). :mod:`stk.units` clusters them (k-means) and dumps unit files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch

from stk.data.kaldi import DataDirError, load_data_dir

log = logging.getLogger("stk.units")

RATES = (50, 25)
BadInput = Literal["skip", "fail"]


class UnitsModelError(ValueError):
    """A units model that cannot be used (missing files, wrong feature model or dimension)."""


def parse_features(spec: str) -> tuple[str, str | None, int | None]:
    """``mfcc`` or ``hubert:PKG:LAYER`` -> (kind, package, layer)."""
    if spec == "mfcc":
        return "mfcc", None, None
    if spec.startswith("hubert:"):
        pkg, _, layer = spec[len("hubert:"):].rpartition(":")
        if pkg and layer.isdigit():
            return "hubert", pkg, int(layer)
    raise ValueError(f"--features must be mfcc or hubert:PACKAGE:LAYER (e.g. hubert:exp/hubert/package:4), got {spec!r}")


# -- feature extractors ---------------------------------------------------------------------------


class MfccExtractor:
    """39-d MFCC + Δ + ΔΔ at 100 frames/s (:mod:`stk.features.mfcc`)."""

    kind, native_rate, sample_rate = "mfcc", 100, 16000

    def __init__(self) -> None:
        from stk.features.mfcc import MFCC_DIM

        self.dim = MFCC_DIM

    def num_frames(self, num_samples: int) -> int:
        """Input (10 ms) frames of ``num_samples``."""
        from stk.features.fbank import FbankConfig

        return FbankConfig().num_frames(num_samples)

    def native_frames(self, num_samples: int) -> int:
        """Feature frames (100/s) of ``num_samples``."""
        return self.num_frames(num_samples)

    def __call__(self, waves: list[np.ndarray], rate: int) -> list[torch.Tensor]:
        from stk.features.mfcc import compute_mfcc

        return [compute_mfcc(w, rate, expected_rate=self.sample_rate) for w in waves]


class HubertExtractor:
    """Layer ``layer`` of a packaged HuBERT model, on its fbank + CMVN (50 frames/s with stride 2)."""

    kind = "hubert"

    def __init__(self, package: str | Path, layer: int, device: str = "cpu") -> None:
        from stk.package import load_package

        self.lm = load_package(str(package), device=device)
        model = self.lm.model
        if not hasattr(model, "extract"):
            raise UnitsModelError(f"{self.lm.path}: model {self.lm.meta.model.name!r} is not a HuBERT model "
                                  "(it has no extract(feats, lens, layer))")
        n = model.encoder.num_layers
        if not 0 <= layer <= n:
            raise UnitsModelError(f"{self.lm.path}: layer {layer} out of range (the model has layers 0..{n})")
        self.layer = layer
        self.fbank = self.lm.meta.fbank
        self.sample_rate = self.fbank.sample_rate
        self.stride = model.encoder.stride
        self.native_rate = round(1000 / (self.fbank.frame_shift_ms * self.stride))
        self.dim = model.encoder.output_dim
        self.weights = self.lm.path / "model.safetensors"

    def num_frames(self, num_samples: int) -> int:
        """Input (fbank) frames of ``num_samples``."""
        return self.fbank.num_frames(num_samples)

    def native_frames(self, num_samples: int) -> int:
        """Feature frames (fbank frames // stride) of ``num_samples``."""
        return self.fbank.num_frames(num_samples) // self.stride

    def __call__(self, waves: list[np.ndarray], rate: int) -> list[torch.Tensor]:
        from stk.data.dataset import pad_list
        from stk.features.fbank import compute_fbank

        feats = [compute_fbank(w, rate, self.fbank) for w in waves]
        if self.lm.cmvn is not None:
            feats = [self.lm.cmvn(f) for f in feats]
        lens = torch.tensor([f.size(0) for f in feats])
        dev = next(self.lm.model.parameters()).device
        with torch.inference_mode():
            h, hl = self.lm.model.extract(pad_list(feats, 0.0).to(dev), lens.to(dev), self.layer)
        h = h.float().cpu()
        return [h[i, : int(hl[i])] for i in range(len(waves))]


def pool_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over non-overlapping windows of ``factor`` frames: ``(T, D) -> (T // factor, D)``."""
    if factor == 1:
        return x
    n = x.size(0) // factor
    return x[: n * factor].reshape(n, factor, x.size(1)).mean(1)


def _pool_factor(native_rate: int, rate: int) -> int:
    if rate not in RATES:
        raise ValueError(f"rate must be one of {RATES} frames/s, got {rate}")
    if native_rate % rate:
        raise ValueError(f"features at {native_rate} frames/s cannot be pooled to {rate}/s")
    return native_rate // rate


def iter_features(
    extractor: Any, data_dir: str | Path, *, rate: int, utts: list[str] | None = None, batch_frames: int = 20000,
    bad_input: BadInput = "skip", skipped: dict[str, str] | None = None, allow_pipes: bool = False,
    cmn: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(utt, features (T, D) at `rate` frames/s)`` for the utterances of a data dir (longest first).

    Bad input (missing/unreadable audio, too short for one frame at ``rate``) is recorded in
    ``skipped`` (``{utt: reason}``) and logged, or raised as :class:`DataDirError` naming the
    utterance with ``bad_input="fail"``. ``cmn``: subtract each utterance's mean feature vector.
    """
    from stk.data.audio import AudioError, RecordingCache, load_segment
    from stk.inference import _num_samples, group_by_length

    if bad_input not in ("skip", "fail"):
        raise ValueError(f"bad_input must be skip or fail, got {bad_input!r}")
    factor = _pool_factor(extractor.native_rate, rate)
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise DataDirError(f"{data_dir}: no wav.scp")
    skipped = {} if skipped is None else skipped

    def bad(u: str, why: str) -> None:
        if bad_input == "fail":
            raise DataDirError(f"{data_dir}: utterance {u!r}: {why}")
        skipped[u] = why
        log.warning("%s: skipping utterance %s: %s", data_dir, u, why)

    frames: dict[str, int] = {}
    for u in (utts if utts is not None else d.utt_ids):
        try:
            n = _num_samples(d.wav_scp, d.segments, u, allow_pipes, extractor.sample_rate)
        except KeyError:
            bad(u, "not in wav.scp")
            continue
        except (AudioError, OSError) as e:
            bad(u, f"audio cannot be read: {e}")
            continue
        f = extractor.num_frames(n)
        if extractor.native_frames(n) // factor < 1:
            bad(u, f"too short: {n / extractor.sample_rate * 1000:.0f} ms gives no {rate}/s frame")
            continue
        frames[u] = f
    recordings = RecordingCache()  # segments of one pipe/ark recording: one decode of it
    for batch in group_by_length(frames, batch_frames):
        waves, ok = [], []
        for u in batch:
            try:
                w, r = load_segment(d.wav_scp, u, d.segments, allow_pipes=allow_pipes, cache=recordings)
            except (AudioError, OSError) as e:
                bad(u, f"audio cannot be read: {e}")
                continue
            waves.append(w)
            ok.append(u)
        if not ok:
            continue
        try:
            feats = extractor(waves, r)
        except ValueError as e:
            if len(ok) == 1:
                bad(ok[0], str(e))
                continue
            raise DataDirError(f"{data_dir}: utterances {', '.join(ok[:3])}: {e}") from None
        for u, f in zip(ok, feats):
            p = pool_frames(f, factor)
            if p.size(0) < 1:
                bad(u, f"too short: {f.size(0)} feature frame(s) give no {rate}/s frame")
                continue
            yield u, (p - p.mean(0, keepdim=True)) if cmn else p


def make_extractor(features: str, device: str = "cpu") -> Any:
    kind, pkg, layer = parse_features(features)
    return MfccExtractor() if kind == "mfcc" else HubertExtractor(pkg, layer, device=device)
