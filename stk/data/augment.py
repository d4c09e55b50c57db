"""Data-dir augmentation the Kaldi/ESPnet way: speed perturbation and additive noise or babble.

:func:`perturb_speed` is Kaldi's ``utils/data/perturb_data_dir_speed_3way.sh``: every factor ``f``
other than 1.0 gives a copy of the data dir whose utterance, speaker and recording ids are
prefixed ``sp<f>-`` (``sp0.9-de-m1-w45f3fa1052``: the speaker stays a prefix of the utterance),
whose audio is played ``f`` times faster (tempo and pitch together, like sox's ``speed``: the
signal is resampled from ``f × rate`` to ``rate`` with torchaudio), and whose durations and
segment times are divided by ``f``. Factor 1.0 keeps the original ids and audio (as Kaldi and
ESPnet do), so a 0.9/1.0/1.1 dir holds the original data plus two perturbed copies.

:func:`add_noise` is Kaldi's ``steps/data/augment_data_dir.py``: a copy of every utterance with
noise added at an SNR drawn uniformly from a range: ``white``/``pink``/``brown`` noise
(generated), ``babble`` (the sum of utterances of other speakers of the same data dir), or the
recordings of a noise data dir (e.g. sound effects, looped to length). Ids are prefixed with the
noise name (``babble-…``); speakers too.

Both write new 16 kHz (the input's rate) 16-bit wav files under ``OUT/wav`` and a data dir that
references them; labels keyed by utterance (``text``, ``text.<lang>``, ``utt2lang``…) are copied
under the new ids, features (``feats.scp``, ``utt2num_frames``, ``cmvn.scp``) are dropped (they
no longer match). Deterministic: the draws for an utterance depend only on the seed and its id.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stk.data.audio import load_segment, read_audio
from stk.data.kaldi import DataDirError, load_data_dir, read_kv, write_data_dir

log = logging.getLogger("stk.data")

#: files never copied to an augmented dir: derived here, or stale once the audio changes
_HANDLED = {"wav.scp", "segments", "utt2spk", "spk2utt", "utt2dur", "reco2dur", "spk2gender",
            "feats.scp", "feats.ark", "utt2num_frames", "cmvn.scp", "reco2file_and_channel", "frame_shift"}
NOISE_KINDS = ("white", "pink", "brown", "babble")


def speed_prefix(factor: float) -> str:
    """Kaldi's id prefix of a speed factor: ``sp0.9-``; ``""`` for 1.0 (the original ids)."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def _check_factors(factors: Sequence[float], rate: int | None = None) -> list[float]:
    out = [float(f) for f in factors]
    if not out:
        raise ValueError("perturb_speed: no speed factor given")
    for f in out:
        if not (0.5 <= f <= 2.0) or not math.isfinite(f):
            raise ValueError(f"perturb_speed: speed factor {f} outside [0.5, 2.0]")
        if rate is not None and abs(f * rate - round(f * rate)) > 1e-6:
            raise ValueError(f"perturb_speed: factor {f} x {rate} Hz is not a whole sample rate")
    if len(set(out)) != len(out):
        raise ValueError(f"perturb_speed: repeated speed factor in {out}")
    return out


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM wav, atomically (temp file, then rename)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    sf.write(str(tmp), np.clip(samples, -1.0, 32767 / 32768), rate, subtype="PCM_16")
    os.replace(tmp, path)


def _utt_keyed(d: Path, utts: set[str]) -> dict[str, dict[str, str]]:
    """The other ``id value`` files of data dir ``d`` whose ids are utterance ids (labels to copy)."""
    out = {}
    for f in sorted(d.iterdir()):
        if not f.is_file() or f.name in _HANDLED or f.name.startswith("."):
            continue
        try:
            kv = read_kv(f)
        except (DataDirError, UnicodeDecodeError, ValueError):
            log.warning("%s: not an 'id value' file; not copied", f)
            continue
        if kv and set(kv) <= utts:
            out[f.name] = kv
        else:
            log.warning("%s: its ids are not utterance ids; not copied", f)
    return out


def _load(data_dir: Path):
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise DataDirError(f"{data_dir}: no wav.scp (augmentation needs audio)")
    if d.utt2spk is None:
        raise DataDirError(f"{data_dir}: no utt2spk")
    utts = d.utt_ids
    missing = [u for u in utts if u not in d.utt2spk]
    if missing:
        raise DataDirError(f"{data_dir}/utt2spk: utterance {missing[0]!r} has no speaker")
    return d, utts


def _speed(samples: np.ndarray, rate: int, factor: float) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    if factor == 1.0:
        return samples
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return AF.resample(x, orig_freq=int(round(factor * rate)), new_freq=rate).numpy()


def perturb_speed(
    data_dir: str | Path, out_dir: str | Path, factors: Sequence[float] = (0.9, 1.0, 1.1), *, allow_pipes: bool = False,
) -> Path:
    """Write ``out_dir``: ``data_dir`` once per speed factor (ids ``sp<f>-…``; 1.0 unprefixed).

    Audio is perturbed per recording (so ``segments`` keep pointing into their recording, times
    divided by ``f``) and written to ``out_dir/wav/<recording id>.wav``. Raises ``ValueError`` on a
    bad factor and :class:`DataDirError` naming the file on a bad data dir.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"perturb_speed: --out {out_dir} is the input data dir")
    factors = _check_factors(factors)
    d, utts = _load(data_dir)
    assert d.wav_scp is not None and d.utt2spk is not None
    labels = _utt_keyed(data_dir, set(utts))
    utt2dur = read_kv(data_dir / "utt2dur") if (data_dir / "utt2dur").exists() else {}
    spk2gender = read_kv(data_dir / "spk2gender") if (data_dir / "spk2gender").exists() else None
    wav_dir = out_dir / "wav"
    new_scp: dict[str, str] = {}
    new_seg: dict[str, str] = {}
    new_spk: dict[str, str] = {}
    new_dur: dict[str, str] = {}
    new_labels: dict[str, dict[str, str]] = {n: {} for n in labels}
    new_gender: dict[str, str] = {}
    rate0 = None
    for f in factors:
        p = speed_prefix(f)
        for rec, spec in d.wav_scp.items():
            if f == 1.0:
                new_scp[rec] = spec
                continue
            samples, rate = read_audio(spec, allow_pipes=allow_pipes)
            if rate0 is None:
                _check_factors(factors, rate)
                rate0 = rate
            dst = wav_dir / f"{p}{rec}.wav"
            out = _speed(samples, rate, f)
            _write_wav(dst, out, rate)
            new_scp[p + rec] = str(dst.resolve())
            if d.segments is None:
                new_dur[p + rec] = f"{len(out) / rate:.3f}"
        for u in utts:
            new_spk[p + u] = p + d.utt2spk[u]
            for n, kv in labels.items():
                if u in kv:
                    new_labels[n][p + u] = kv[u]
            if d.segments is not None:
                rec, start, end = d.segments[u]
                s, e = math.floor(start / f * 1000) / 1000, math.floor(end / f * 1000) / 1000
                new_seg[p + u] = f"{p}{rec} {s:.3f} {e:.3f}"
                new_dur[p + u] = f"{e - s:.3f}"
            elif f == 1.0 and u in utt2dur:
                new_dur[u] = utt2dur[u]
        if spk2gender is not None:
            new_gender.update({p + s: g for s, g in spk2gender.items()})
    if d.segments is None and len(new_dur) != len(new_scp):  # 1.0 copy without utt2dur: measure it
        new_dur = {}
    extra: dict[str, Mapping[str, str]] = dict(new_labels)
    if new_seg:
        extra["segments"] = new_seg
    if new_dur:
        extra["utt2dur"] = new_dur
    if spk2gender is not None:
        extra["spk2gender"] = new_gender
    write_data_dir(out_dir, wav_scp=new_scp, utt2spk=new_spk, extra=extra)
    log.info("perturb_speed: %s -> %s: %d utterances x factors %s", data_dir, out_dir, len(utts), factors)
    return out_dir


def _unit_rng(seed: int, utt: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha1(utt.encode("utf-8")).hexdigest()[:15], 16)])


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-RMS ``white``, ``pink`` (1/f power) or ``brown`` (1/f²) noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        freqs = np.arange(len(spec), dtype=np.float64)
        freqs[0] = 1.0
        spec /= freqs ** (0.5 if kind == "pink" else 1.0)
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    else:
        raise ValueError(f"unknown noise {kind!r}; choose from white, pink, brown")
    return (x / max(float(np.sqrt(np.mean(x**2))), 1e-12)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` looped (or cut at a random offset) to ``n`` samples."""
    if len(x) >= n:
        off = int(rng.integers(0, len(x) - n + 1))
        return x[off : off + n]
    return np.tile(x, -(-n // len(x)))[:n]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g·noise`` with ``g`` giving ``snr_db`` (RMS ratio); scaled down if it would clip."""
    if len(noise) != len(speech):
        raise ValueError(f"mix_at_snr: noise has {len(noise)} samples, speech {len(speech)}")
    ps, pn = _rms(speech), _rms(noise)
    if pn == 0.0 or ps == 0.0:
        return speech.copy()
    out = speech + noise * (ps / (pn * 10 ** (snr_db / 20)))
    peak = float(np.max(np.abs(out)))
    return (out * (0.99 / peak) if peak > 0.99 else out).astype(np.float32)


def add_noise(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    noise: str = "babble",
    snr: tuple[float, float] = (5.0, 20.0),
    seed: int = 0,
    prefix: str | None = None,
    babble_speakers: int = 3,
    allow_pipes: bool = False,
) -> Path:
    """Write ``out_dir``: every utterance of ``data_dir`` with noise at an SNR from ``snr`` (dB).

    ``noise``: ``white``, ``pink``, ``brown``, ``babble`` (``babble_speakers`` utterances of other
    speakers of ``data_dir``, each at equal level) or a path to a data dir of noise recordings.
    Ids get ``prefix`` (default: ``<noise name>-``). The output has one wav per utterance
    (``segments`` are cut out) and ``utt2dur``.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"add_noise: --out {out_dir} is the input data dir")
    lo, hi = float(snr[0]), float(snr[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"add_noise: bad SNR range {snr} (want low <= high, in dB)")
    if babble_speakers < 1:
        raise ValueError(f"add_noise: babble_speakers must be >= 1, got {babble_speakers}")
    d, utts = _load(data_dir)
    assert d.wav_scp is not None and d.utt2spk is not None
    noise_scp: dict[str, str] | None = None
    if noise in NOISE_KINDS:
        name = noise
    else:
        nd = Path(noise)
        if not (nd / "wav.scp").exists():
            raise ValueError(f"add_noise: noise {noise!r} is neither one of {list(NOISE_KINDS)} nor a data dir with a wav.scp")
        noise_scp = read_kv(nd / "wav.scp")
        if not noise_scp:
            raise DataDirError(f"{nd}/wav.scp: no noise recording")
        name = "noise"
    p = f"{name}-" if prefix is None else prefix
    spk_utts: dict[str, list[str]] = {}
    for u in utts:
        spk_utts.setdefault(d.utt2spk[u], []).append(u)
    if noise == "babble" and len(spk_utts) < 2:
        raise DataDirError(f"{data_dir}: babble needs utterances of at least 2 speakers, found {len(spk_utts)}")
    labels = _utt_keyed(data_dir, set(utts))
    spk2gender = read_kv(data_dir / "spk2gender") if (data_dir / "spk2gender").exists() else None
    wav_dir = out_dir / "wav"
    new_scp, new_spk, new_dur = {}, {}, {}
    snrs = []
    noise_cache: dict[str, np.ndarray] = {}
    for u in utts:
        rng = _unit_rng(seed, u)
        x, rate = load_segment(d.wav_scp, u, d.segments, allow_pipes=allow_pipes)
        n = len(x)
        if noise in ("white", "pink", "brown"):
            nz = colored_noise(noise, n, rng)
        elif noise == "babble":
            others = [s for s in sorted(spk_utts) if s != d.utt2spk[u]]
            picks = rng.choice(len(others), size=min(babble_speakers, len(others)), replace=False)
            nz = np.zeros(n, dtype=np.float32)
            for i in sorted(int(k) for k in picks):
                cand = spk_utts[others[i]]
                v = cand[int(rng.integers(0, len(cand)))]
                y, _ = load_segment(d.wav_scp, v, d.segments, allow_pipes=allow_pipes)
                y = _fit(y, n, rng)
                nz += y / max(_rms(y), 1e-12)
        else:
            assert noise_scp is not None
            key = sorted(noise_scp)[int(rng.integers(0, len(noise_scp)))]
            if key not in noise_cache:
                y, r = read_audio(noise_scp[key], allow_pipes=allow_pipes)
                if r != rate:
                    raise DataDirError(f"{noise}/wav.scp: {key} is at {r} Hz, the speech at {rate} Hz")
                noise_cache[key] = y
            nz = _fit(noise_cache[key], n, rng)
        s = float(rng.uniform(lo, hi))
        snrs.append(s)
        dst = wav_dir / f"{p}{u}.wav"
        _write_wav(dst, mix_at_snr(x, nz, s), rate)
        new_scp[p + u] = str(dst.resolve())
        new_spk[p + u] = p + d.utt2spk[u]
        new_dur[p + u] = f"{n / rate:.3f}"
    extra: dict[str, Mapping[str, str]] = {n: {p + u: v for u, v in kv.items()} for n, kv in labels.items()}
    extra["utt2dur"] = new_dur
    if spk2gender is not None:
        extra["spk2gender"] = {p + s: g for s, g in spk2gender.items()}
    write_data_dir(out_dir, wav_scp=new_scp, utt2spk=new_spk, extra=extra)
    log.info("add_noise: %s -> %s: %d utterances, %s noise, SNR %.1f-%.1f dB (mean %.1f)",
             data_dir, out_dir, len(utts), name, lo, hi, float(np.mean(snrs)) if snrs else float("nan"))
    return out_dir
