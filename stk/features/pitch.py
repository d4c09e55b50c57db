"""F0 and voicing per frame (pyworld's WORLD estimators), with per-speaker log-F0 normalisation.

``stk data pitch DATA_DIR`` writes ``pitch.ark``/``pitch.scp`` (kaldiio), one float32 matrix
``(T, 3)`` per utterance, a frame every ``frame_shift_ms`` (10 ms: the fbank frame rate)::

    column 0  F0 in Hz (0 where unvoiced)
    column 1  voicing (1 voiced, 0 unvoiced)
    column 2  speaker-normalised log-F0: (ln F0 - mean_spk) / std_spk on voiced frames, 0 elsewhere

and ``pitch_stats.json`` with each speaker's log-F0 mean and standard deviation (over its voiced
frames) and the settings. Speakers come from ``utt2spk`` (without it each utterance is its own
speaker). Spirit LM's pitch tokens and a unit vocoder's F0 input read these.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger("stk.pitch")


@dataclasses.dataclass
class PitchConfig:
    """F0 estimator settings."""

    sample_rate: int = 16000
    frame_shift_ms: float = 10.0
    method: Literal["dio", "harvest"] = "dio"
    f0_floor: float = 60.0
    f0_ceil: float = 600.0

    def __post_init__(self) -> None:
        if self.method not in ("dio", "harvest"):
            raise ValueError(f"pitch method must be dio or harvest, got {self.method!r}")
        if not 0 < self.f0_floor < self.f0_ceil < self.sample_rate / 2:
            raise ValueError(f"need 0 < f0_floor < f0_ceil < sample_rate/2, got {self.f0_floor}, {self.f0_ceil}")
        if self.frame_shift_ms <= 0:
            raise ValueError(f"frame_shift_ms must be > 0, got {self.frame_shift_ms}")


def compute_f0(wave: np.ndarray, sample_rate: int, conf: PitchConfig | None = None) -> np.ndarray:
    """``(N,)`` samples -> ``(T, 2)`` float32: F0 in Hz (0 unvoiced) and voicing (0/1), T = N / shift + 1.

    DIO + StoneMask refinement (``dio``, fast) or Harvest (``harvest``, fewer voicing errors, slower).
    """
    from stk.vocoders import import_pyworld

    conf = conf or PitchConfig()
    if sample_rate != conf.sample_rate:
        raise ValueError(f"sample rate {sample_rate} Hz, the pitch settings expect {conf.sample_rate} Hz")
    pw = import_pyworld()
    x = np.ascontiguousarray(wave, dtype=np.float64)
    if x.size == 0:
        raise ValueError("empty audio")
    kw = dict(f0_floor=conf.f0_floor, f0_ceil=conf.f0_ceil, frame_period=conf.frame_shift_ms)
    if conf.method == "harvest":
        f0, _ = pw.harvest(x, sample_rate, **kw)
    else:
        f0, t = pw.dio(x, sample_rate, **kw)
        f0 = pw.stonemask(x, f0, t, sample_rate)
    voiced = (f0 > 0).astype(np.float32)
    return np.stack([f0.astype(np.float32), voiced], axis=1)


@dataclasses.dataclass
class LogF0Stats:
    """Mean and standard deviation of ln F0 over a speaker's voiced frames."""

    mean: float
    std: float
    voiced_frames: int


def speaker_stats(f0s: list[np.ndarray], min_std: float = 1e-3) -> LogF0Stats:
    """Log-F0 statistics over the voiced frames of a speaker's ``(T, 2)`` F0 matrices."""
    lf = np.concatenate([np.log(m[m[:, 1] > 0, 0]) for m in f0s]) if f0s else np.zeros(0)
    if lf.size == 0:
        return LogF0Stats(0.0, 1.0, 0)
    return LogF0Stats(float(lf.mean()), float(max(lf.std(), min_std)), int(lf.size))


def normalise(f0: np.ndarray, stats: LogF0Stats) -> np.ndarray:
    """``(T, 2)`` F0 + voicing -> ``(T, 3)`` with the speaker-normalised log-F0 (0 on unvoiced frames)."""
    v = f0[:, 1] > 0
    z = np.zeros(len(f0), np.float32)
    z[v] = (np.log(f0[v, 0]) - stats.mean) / stats.std
    return np.concatenate([f0, z[:, None]], axis=1).astype(np.float32)


def f0_bins(f0_hz: np.ndarray, *, f0_floor: float = 60.0, f0_ceil: float = 600.0,
            bins_per_octave: int = 24) -> np.ndarray:
    """``(T,)`` F0 in Hz (0 unvoiced) -> ``(T,)`` int64 log-F0 bins: 0 unvoiced, else
    ``1 + round(bins_per_octave · log2(F0 / f0_floor))`` clipped to ``1 … n_f0_bins(...) - 1`` (absolute
    pitch, not speaker-normalised: a unit vocoder's F0 input places the harmonics with it)."""
    if bins_per_octave < 1 or not 0 < f0_floor < f0_ceil:
        raise ValueError(f"need bins_per_octave >= 1 and 0 < f0_floor < f0_ceil, got {bins_per_octave}, "
                         f"{f0_floor}, {f0_ceil}")
    f0 = np.asarray(f0_hz, dtype=np.float64)
    out = np.zeros(f0.shape, np.int64)
    v = f0 > 0
    b = 1 + np.rint(bins_per_octave * np.log2(f0[v] / f0_floor))
    out[v] = np.clip(b, 1, n_f0_bins(f0_floor=f0_floor, f0_ceil=f0_ceil, bins_per_octave=bins_per_octave) - 1)
    return out


def n_f0_bins(*, f0_floor: float = 60.0, f0_ceil: float = 600.0, bins_per_octave: int = 24) -> int:
    """Number of :func:`f0_bins` ids (the unvoiced 0 included): 82 for 60–600 Hz at 24 per octave."""
    return 2 + int(np.ceil(bins_per_octave * np.log2(f0_ceil / f0_floor)))


def dump_pitch(data_dir: str | Path, out_dir: str | Path | None = None, conf: PitchConfig | None = None,
               bins_per_octave: int = 0) -> dict:
    """Compute F0 for every wav of ``data_dir`` (resampled to ``conf.sample_rate``) and write
    ``out_dir/pitch.{ark,scp}`` + ``pitch_stats.json`` (default ``out_dir``: the data dir itself);
    with ``bins_per_octave`` > 0 also ``out_dir/f0bins`` (``utt-id b b …``, :func:`f0_bins` per frame:
    the ``int_seqs`` F0 input of a unit vocoder) and ``f0bins.info`` (JSON: the bin settings).
    Returns the stats dict written to ``pitch_stats.json``."""
    import kaldiio

    from stk.data.audio import AudioError, read_audio
    from stk.data.kaldi import DataDirError, load_data_dir
    from stk.synthesis import resample
    from stk.utils import atomic_write_text

    conf = conf or PitchConfig()
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise DataDirError(f"{data_dir}: no wav.scp")
    if d.segments is not None:
        raise DataDirError(f"{data_dir}: segments are not supported by stk data pitch")
    out = Path(out_dir) if out_dir is not None else Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    f0s: dict[str, np.ndarray] = {}
    for utt, spec in d.wav_scp.items():
        try:
            w, rate = read_audio(spec)
            f0s[utt] = compute_f0(resample(w, rate, conf.sample_rate), conf.sample_rate, conf)
        except (AudioError, ValueError) as e:
            raise DataDirError(f"{data_dir}/wav.scp: utterance {utt!r}: {e}") from None
    spk_of = {u: (d.utt2spk or {}).get(u, u) for u in f0s}
    stats = {s: speaker_stats([f0s[u] for u in f0s if spk_of[u] == s]) for s in sorted(set(spk_of.values()))}
    for s, st in stats.items():
        if st.voiced_frames == 0:
            log.warning("%s: speaker %r has no voiced frame; its normalised log-F0 is 0", data_dir, s)
    tmp_ark, tmp_scp = out / ".pitch.ark.tmp", out / ".pitch.scp.tmp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        for utt in sorted(f0s, key=lambda s: s.encode()):
            writer(utt, normalise(f0s[utt], stats[spk_of[utt]]))
    tmp_ark.replace(out / "pitch.ark")
    atomic_write_text(out / "pitch.scp", tmp_scp.read_text().replace(str(tmp_ark), str((out / "pitch.ark").resolve())))
    tmp_scp.unlink()
    voiced = sum(int(m[:, 1].sum()) for m in f0s.values())
    frames = sum(len(m) for m in f0s.values())
    res = {"config": dataclasses.asdict(conf), "columns": ["f0_hz", "voiced", "lf0_norm"], "utts": len(f0s),
           "frames": frames, "voiced_fraction": voiced / max(frames, 1),
           "speakers": {s: dataclasses.asdict(st) for s, st in stats.items()}}
    atomic_write_text(out / "pitch_stats.json", json.dumps(res, indent=1))
    if bins_per_octave > 0:
        kw = dict(f0_floor=conf.f0_floor, f0_ceil=conf.f0_ceil, bins_per_octave=bins_per_octave)
        atomic_write_text(out / "f0bins", "".join(
            f"{u} {' '.join(map(str, f0_bins(f0s[u][:, 0], **kw)))}\n" for u in sorted(f0s, key=lambda s: s.encode())))
        atomic_write_text(out / "f0bins.info", json.dumps(
            {**kw, "n_bins": n_f0_bins(**kw), "frame_shift_ms": conf.frame_shift_ms}, indent=1))
    return res
